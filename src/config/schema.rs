/*!
Structural validation of the config file: unknown fields, wrong types, missing
required fields and enum values, all reported at once. The JSON Schema comes
from the config types themselves (schemars), so the file format has one
definition; this module only turns schema violations into readable findings.
*/

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::diag::Diags;
use super::source::FieldPath;
use super::types::Config;

struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let schema = json_schema();
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&schema)
            .expect("the config schema generated from our own types is valid");
        Compiled { schema, validator }
    })
}

/// The JSON Schema of the config file (also offered to editors via `karpctl schema`).
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(Config);
    serde_json::to_value(schema).expect("schema serializes")
}

/// Validates `doc` structurally, adding one finding per problem. Returns the
/// paths of the offending values (unknown fields, wrong types or values), which
/// the caller may prune to go on checking the rest of the file.
pub fn check(doc: &Value, diags: &mut Diags<'_>) -> Vec<FieldPath> {
    let c = compiled();
    let mut seen = std::collections::BTreeSet::new();
    let mut prune = Vec::new();
    for err in c.validator.iter_errors(doc) {
        report(&c.schema, &err, diags, &mut seen, &mut prune);
    }
    prune
}

fn to_path(loc: &jsonschema::paths::Location) -> FieldPath {
    let mut p = FieldPath::root();
    for seg in loc.iter() {
        p = match seg {
            LocationSegment::Property(k) => p.key(k.to_string()),
            LocationSegment::Index(i) => p.index(i),
        };
    }
    p
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn kind_name(k: &TypeKind) -> String {
    let one = |t: &jsonschema::JsonType| -> &'static str {
        match t.to_string().as_str() {
            "array" => "a list",
            "boolean" => "a boolean",
            "integer" => "an integer",
            "null" => "null",
            "number" => "a number",
            "object" => "a mapping",
            _ => "a string",
        }
    };
    match k {
        TypeKind::Single(t) => one(t).to_string(),
        TypeKind::Multiple(set) => {
            let names: Vec<&str> = set.iter().filter(|t| t.to_string() != "null").map(|t| one(&t)).collect();
            names.join(" or ")
        }
    }
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Branches of an anyOf/oneOf whose type fits the value: their errors are the
/// real explanation. A branch that fails on the type of the value itself is not.
fn useful_branches<'e>(
    context: &'e [Vec<ValidationError<'static>>],
    at: &FieldPath,
) -> Vec<&'e Vec<ValidationError<'static>>> {
    context
        .iter()
        .filter(|errs| {
            !errs.iter().any(|e| matches!(e.kind(), ValidationErrorKind::Type { .. }) && &to_path(e.instance_path()) == at)
        })
        .collect()
}

fn report(
    schema: &Value,
    err: &ValidationError<'_>,
    diags: &mut Diags<'_>,
    seen: &mut std::collections::BTreeSet<(FieldPath, String)>,
    prune: &mut Vec<FieldPath>,
) {
    let path = to_path(err.instance_path());
    let instance = err.instance().clone().into_owned();
    let mut emit = |diags: &mut Diags<'_>, p: &FieldPath, msg: String, help: Option<String>, key: bool| {
        if seen.insert((p.clone(), msg.clone())) {
            if key {
                diags.key_error(p, msg, help);
            } else {
                match help {
                    Some(h) => diags.error_help(p, msg, h),
                    None => diags.error(p, msg),
                }
            }
        }
    };
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_properties(schema, err.schema_path().as_str());
            for k in unexpected {
                let help = suggest(k, &allowed);
                emit(diags, &path.key(k.clone()), format!("unknown field `{k}`"), help, true);
                prune.push(path.key(k.clone()));
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("?").to_string();
            emit(diags, &path, format!("missing required field `{name}`"), None, false);
        }
        ValidationErrorKind::Type { kind } => {
            let expected = kind_name(kind);
            let mut help = None;
            if matches!(kind, TypeKind::Single(t) if t.to_string() == "string")
                && matches!(instance, Value::Bool(_) | Value::Number(_))
            {
                help = Some(format!("quote it: \"{}\"", instance));
            }
            let found = match instance {
                Value::Null => "nothing (null)".to_string(),
                _ => format!("{} ({})", type_name(&instance), short(&instance)),
            };
            emit(diags, &path, format!("expected {expected}, found {found}"), help, false);
            prune.push(path.clone());
        }
        ValidationErrorKind::Enum { options } => {
            let opts: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(|o| o.as_str().map(String::from).unwrap_or_else(|| o.to_string())).collect())
                .unwrap_or_default();
            let help = instance.as_str().and_then(|s| suggest(s, &opts));
            emit(diags, &path, format!("{} is not allowed; expected one of: {}", short(&instance), opts.join(", ")), help, false);
            prune.push(path.clone());
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            let branches = useful_branches(context, &path);
            if branches.len() == 1 {
                for e in branches[0].iter() {
                    report(schema, e, diags, seen, prune);
                }
            } else {
                emit(diags, &path, format!("{} does not fit this field", short(&instance)), None, false);
            }
        }
        ValidationErrorKind::Minimum { limit } => {
            emit(diags, &path, format!("must be at least {limit}, got {}", short(&instance)), None, false);
            prune.push(path.clone());
        }
        ValidationErrorKind::Maximum { limit } => {
            emit(diags, &path, format!("must be at most {limit}, got {}", short(&instance)), None, false);
            prune.push(path.clone());
        }
        _ => {
            emit(diags, &path, err.to_string(), None, false);
        }
    }
}

/// The property names allowed where an additionalProperties error was raised.
fn allowed_properties(schema: &Value, schema_path: &str) -> Vec<String> {
    let parent = schema_path.strip_suffix("/additionalProperties").unwrap_or(schema_path);
    schema
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// "did you mean" for a misspelt field or value, else the allowed list.
pub fn suggest(got: &str, allowed: &[String]) -> Option<String> {
    if allowed.is_empty() {
        return None;
    }
    let best = allowed
        .iter()
        .map(|a| (edit_distance(&got.to_lowercase(), &a.to_lowercase()), a))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, a)) if d <= 2.max(got.len() / 3) => Some(format!("did you mean `{a}`?")),
        _ => Some(format!("allowed here: {}", allowed.join(", "))),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestion_picks_close_names() {
        let allowed = vec!["nodePools".to_string(), "nodeClasses".to_string()];
        assert_eq!(suggest("nodePool", &allowed).unwrap(), "did you mean `nodePools`?");
        assert!(suggest("zzzzzzzzzzzz", &allowed).unwrap().starts_with("allowed here"));
    }
}
