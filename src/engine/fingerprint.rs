/*!
Fingerprints of a step's desired state: sha256 over its kind, its schema version
and the canonical JSON of its inputs (object keys sorted at every level), so the
same desired state always gives the same fingerprint whatever the map order.
*/

use serde_json::Value;
use sha2::{Digest, Sha256};

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

pub fn fingerprint(kind: &str, schema_version: u32, inputs: &Value) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(schema_version.to_be_bytes());
    h.update(canonical(inputs).as_bytes());
    let d = h.finalize();
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Leaf-level differences between two JSON values, as (path, old, new).
pub fn field_changes(old: &Value, new: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
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

    #[test]
    fn key_order_does_not_matter() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": null}});
        let b: Value = serde_json::from_str(r#"{"a": {"x": null, "y": [1, 2]}, "b": 1}"#).unwrap();
        assert_eq!(fingerprint("k", 1, &a), fingerprint("k", 1, &b));
        assert_ne!(fingerprint("k", 1, &a), fingerprint("k", 2, &a));
        assert_ne!(fingerprint("k", 1, &a), fingerprint("j", 1, &a));
        assert_ne!(fingerprint("k", 1, &a), fingerprint("k", 1, &json!({"b": 2, "a": {"y": [1, 2], "x": null}})));
    }

    #[test]
    fn field_changes_name_leaves() {
        let c = field_changes(&json!({"limits": {"cpu": "10"}, "x": 1}), &json!({"limits": {"cpu": "20"}, "x": 1}));
        assert_eq!(c, vec![("limits.cpu".to_string(), json!("10"), json!("20"))]);
        let c = field_changes(&json!({"l": [{"a": 1}, {"a": 2}]}), &json!({"l": [{"a": 1}, {"a": 3}]}));
        assert_eq!(c, vec![("l[1].a".to_string(), json!(2), json!(3))]);
        let c = field_changes(&json!({"l": [1]}), &json!({"l": [1, 2]}));
        assert_eq!(c, vec![("l".to_string(), json!([1]), json!([1, 2]))]);
    }
}
