//! Runs the engine over fake steps against a real local state file, so the crash
//! test can kill it with SIGKILL at any instant and check what it left behind.
//! Usage: engine-crash-harness WORLD_DIR STATE_FILE DELAY_MS VALUE [LOCK_TIMEOUT_MS]
//! Takes the state lock like `up` does; exits 4 when another run holds it,
//! and 130 after Ctrl-C (SIGINT), with the state saved.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Duration;

use karpctl::engine::fake::FakeStep;
use karpctl::engine::{Mode, Runner, Step};
use karpctl::state::{Backend, LocalStore, State};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let world = PathBuf::from(&args[1]);
    let state_path = PathBuf::from(&args[2]);
    let delay = Duration::from_millis(args[3].parse().expect("delay"));
    let value = args[4].clone();
    std::fs::create_dir_all(&world).expect("world dir");
    // A diamond with a tail and an independent branch.
    let graph: [(&str, &[&str]); 8] =
        [("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"]), ("e", &["d"]), ("f", &[]), ("g", &["f"]), ("h", &["e", "g"])];
    let steps: Vec<FakeStep> = graph
        .iter()
        .map(|(n, deps)| {
            let mut s = FakeStep::new(&world, n, deps, &format!("{value}-{n}"));
            s.delay = delay;
            s
        })
        .collect();
    let lock_timeout = Duration::from_millis(args.get(5).map(|s| s.parse().expect("lock timeout")).unwrap_or(10_000));
    let backend = Backend::Local(LocalStore::new(state_path));
    let lock = karpctl::state::LockInfo::for_this_process("engine-crash-harness");
    if let Err(e) = backend.lock(&lock, lock_timeout, &|h| eprintln!("waiting for the lock held by {h}")).await {
        eprintln!("{e}");
        if let Some(h) = e.help() {
            eprintln!("help: {h}");
        }
        std::process::exit(4);
    }
    let mut state = match backend.load().await {
        Ok(Some(s)) => s,
        Ok(None) => State::new("crash-test", None),
        Err(e) => {
            eprintln!("state unreadable: {e}");
            std::process::exit(3);
        }
    };
    let events = |_e: karpctl::engine::Event| {};
    let runner = Runner {
        steps: steps.iter().map(|s| s as &dyn Step).collect(),
        mode: Mode::Apply,
        refresh: false,
        concurrency: 3,
        approve: true,
        events: &events,
        classify: karpctl::engine::unclassified,
    };
    let mut cancel = std::pin::pin!(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    let result = runner.run(&mut state, &backend, cancel.as_mut()).await;
    let _ = backend.unlock(&lock.id).await;
    match result {
        Ok(r) if r.failed().is_empty() => {}
        Ok(r) => {
            eprintln!("failed steps: {:?}", r.failed());
            std::process::exit(1);
        }
        Err(karpctl::engine::RunnerError::Cancelled { .. }) => {
            eprintln!("interrupted; state saved");
            std::process::exit(130);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}
