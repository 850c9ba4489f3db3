/*!
Helm releases read straight from where Helm 3 keeps them: a Secret per revision
(`type: helm.sh/release.v1`, labels `owner=helm`, `name=<release>`, `version=<revision>`)
whose `release` key holds the release record as gzipped JSON in base64. Observing a
release this way costs one LIST on the connection karpctl already has, instead of
starting `helm list` and `helm get values` (each a process with its own client setup).
Only reads; every change still goes through the helm binary.
*/

use std::io::Read as _;

use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::helm::ReleaseStatus;

/// The latest revision of a release, as `helm list --all` and `helm get values` see it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRelease {
    pub revision: u64,
    pub status: ReleaseStatus,
    pub chart_name: String,
    pub chart_version: String,
    /// The user-supplied values (`helm get values`); `{}` when there were none.
    pub values: Value,
}

impl StoredRelease {
    /// `<chart name>-<chart version>`, as helm prints a release's chart.
    pub fn chart(&self) -> String {
        format!("{}-{}", self.chart_name, self.chart_version)
    }
}

/// The latest revision of `name` in `namespace`, or None when Helm has no record of it.
pub async fn release(client: &kube::Client, name: &str, namespace: &str) -> anyhow::Result<Option<StoredRelease>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("owner=helm,name={name}"));
    let list = api.list(&lp).await.with_context(|| format!("listing Helm's records of release {namespace}/{name}"))?;
    let latest = list
        .items
        .iter()
        .filter(|s| s.type_.as_deref() == Some("helm.sh/release.v1"))
        .filter_map(|s| Some((s.metadata.labels.as_ref()?.get("version")?.parse::<u64>().ok()?, s)))
        .max_by_key(|(v, _)| *v);
    let Some((_, secret)) = latest else { return Ok(None) };
    let secret_name = secret.metadata.name.clone().unwrap_or_default();
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .with_context(|| format!("Helm's record {namespace}/{secret_name} has no `release` key"))?;
    let record = decode(&data.0).with_context(|| format!("reading Helm's record {namespace}/{secret_name}"))?;
    Ok(Some(parse(&record).with_context(|| format!("reading Helm's record {namespace}/{secret_name}"))?))
}

/// base64 → (gzip, which Helm always writes, though old records may be plain) → JSON.
pub fn decode(data: &[u8]) -> anyhow::Result<Value> {
    let raw = base64::engine::general_purpose::STANDARD.decode(data.trim_ascii()).context("the record is not base64")?;
    let json = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).take(64 << 20).read_to_end(&mut out).context("the record is not valid gzip")?;
        out
    } else {
        raw
    };
    serde_json::from_slice(&json).context("the record is not JSON")
}

/// The fields karpctl uses of a decoded release record.
pub fn parse(record: &Value) -> anyhow::Result<StoredRelease> {
    let text = |v: &Value, what: &str| v.as_str().map(String::from).with_context(|| format!("the record has no {what}"));
    Ok(StoredRelease {
        revision: record["version"].as_u64().context("the record has no revision (`version`)")?,
        status: ReleaseStatus::parse(&text(&record["info"]["status"], "info.status")?),
        chart_name: text(&record["chart"]["metadata"]["name"], "chart.metadata.name")?,
        chart_version: text(&record["chart"]["metadata"]["version"], "chart.metadata.version")?,
        values: match &record["config"] {
            Value::Object(m) => Value::Object(m.clone()),
            _ => Value::Object(Default::default()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write as _;

    fn encode(v: &Value, gzip: bool) -> Vec<u8> {
        let json = serde_json::to_vec(v).unwrap();
        let bytes = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&json).unwrap();
            e.finish().unwrap()
        } else {
            json
        };
        base64::engine::general_purpose::STANDARD.encode(bytes).into_bytes()
    }

    fn record() -> Value {
        json!({"name": "karpenter", "version": 3, "namespace": "kube-system",
               "info": {"status": "pending-upgrade"},
               "chart": {"metadata": {"name": "karpenter", "version": "1.14.1"}},
               "config": {"replicas": 2, "settings": {"clusterName": "c"}}})
    }

    #[test]
    fn gzipped_and_plain_records_decode_to_the_same_release() {
        for gzip in [true, false] {
            let r = parse(&decode(&encode(&record(), gzip)).unwrap()).unwrap();
            assert_eq!(r.revision, 3);
            assert_eq!(r.status, ReleaseStatus::PendingUpgrade);
            assert_eq!(r.chart(), "karpenter-1.14.1");
            assert_eq!(r.values, json!({"replicas": 2, "settings": {"clusterName": "c"}}));
        }
    }

    #[test]
    fn no_user_values_are_an_empty_object_and_broken_records_say_what_is_wrong() {
        let mut rec = record();
        rec["config"] = Value::Null;
        assert_eq!(parse(&rec).unwrap().values, json!({}));
        let e = decode(b"%%%").unwrap_err();
        assert!(format!("{e:#}").contains("not base64"), "{e:#}");
        rec["chart"] = json!({});
        let e = parse(&rec).unwrap_err();
        assert!(format!("{e:#}").contains("chart.metadata.name"), "{e:#}");
    }
}
