/*!
JSON as karpctl compares it: the canonical form (object keys sorted at every
level, no whitespace) that fingerprints and "same or not" checks use, and the
leaf-level differences between two values that `plan` shows as field changes.
A leaf: it knows nothing of steps, AWS or Kubernetes.
*/

use serde::Serialize;
use serde_json::Value;

/// JSON with object keys sorted recursively and no whitespace.
pub fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: std::collections::BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).expect("JSON serializes")
}

/// The strings of a JSON array (nothing for anything else).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect()
}

/// One field-level difference between what exists and what is wanted.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// Leaf-level differences between two JSON values, named `prefix.path`
/// (`path` alone when the prefix is empty; the prefix alone for the whole value).
pub fn field_changes(prefix: &str, old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out.into_iter()
        .map(|(path, old, new)| {
            let field = match (prefix.is_empty(), path.as_str()) {
                (true, _) => path.clone(),
                (false, "(all)") => prefix.to_string(),
                (false, p) if p.starts_with('[') => format!("{prefix}{p}"),
                (false, p) => format!("{prefix}.{p}"),
            };
            FieldChange { field, old, new }
        })
        .collect()
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<(String, Value, Value)>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(&p, a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), out);
            }
        }
        // Same-length lists (objects, rules) compare item by item, so one changed
        // field in the third pool reads `objects[2].spec.limits.cpu`.
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() && a != b => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push((if path.is_empty() { "(all)".into() } else { path.to_string() }, a.clone(), b.clone())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn triples(c: Vec<FieldChange>) -> Vec<(String, Value, Value)> {
        c.into_iter().map(|f| (f.field, f.old, f.new)).collect()
    }

    #[test]
    fn canonical_sorts_keys_at_every_level() {
        let b: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [{"d": 1, "c": 2}], "x": null}}"#).unwrap();
        assert_eq!(canonical(&b), r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#);
    }

    #[test]
    fn field_changes_name_leaves() {
        let c = field_changes("", &json!({"limits": {"cpu": "10"}, "x": 1}), &json!({"limits": {"cpu": "20"}, "x": 1}));
        assert_eq!(triples(c), vec![("limits.cpu".to_string(), json!("10"), json!("20"))]);
        let c = field_changes("", &json!({"l": [{"a": 1}, {"a": 2}]}), &json!({"l": [{"a": 1}, {"a": 3}]}));
        assert_eq!(triples(c), vec![("l[1].a".to_string(), json!(2), json!(3))]);
        let c = field_changes("", &json!({"l": [1]}), &json!({"l": [1, 2]}));
        assert_eq!(triples(c), vec![("l".to_string(), json!([1]), json!([1, 2]))]);
        assert_eq!(triples(field_changes("", &json!(1), &json!(2))), vec![("(all)".to_string(), json!(1), json!(2))]);
    }

    #[test]
    fn a_prefix_names_the_object() {
        let old = json!({"spec": {"limits": {"cpu": "100", "memory": "1Gi"}, "list": [1, 2]}});
        let new = json!({"spec": {"limits": {"cpu": "200", "memory": "1Gi"}, "list": [1, 3]}});
        let ch = field_changes("NodePool/default", &old, &new);
        let fields: Vec<&str> = ch.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["NodePool/default.spec.limits.cpu", "NodePool/default.spec.list[1]"]);
        assert_eq!((&ch[0].old, &ch[0].new), (&json!("100"), &json!("200")));
        assert!(field_changes("x", &old, &old).is_empty());
        assert_eq!(field_changes("x", &json!([1]), &json!([1, 2]))[0].field, "x");
        assert_eq!(field_changes("x", &json!([1, 2]), &json!([1, 3]))[0].field, "x[1]");
    }
}
