/*!
Fingerprints of a step's desired state: sha256 over its kind, its schema version
and the canonical JSON of its inputs (object keys sorted at every level), so the
same desired state always gives the same fingerprint whatever the map order.
*/

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::json::canonical;

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
}
