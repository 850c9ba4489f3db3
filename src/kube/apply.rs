/*!
Server-side apply of arbitrary objects given as JSON, with field manager
`karpctl`: resolving kinds by discovery, dry runs that surface the API server's
validation (schema + CEL) as errors naming the object, conflicts with other
field managers reported instead of forced, and the field-level difference
between what exists and what an apply would leave.
*/

use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiResource, Scope};
use serde_json::Value;

use crate::model::ownership::FIELD_MANAGER;



/// Why an apply did not go through, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the API server rejected {reference}: {message}")]
    Invalid { reference: String, message: String },
    #[error(
        "{reference}: fields karpctl sets are owned by another field manager ({message}); \
         change them there, or take them over with `karpctl up --force-conflicts`"
    )]
    Conflict { reference: String, message: String },
    #[error("{reference}: the cluster does not serve {api_version} {kind} (are its CRDs installed?)")]
    UnknownKind { reference: String, api_version: String, kind: String },
    #[error("{reference}: {}", api_message(source))]
    Api {
        reference: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Malformed(String),
}

/// The API server's own words for a failed request, without kube-rs's debug dump.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        e => e.to_string(),
    }
}

/// An object to apply, resolved to its API endpoint.
pub struct Target {
    pub api: Api<DynamicObject>,
    pub name: String,
    /// `NodePool/default`, `ConfigMap/kube-system/x`.
    pub reference: String,
}

fn gvk_of(obj: &Value) -> Result<(GroupVersionKind, String), ApplyError> {
    let api_version = obj["apiVersion"].as_str().ok_or_else(|| ApplyError::Malformed("an object has no apiVersion".into()))?;
    let kind = obj["kind"].as_str().ok_or_else(|| ApplyError::Malformed(format!("an {api_version} object has no kind")))?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    Ok((GroupVersionKind::gvk(group, version, kind), api_version.to_string()))
}

/// `Kind/name` or `Kind/namespace/name`.
pub fn reference(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("Object");
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// Resolves `obj`'s kind with discovery (one request per API group version).
pub async fn resolve(client: &kube::Client, obj: &Value) -> Result<Target, ApplyError> {
    let reference = reference(obj);
    let (gvk, api_version) = gvk_of(obj)?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApplyError::Malformed(format!("{reference} has no metadata.name")))?
        .to_string();
    let (ar, caps) = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(x) => x,
        Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => {
            return Err(ApplyError::UnknownKind { reference, api_version, kind: gvk.kind.clone() })
        }
        Err(kube::Error::Discovery(_)) => return Err(ApplyError::UnknownKind { reference, api_version, kind: gvk.kind.clone() }),
        Err(e) => return Err(ApplyError::Api { reference, source: e }),
    };
    let api = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &ar),
        Scope::Namespaced => {
            let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &ar)
        }
    };
    Ok(Target { api, name, reference })
}

/// A target for a known cluster-scoped kind (no discovery round trip).
pub fn cluster_scoped(client: &kube::Client, ar: &ApiResource, name: &str) -> Target {
    Target { api: Api::all_with(client.clone(), ar), name: name.to_string(), reference: format!("{}/{name}", ar.kind) }
}

impl Target {
    /// The object as it exists, or None.
    pub async fn get(&self) -> Result<Option<Value>, ApplyError> {
        match self.api.get_opt(&self.name).await {
            Ok(o) => Ok(o.map(|o| serde_json::to_value(o).expect("objects serialize"))),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Server-side apply; with `dry_run` nothing is stored but every admission
    /// check (schema, CEL, webhooks) runs and the result is what would be stored.
    pub async fn apply(&self, obj: &Value, dry_run: bool, force: bool) -> Result<Value, ApplyError> {
        let mut pp = PatchParams::apply(FIELD_MANAGER);
        if force {
            pp = pp.force();
        }
        if dry_run {
            pp = pp.dry_run();
        }
        match self.api.patch(&self.name, &pp, &Patch::Apply(obj)).await {
            Ok(o) => Ok(serde_json::to_value(o).expect("objects serialize")),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Deletes the object; false when it was already gone.
    pub async fn delete(&self) -> Result<bool, ApplyError> {
        // Background propagation: owners' finalizers (Karpenter's drain) do the waiting;
        // foreground deletion would also need the garbage collector's help.
        match self.api.delete(&self.name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => Ok(false),
            Err(e) => Err(self.classify(e)),
        }
    }

    fn classify(&self, e: kube::Error) -> ApplyError {
        let reference = self.reference.clone();
        match e {
            kube::Error::Api(s) if s.is_conflict() && s.message.contains("conflict") => {
                ApplyError::Conflict { reference, message: s.message.clone() }
            }
            kube::Error::Api(s) if s.is_invalid() || s.code == 400 => ApplyError::Invalid { reference, message: s.message.clone() },
            // Server-side apply reports a value of the wrong type this way.
            kube::Error::Api(s) if s.code == 500 && s.message.contains("failed to create typed patch object") => {
                ApplyError::Invalid { reference, message: s.message.clone() }
            }
            // A webhook's or a ValidatingAdmissionPolicy's denial (403 unless the policy sets its own reason).
            kube::Error::Api(s) if s.code == 403 && (s.message.contains("admission webhook") || s.message.contains("ValidatingAdmissionPolicy")) => {
                ApplyError::Invalid { reference, message: s.message.clone() }
            }
            e => ApplyError::Api { reference, source: e },
        }
    }
}

/// The part of `existing` that `desired` speaks about: the labels and annotations
/// it sets, and every top-level field besides metadata and status. Comparing this
/// for the object as it is and as a dry run would leave it gives the real change,
/// defaults included.
pub fn projection(existing: &Value, desired: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["labels", "annotations"] {
        if let Some(want) = desired.pointer(&format!("/metadata/{key}")).and_then(Value::as_object) {
            let have = existing.pointer(&format!("/metadata/{key}")).and_then(Value::as_object);
            let picked: serde_json::Map<String, Value> =
                want.keys().map(|k| (k.clone(), have.and_then(|h| h.get(k)).cloned().unwrap_or(Value::Null))).collect();
            out.insert(format!("metadata.{key}"), Value::Object(picked));
        }
    }
    if let Some(obj) = desired.as_object() {
        for k in obj.keys().filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")) {
            out.insert(k.clone(), existing.get(k).cloned().unwrap_or(Value::Null));
        }
    }
    Value::Object(out)
}

/// The Karpenter kinds karpctl applies.
pub fn node_pool_resource() -> ApiResource {
    ApiResource {
        group: "karpenter.sh".into(),
        version: "v1".into(),
        api_version: "karpenter.sh/v1".into(),
        kind: "NodePool".into(),
        plural: "nodepools".into(),
    }
}

pub fn node_class_resource() -> ApiResource {
    ApiResource {
        group: "karpenter.k8s.aws".into(),
        version: "v1".into(),
        api_version: "karpenter.k8s.aws/v1".into(),
        kind: "EC2NodeClass".into(),
        plural: "ec2nodeclasses".into(),
    }
}

pub fn node_claim_resource() -> ApiResource {
    ApiResource {
        group: "karpenter.sh".into(),
        version: "v1".into(),
        api_version: "karpenter.sh/v1".into(),
        kind: "NodeClaim".into(),
        plural: "nodeclaims".into(),
    }
}

/// A status condition of an object: (status, reason, message, observedGeneration).
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == type_)
}

/// Ready=True for the object's current generation.
pub fn is_ready(obj: &Value) -> bool {
    condition(obj, "Ready").is_some_and(|c| c["status"] == "True" && of_current_generation(obj, c))
}

/// Whether condition `c` speaks of `obj`'s current generation (an object or condition
/// without one counts as current).
fn of_current_generation(obj: &Value, c: &Value) -> bool {
    match (c["observedGeneration"].as_i64(), obj.pointer("/metadata/generation").and_then(Value::as_i64)) {
        (Some(o), Some(g)) => o >= g,
        _ => true,
    }
}

/// Why the controller refuses an EC2NodeClass's spec for good, if it does: its
/// `ValidationSucceeded=False` for the current generation with a reason that only a change
/// to the spec clears (Karpenter 1.15 checks the schemaless `spec.kubelet` this way).
/// Waiting cannot help these; IAM auth-check failures and the cluster CIDR lookup can, so
/// they are left to the timeout.
pub fn refused(obj: &Value) -> Option<String> {
    const SPEC_REASONS: &[&str] = &[
        "InvalidKubeletConfiguration",
        "UnsupportedKubeletConfiguration",
        "KubeletExpressionInvalid",
        "KubeletExpressionEvaluationFailed",
        "KubeletExpressionsDisabled",
        "UserDataSizeLimitExceeded",
        "NVIDIAConsumableCapacityInvalid",
        "DRADisabled",
        "TagValidationFailed",
    ];
    let c = condition(obj, "ValidationSucceeded")?;
    let reason = c["reason"].as_str().unwrap_or("");
    (c["status"] == "False" && of_current_generation(obj, c) && SPEC_REASONS.contains(&reason))
        .then(|| format!("ValidationSucceeded=False {reason}: {}", c["message"].as_str().unwrap_or("")))
}

/// What an object no controller has reported on yet says: a state while a
/// run waits, not a failure (only a readiness timeout asks about the controller).
pub const NOT_REPORTED: &str = "no conditions reported yet";

/// "Ready=False (AMIsReady: AMINotFound: no AMI matched)" — the failing conditions.
pub fn why_not_ready(obj: &Value) -> String {
    let Some(conds) = obj.pointer("/status/conditions").and_then(Value::as_array) else {
        return NOT_REPORTED.into();
    };
    let failing: Vec<String> = conds
        .iter()
        .filter(|c| c["status"] != "True")
        .map(|c| {
            let msg = c["message"].as_str().unwrap_or("");
            let reason = c["reason"].as_str().unwrap_or("");
            format!("{}={}{}{}", c["type"].as_str().unwrap_or("?"), c["status"].as_str().unwrap_or("?"),
                if reason.is_empty() { String::new() } else { format!(" {reason}") },
                if msg.is_empty() { String::new() } else { format!(": {msg}") })
        })
        .collect();
    if failing.is_empty() {
        "Ready not yet reported for the current generation".into()
    } else {
        failing.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_without_conditions_is_pending_not_failing() {
        let fresh = json!({"metadata": {"name": "default", "generation": 1}});
        let why = why_not_ready(&fresh);
        assert_eq!(why, NOT_REPORTED);
        assert!(!why.contains('?') && !why.contains("running"), "a success's report shows this: {why}");
    }

    #[test]
    fn projection_picks_only_what_desired_sets() {
        let existing = json!({"metadata": {"labels": {"a": "1", "other": "x"}, "resourceVersion": "9"},
            "spec": {"limits": {"cpu": "100"}}, "status": {"x": 1}});
        let desired = json!({"apiVersion": "v1", "kind": "K", "metadata": {"labels": {"a": "2", "b": "3"}}, "spec": {}});
        assert_eq!(projection(&existing, &desired), json!({"metadata.labels": {"a": "1", "b": null}, "spec": {"limits": {"cpu": "100"}}}));
    }

    #[test]
    fn a_spec_the_controller_refuses_is_told_apart_from_one_still_settling() {
        // As Karpenter 1.15's validation controller writes it for Bottlerocket + podsPerCore.
        let refused_now = json!({"metadata": {"generation": 2}, "status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "ValidationSucceededNotReady", "observedGeneration": 2},
            {"type": "ValidationSucceeded", "status": "False", "reason": "UnsupportedKubeletConfiguration", "observedGeneration": 2,
             "message": "spec.kubelet has fields not applied by the Bottlerocket AMI family that would be silently dropped: podsPerCore"}]}});
        let why = refused(&refused_now).expect("refused");
        assert!(why.starts_with("ValidationSucceeded=False UnsupportedKubeletConfiguration: spec.kubelet has fields"), "{why}");
        // The same condition for an older generation: the fix may already be applied.
        let stale = json!({"metadata": {"generation": 3}, "status": refused_now["status"].clone()});
        assert_eq!(refused(&stale), None);
        // A failure that waiting can clear (IAM propagation) is not final.
        let auth = json!({"metadata": {"generation": 1}, "status": {"conditions": [
            {"type": "ValidationSucceeded", "status": "False", "reason": "CreateFleetAuthCheckFailed", "observedGeneration": 1, "message": "denied"}]}});
        assert_eq!(refused(&auth), None);
        let ok = json!({"metadata": {"generation": 1}, "status": {"conditions": [{"type": "ValidationSucceeded", "status": "True", "observedGeneration": 1}]}});
        assert_eq!(refused(&ok), None);
    }

    #[test]
    fn readiness_follows_the_generation() {
        let ready = json!({"metadata": {"generation": 2}, "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 2}]}});
        let stale = json!({"metadata": {"generation": 3}, "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 2}]}});
        let failing = json!({"metadata": {"generation": 1}, "status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "NotReady", "message": "x"},
            {"type": "AMIsReady", "status": "False", "reason": "AMINotFound", "message": "no AMI matched"}]}});
        assert!(is_ready(&ready));
        assert!(!is_ready(&stale));
        assert!(!is_ready(&failing));
        assert!(why_not_ready(&failing).contains("AMIsReady=False AMINotFound: no AMI matched"), "{}", why_not_ready(&failing));
    }
}
