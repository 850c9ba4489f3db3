/*!
Steps with typed state. A [`TypedStep`] says what it observes and what it
outputs as Rust types and its constant facts (kind, layer, whether it always
observes) as associated constants; [`Typed`] adapts it to the runner's
[`Step`], so JSON appears only where the state file and the runner keep
values. Dependencies' outputs are read through typed [`Upstream`] handles
instead of string lookups. Steps migrate to this one file at a time.
*/

use std::marker::PhantomData;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::{Change, Layer, Step, StepCx};

/// A step whose observed state and outputs are Rust types.
pub trait TypedStep: Send + Sync {
    /// The kind recorded in the state and hashed into the fingerprint; never
    /// renamed (a new name would make every recorded step look changed).
    const KIND: &'static str;
    const LAYER: Layer = Layer::Aws;
    /// Lookups whose answer changes outside karpctl observe on every run.
    const ALWAYS_OBSERVE: bool = false;
    /// Bumped when the meaning of `inputs` changes, so records re-run.
    const SCHEMA_VERSION: u32 = 1;
    /// What `observe` finds.
    type Observed: Serialize + DeserializeOwned + Send + Sync;
    /// What later steps read (through an [`Upstream`] handle) and the state records.
    type Outputs: Serialize + DeserializeOwned + Send;

    fn id(&self) -> String;
    fn deps(&self) -> Vec<String> {
        Vec::new()
    }
    /// The desired state as JSON (no secrets): the fingerprint's input.
    fn inputs(&self) -> Value;
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Self::Observed>>;
    /// Pure: observed state → what must change.
    fn diff(&self, observed: &Self::Observed, cx: &StepCx<'_>) -> Change;
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Self::Observed, change: &'a Change) -> BoxFuture<'a, anyhow::Result<Self::Outputs>>;
    /// Outputs when nothing had to change.
    fn outputs_from(&self, observed: &Self::Observed) -> Self::Outputs;
}

/// A [`TypedStep`] as the runner's [`Step`].
pub struct Typed<S>(pub S);

fn to_value<T: Serialize>(v: &T) -> anyhow::Result<Value> {
    serde_json::to_value(v).map_err(|e| anyhow::anyhow!("encoding a step's state: {e}"))
}

/// The runner hands back what `observe` produced; a value that does not decode is
/// a bug, reported as a change that cannot be planned rather than a panic.
fn decode<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("the observed state does not decode: {e}"))
}

impl<S: TypedStep> Step for Typed<S> {
    fn id(&self) -> String {
        self.0.id()
    }
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn schema_version(&self) -> u32 {
        S::SCHEMA_VERSION
    }
    fn deps(&self) -> Vec<String> {
        self.0.deps()
    }
    fn layer(&self) -> Layer {
        S::LAYER
    }
    fn always_observe(&self) -> bool {
        S::ALWAYS_OBSERVE
    }
    fn inputs(&self) -> Value {
        self.0.inputs()
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move { to_value(&self.0.observe(cx).await?) })
    }
    fn diff(&self, observed: &Value, cx: &StepCx<'_>) -> Change {
        match decode::<S::Observed>(observed) {
            Ok(o) => self.0.diff(&o, cx),
            Err(e) => Change::new(super::Action::Update, format!("{}: {e}", S::KIND)),
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let o: S::Observed = decode(observed).map_err(anyhow::Error::msg)?;
            to_value(&self.0.apply(cx, &o, change).await?)
        })
    }
    fn outputs_from(&self, observed: &Value) -> Value {
        match decode::<S::Observed>(observed) {
            Ok(o) => to_value(&self.0.outputs_from(&o)).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

/// A typed handle on a dependency's outputs: the step id and the outputs' type.
pub struct Upstream<T> {
    pub id: String,
    _outputs: PhantomData<fn() -> T>,
}

impl<T> Clone for Upstream<T> {
    fn clone(&self) -> Self {
        Upstream { id: self.id.clone(), _outputs: PhantomData }
    }
}

impl<T: DeserializeOwned> Upstream<T> {
    pub fn new(id: impl Into<String>) -> Self {
        Upstream { id: id.into(), _outputs: PhantomData }
    }

    /// The dependency's outputs (as recorded or just produced); an error naming the
    /// step when it has none (it did not run) or they do not decode.
    pub fn get(&self, cx: &StepCx<'_>) -> anyhow::Result<T> {
        let v = cx.output(&self.id).ok_or_else(|| anyhow::anyhow!("step {} has no outputs yet (it did not run)", self.id))?;
        serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("the outputs of step {} do not decode: {e}", self.id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::super::Action;
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Seen {
        exists: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        role_arn: Option<String>,
    }

    struct Role;

    impl TypedStep for Role {
        const KIND: &'static str = "role";
        const ALWAYS_OBSERVE: bool = true;
        type Observed = Seen;
        type Outputs = Seen;
        fn id(&self) -> String {
            "role/x".into()
        }
        fn inputs(&self) -> Value {
            json!({"name": "x"})
        }
        fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Seen>> {
            Box::pin(async move { Ok(Seen { exists: cx.output("cluster/c").is_some(), role_arn: None }) })
        }
        fn diff(&self, o: &Seen, _cx: &StepCx<'_>) -> Change {
            if o.exists {
                Change::none()
            } else {
                Change::new(Action::Create, "create role x")
            }
        }
        fn apply<'a>(&'a self, _cx: &'a StepCx<'a>, _o: &'a Seen, _c: &'a Change) -> BoxFuture<'a, anyhow::Result<Seen>> {
            Box::pin(async move { Ok(Seen { exists: true, role_arn: Some("arn:aws:iam::1:role/x".into()) }) })
        }
        fn outputs_from(&self, o: &Seen) -> Seen {
            Seen { exists: o.exists, role_arn: o.role_arn.clone() }
        }
    }

    #[tokio::test]
    async fn the_adapter_keeps_json_at_the_edges_and_types_inside() {
        let step = Typed(Role);
        assert_eq!((step.kind(), step.always_observe(), step.layer(), step.schema_version()), ("role", true, Layer::Aws, 1));
        let upstream = BTreeMap::new();
        let quiet = |_e: super::super::Event| {};
        let cx = StepCx::new("role/x", &upstream, None, &quiet);
        let observed = step.observe(&cx).await.unwrap();
        assert_eq!(observed, json!({"exists": false}));
        let change = step.diff(&observed, &cx);
        assert_eq!(change.action, Action::Create);
        let out = step.apply(&cx, &observed, &change).await.unwrap();
        assert_eq!(out, json!({"exists": true, "roleArn": "arn:aws:iam::1:role/x"}));
        assert_eq!(step.diff(&json!({"exists": true}), &cx).action, Action::None);
        // A value that is not what the step observes is a change it cannot plan, not a panic.
        let bad = step.diff(&json!({"exists": "maybe"}), &cx);
        assert!(bad.summary.contains("does not decode"), "{}", bad.summary);
        assert!(step.apply(&cx, &json!([]), &change).await.is_err());
    }

    #[test]
    fn an_upstream_handle_names_the_step_it_could_not_read() {
        let handle: Upstream<Seen> = Upstream::new("cluster/c");
        let mut upstream = BTreeMap::new();
        let quiet = |_e: super::super::Event| {};
        {
            let cx = StepCx::new("role/x", &upstream, None, &quiet);
            assert!(handle.get(&cx).unwrap_err().to_string().contains("step cluster/c has no outputs"));
        }
        upstream.insert("cluster/c".to_string(), json!({"exists": true, "roleArn": "a"}));
        let cx = StepCx::new("role/x", &upstream, None, &quiet);
        assert_eq!(handle.get(&cx).unwrap(), Seen { exists: true, role_arn: Some("a".into()) });
        upstream_decode_error(&handle);
    }

    fn upstream_decode_error(handle: &Upstream<Seen>) {
        let upstream = BTreeMap::from([("cluster/c".to_string(), json!({"exists": 3}))]);
        let quiet = |_e: super::super::Event| {};
        let cx = StepCx::new("role/x", &upstream, None, &quiet);
        assert!(handle.get(&cx).unwrap_err().to_string().contains("do not decode"));
    }
}
