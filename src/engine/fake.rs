/*!
Fake steps over a directory standing in for the outside world, for the engine's
tests and its crash harness: each "resource" is a JSON file, `apply` writes it
after an optional delay, and logs of observe and apply calls let tests prove
that fresh steps cost no calls and finished steps are never re-applied.
*/

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{Action, Change, FieldChange, Step, StepCx};
use crate::fsutil::write_atomic;

/// Counts concurrently running applies (for the concurrency-bound test).
#[derive(Debug, Default)]
pub struct Gauge {
    now: AtomicUsize,
    pub max: AtomicUsize,
}

pub struct FakeStep {
    pub name: String,
    pub deps: Vec<String>,
    pub value: String,
    pub world: PathBuf,
    pub delay: Duration,
    pub gauge: Option<Arc<Gauge>>,
}

impl FakeStep {
    pub fn new(world: &Path, name: &str, deps: &[&str], value: &str) -> FakeStep {
        FakeStep {
            name: name.into(),
            deps: deps.iter().map(|d| format!("fake/{d}")).collect(),
            value: value.into(),
            world: world.to_path_buf(),
            delay: Duration::ZERO,
            gauge: None,
        }
    }

    fn resource(&self) -> PathBuf {
        self.world.join(format!("{}.json", self.name))
    }

    fn log(&self, file: &str, line: &str) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.world.join(file))?;
        writeln!(f, "{line}")?;
        Ok(())
    }
}

/// Lines of a world log (`calls.log`, `applies.log`).
pub fn log_lines(world: &Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(world.join(file)).map(|s| s.lines().map(String::from).collect()).unwrap_or_default()
}

impl Step for FakeStep {
    fn id(&self) -> String {
        format!("fake/{}", self.name)
    }
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn inputs(&self) -> Value {
        json!({"value": self.value})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            self.log("calls.log", &format!("observe {}", self.name))?;
            cx.progress("reading");
            match std::fs::read(self.resource()) {
                Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
                Err(e) => Err(e.into()),
            }
        })
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        match observed.get("value") {
            None => Change::new(Action::Create, format!("create {}", self.name)),
            Some(v) if v != &Value::String(self.value.clone()) => Change::new(Action::Update, format!("update {}", self.name))
                .with_fields(vec![FieldChange { field: "value".into(), old: v.clone(), new: json!(self.value) }]),
            Some(_) => Change::none(),
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, _observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            if let Some(g) = &self.gauge {
                let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                g.max.fetch_max(n, Ordering::SeqCst);
            }
            cx.progress("writing");
            tokio::time::sleep(self.delay).await;
            if let Some(g) = &self.gauge {
                g.now.fetch_sub(1, Ordering::SeqCst);
            }
            if self.world.join(format!("fail-{}", self.name)).exists() {
                anyhow::bail!("injected failure in {}", self.name);
            }
            let upstream: Value = cx.upstream.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>().into();
            let doc = json!({"value": self.value, "upstream": upstream});
            write_atomic(&self.resource(), serde_json::to_string(&doc)?.as_bytes(), 0o644)?;
            self.log("applies.log", &self.name)?;
            Ok(json!({"value": self.value}))
        })
    }
    fn outputs_from(&self, observed: &Value) -> Value {
        json!({"value": observed.get("value").cloned().unwrap_or(Value::Null)})
    }
}
