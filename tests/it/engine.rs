//! The step engine with fake steps over a scratch "world" directory and a real
//! local state file: skip-when-fresh with zero calls, resume after a failure,
//! the concurrency bound, reasons, plan mode, drift, and kill -9 at random instants.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use karpctl::engine::fake::{log_lines, FakeStep, Gauge};
use karpctl::engine::{Action, Mode, Outcome, RunReport, Runner, Step, Why};
use karpctl::state::{Backend, LocalStore, State, StepStatus};

fn scratch(name: &str) -> PathBuf {
    let d = crate::support::scratch(&format!("engine-{name}"));
    std::fs::create_dir_all(d.join("world")).unwrap();
    d
}

fn chain(world: &Path, value: &str) -> Vec<FakeStep> {
    vec![
        FakeStep::new(world, "a", &[], value),
        FakeStep::new(world, "b", &["a"], value),
        FakeStep::new(world, "c", &["b"], value),
        FakeStep::new(world, "d", &["c"], value),
    ]
}

async fn run(steps: &[FakeStep], backend: &Backend, mode: Mode, refresh: bool, concurrency: usize) -> RunReport {
    let mut state = backend.load().await.unwrap().unwrap_or_else(|| State::new("engine-test", None));
    let events = |_e: karpctl::engine::Event| {};
    let runner =
        Runner { steps: steps.iter().map(|s| s as &dyn Step).collect(), mode, refresh, concurrency, approve: true, events: &events, classify: karpctl::engine::unclassified };
    let mut never = std::pin::pin!(std::future::pending::<()>());
    runner.run(&mut state, backend, never.as_mut()).await.unwrap()
}

fn outcome<'r>(r: &'r RunReport, id: &str) -> &'r Outcome {
    &r.outcomes.iter().find(|(s, _)| s == id).unwrap_or_else(|| panic!("no outcome for {id}: {:?}", r.outcomes)).1
}

#[tokio::test]
async fn a_second_run_skips_every_step_without_a_single_call() {
    let d = scratch("fresh");
    let w = d.join("world");
    let backend = Backend::Local(LocalStore::new(d.join("state.json")));
    let steps = chain(&w, "v1");
    let first = run(&steps, &backend, Mode::Apply, false, 4).await;
    assert!(first.failed().is_empty(), "{:?}", first.outcomes);
    assert_eq!(log_lines(&w, "applies.log"), ["a", "b", "c", "d"]);
    let calls = log_lines(&w, "calls.log").len();

    let second = run(&steps, &backend, Mode::Apply, false, 4).await;
    assert_eq!(second.fresh.len(), 4);
    assert!(second.planned.is_empty());
    assert_eq!(log_lines(&w, "calls.log").len(), calls, "a fresh step must not observe anything");
    assert_eq!(log_lines(&w, "applies.log").len(), 4);
}

#[tokio::test]
async fn resume_after_a_failure_does_not_reapply_earlier_steps() {
    let d = scratch("resume");
    let w = d.join("world");
    let backend = Backend::Local(LocalStore::new(d.join("state.json")));
    let steps = chain(&w, "v1");
    std::fs::write(w.join("fail-c"), "").unwrap();
    let r = run(&steps, &backend, Mode::Apply, false, 4).await;
    assert!(matches!(outcome(&r, "fake/c"), Outcome::Failed { error } if error.contains("injected failure")));
    assert_eq!(outcome(&r, "fake/d"), &Outcome::Blocked { by: "fake/c".into() });
    let st = backend.load().await.unwrap().unwrap();
    assert_eq!(st.steps["fake/c"].status, StepStatus::Failed);
    assert!(!st.steps.contains_key("fake/d"));

    std::fs::remove_file(w.join("fail-c")).unwrap();
    let r = run(&steps, &backend, Mode::Apply, false, 4).await;
    assert_eq!(r.fresh, ["fake/a", "fake/b"]);
    let c = r.planned.iter().find(|p| p.step == "fake/c").unwrap();
    assert!(matches!(&c.why[..], [Why::PreviousAttemptFailed { error }] if error.contains("injected")), "{:?}", c.why);
    assert_eq!(log_lines(&w, "applies.log"), ["a", "b", "c", "d"], "a and b applied once only");
}

#[tokio::test]
async fn independent_steps_run_concurrently_up_to_the_bound() {
    let d = scratch("bound");
    let w = d.join("world");
    let backend = Backend::Local(LocalStore::new(d.join("state.json")));
    let gauge = Arc::new(Gauge::default());
    let steps: Vec<FakeStep> = (0..6)
        .map(|i| {
            let mut s = FakeStep::new(&w, &format!("s{i}"), &[], "v");
            s.delay = Duration::from_millis(150);
            s.gauge = Some(gauge.clone());
            s
        })
        .collect();
    let r = run(&steps, &backend, Mode::Apply, false, 2).await;
    assert!(r.failed().is_empty());
    assert_eq!(gauge.max.load(std::sync::atomic::Ordering::SeqCst), 2, "two at a time, never more, and not one");
}

#[tokio::test]
async fn a_changed_input_is_the_reason_and_dependents_follow() {
    let d = scratch("reasons");
    let w = d.join("world");
    let backend = Backend::Local(LocalStore::new(d.join("state.json")));
    run(&chain(&w, "v1"), &backend, Mode::Apply, false, 4).await;
    let mut steps = chain(&w, "v1");
    steps[1].value = "v2".into();
    let plan = run(&steps, &backend, Mode::Plan, false, 4).await;
    // d stays fresh: c's own resource will not change, so neither do its outputs.
    assert_eq!(plan.fresh, ["fake/a", "fake/d"]);
    let b = plan.planned.iter().find(|p| p.step == "fake/b").unwrap();
    assert_eq!(b.change.action, Action::Update);
    assert_eq!(
        b.why,
        vec![Why::InputsChanged { field: "value".into(), old: "v1".into(), new: "v2".into() }]
    );
    // c's own inputs are unchanged, but b's outputs will be: it is planned as an upstream change.
    assert!(matches!(outcome(&plan, "fake/c"), Outcome::WouldChange { .. } | Outcome::UpToDate));
    assert_eq!(log_lines(&w, "applies.log").len(), 4, "plan applies nothing");
    let st = backend.load().await.unwrap().unwrap();
    assert_eq!(st.steps["fake/b"].inputs["inputs"]["value"], "v1", "plan does not write state");
}

#[tokio::test]
async fn refresh_finds_drift_that_a_normal_run_skips() {
    let d = scratch("drift");
    let w = d.join("world");
    let backend = Backend::Local(LocalStore::new(d.join("state.json")));
    let steps = chain(&w, "v1");
    run(&steps, &backend, Mode::Apply, false, 4).await;
    std::fs::write(w.join("b.json"), r#"{"value":"tampered"}"#).unwrap();
    let normal = run(&steps, &backend, Mode::Plan, false, 4).await;
    assert!(normal.planned.is_empty(), "without --refresh the record is trusted");
    let refreshed = run(&steps, &backend, Mode::Plan, true, 4).await;
    let b = refreshed.planned.iter().find(|p| p.step == "fake/b").expect("drift on b");
    assert!(matches!(&b.why[..], [Why::Drifted { .. }]), "{:?}", b.why);
    let fixed = run(&steps, &backend, Mode::Apply, true, 4).await;
    assert!(matches!(outcome(&fixed, "fake/b"), Outcome::Applied { action: Action::Update }));
}

#[tokio::test]
async fn an_interrupted_step_is_observed_again_and_adopted() {
    let d = scratch("interrupted");
    let w = d.join("world");
    let backend = Backend::Local(LocalStore::new(d.join("state.json")));
    let steps = chain(&w, "v1");
    run(&steps, &backend, Mode::Apply, false, 4).await;
    // As if killed after b's resource was written but before its record was: in_progress.
    let mut st = backend.load().await.unwrap().unwrap();
    st.steps.get_mut("fake/b").unwrap().status = StepStatus::InProgress;
    backend.save(&mut st).await.unwrap();
    let r = run(&steps, &backend, Mode::Apply, false, 4).await;
    assert_eq!(outcome(&r, "fake/b"), &Outcome::UpToDate, "exists as wanted: recorded, not re-applied");
    assert_eq!(log_lines(&w, "applies.log").len(), 4);
    assert_eq!(backend.load().await.unwrap().unwrap().steps["fake/b"].status, StepStatus::Done);
}

#[tokio::test]
async fn graph_errors_are_reported() {
    let d = scratch("graph");
    let w = d.join("world");
    let backend = Backend::Local(LocalStore::new(d.join("state.json")));
    let steps = [FakeStep::new(&w, "x", &["y"], "v"), FakeStep::new(&w, "y", &["x"], "v")];
    let mut state = State::new("engine-test", None);
    let events = |_e: karpctl::engine::Event| {};
    let runner = Runner {
        steps: steps.iter().map(|s| s as &dyn Step).collect(),
        mode: Mode::Apply,
        refresh: false,
        concurrency: 1,
        approve: true,
        events: &events,
        classify: karpctl::engine::unclassified,
    };
    let mut never = std::pin::pin!(std::future::pending::<()>());
    let err = runner.run(&mut state, &backend, never.as_mut()).await.unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
}

fn harness() -> PathBuf {
    // target/debug/deps/it-… → target/debug/examples/engine-crash-harness
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples/engine-crash-harness");
    // `cargo test` builds examples but `cargo test --test it` does not: make sure it is current.
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo).args(["build", "--example", "engine-crash-harness"]).status().unwrap().success();
        assert!(ok, "building the crash harness failed");
    });
    bin
}

/// kill -9 at random instants: the state file always parses and a re-run converges.
#[test]
fn kill_nine_at_random_instants_never_tears_state_and_always_converges() {
    let bin = harness();
    assert!(bin.exists(), "{} missing: cargo test builds examples", bin.display());
    let mut rng = 0x9e3779b97f4a7c15u64;
    let trials = 50;
    let mut killed_mid_run = 0;
    for t in 0..trials {
        let d = scratch(&format!("crash{t}"));
        let w = d.join("world");
        let state = d.join("state.json");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(rng % 220);
        let mut child = Command::new(&bin).args([w.to_str().unwrap(), state.to_str().unwrap(), "40", "v1"]).spawn().unwrap();
        std::thread::sleep(kill_after);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if state.exists() {
            let text = std::fs::read_to_string(&state).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("trial {t}: torn state ({e}):\n{text}"));
            assert_eq!(v["version"], 1);
        }
        let lock = d.join("state.json.lock");
        if lock.exists() {
            // A killed run leaves its lock; the next run refuses it as stale and says how to clear it.
            let refused = Command::new(&bin).args([w.to_str().unwrap(), state.to_str().unwrap(), "0", "v1", "0"]).output().unwrap();
            let err = String::from_utf8_lossy(&refused.stderr);
            assert_eq!(refused.status.code(), Some(4), "trial {t}: {err}");
            assert!(err.contains("stale lock") && err.contains("karpctl state unlock"), "trial {t}: {err}");
            let id = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&lock).unwrap()).unwrap()["id"].as_str().unwrap().to_string();
            let backend = Backend::Local(LocalStore::new(state.clone()));
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(backend.unlock(&id)).unwrap();
        }
        let status = Command::new(&bin).args([w.to_str().unwrap(), state.to_str().unwrap(), "0", "v1"]).status().unwrap();
        assert!(status.success(), "trial {t}: re-run after kill at {kill_after:?} did not converge");
        let applies = log_lines(&w, "applies.log");
        for n in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(w.join(format!("{n}.json"))).unwrap()).unwrap();
            assert_eq!(doc["value"], format!("v1-{n}"), "trial {t}");
            assert!(applies.iter().filter(|a| *a == n).count() <= 2, "trial {t}: {n} applied more than once after resume");
        }
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
        assert!(v["steps"].as_object().unwrap().values().all(|r| r["status"] == "done"), "trial {t}");
        let _ = std::fs::remove_dir_all(&d);
    }
    assert!(killed_mid_run >= trials / 3, "kills should mostly land mid-run, only {killed_mid_run} did");
}

/// Two processes on one state file: the second waits, then gives up naming the holder.
#[test]
fn a_second_process_waits_for_the_lock_then_names_the_holder() {
    let bin = harness();
    let d = scratch("lock-procs");
    let (w, state) = (d.join("world"), d.join("state.json"));
    let mut first = Command::new(&bin).args([w.to_str().unwrap(), state.to_str().unwrap(), "150", "v1"]).spawn().unwrap();
    // Wait until the first run holds the lock.
    let lock = d.join("state.json.lock");
    let t = std::time::Instant::now();
    while !lock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "the first run never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = Command::new(&bin).args([w.to_str().unwrap(), state.to_str().unwrap(), "0", "v1", "300"]).output().unwrap();
    assert_eq!(second.status.code(), Some(4), "{}", String::from_utf8_lossy(&second.stderr));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("waiting for the lock held by") && err.contains(&first.id().to_string()), "{err}");
    assert!(err.contains("karpctl state unlock"), "{err}");
    assert!(first.wait().unwrap().success(), "the holder finishes undisturbed");
    assert!(!lock.exists(), "the holder releases the lock");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(v["steps"].as_object().unwrap().values().all(|r| r["status"] == "done"));
}

/// Ctrl-C persists what happened, exits 130, and a re-run finishes the job.
#[test]
fn ctrl_c_saves_state_and_the_next_run_resumes() {
    let bin = harness();
    let d = scratch("sigint");
    let (w, state) = (d.join("world"), d.join("state.json"));
    let mut child = Command::new(&bin).args([w.to_str().unwrap(), state.to_str().unwrap(), "100", "v1"]).spawn().unwrap();
    // The first state write comes after the run has installed its Ctrl-C handler.
    let t = std::time::Instant::now();
    while !state.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "the run never wrote its state");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(30));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let steps = v["steps"].as_object().unwrap();
    assert!(!steps.is_empty() && steps.len() < 8, "stopped part-way: {steps:?}");
    assert!(!d.join("state.json.lock").exists(), "the lock is released on Ctrl-C");
    let again = Command::new(&bin).args([w.to_str().unwrap(), state.to_str().unwrap(), "0", "v1"]).status().unwrap();
    assert!(again.success());
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(v["steps"].as_object().unwrap().len(), 8);
}
