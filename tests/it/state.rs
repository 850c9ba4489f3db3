//! The state store. One conformance suite runs against both backends — a local
//! file, and S3 on the AWS emulator (tests/testbed/aws) — so the engine can
//! rely on the same behaviour from either; then what only one backend has:
//! file modes, backups, stale locks, two threads contending, failed writes
//! (local), and the SDK error mapping (S3).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use karpctl::state::{
    Backend, LocalStore, LockInfo, Location, S3Store, State, StateError, StepRecord, StepStatus, STATE_VERSION,
};

use crate::beds::AwsEmulator;
use crate::support::scratch;

// ------------------------------------------------------------------------------------------ beds

/// A place to make stores in: `store(name)` gives a new store instance on the
/// location `name` (two calls, two independent instances on the same state),
/// and raw access to what is stored there.
trait Bed {
    fn store(&self, name: &str) -> Backend;
    /// Writes the state (`suffix` "") or a side object (".backup", ".lock" …) behind the store's back.
    async fn put_raw(&self, name: &str, suffix: &str, bytes: &[u8]);
    async fn get_raw(&self, name: &str, suffix: &str) -> Option<Vec<u8>>;
    /// Whether writes are compare-and-swap (S3), so a writer that skips the lock is still caught.
    fn compare_and_swap(&self) -> bool;
}

struct LocalBed {
    dir: PathBuf,
}

impl LocalBed {
    fn new(name: &str) -> LocalBed {
        LocalBed { dir: scratch(name) }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.state.json"))
    }
}

impl Drop for LocalBed {
    fn drop(&mut self) {
        // Kept when a test fails, to look at.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Bed for LocalBed {
    fn store(&self, name: &str) -> Backend {
        Backend::Local(LocalStore::new(self.path(name)))
    }
    async fn put_raw(&self, name: &str, suffix: &str, bytes: &[u8]) {
        std::fs::write(with_suffix(&self.path(name), suffix), bytes).unwrap();
    }
    async fn get_raw(&self, name: &str, suffix: &str) -> Option<Vec<u8>> {
        std::fs::read(with_suffix(&self.path(name), suffix)).ok()
    }
    fn compare_and_swap(&self) -> bool {
        false
    }
}

struct S3Bed {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Bed {
    fn key(name: &str, suffix: &str) -> String {
        format!("karpctl/{name}.state.json{suffix}")
    }
}

impl Bed for S3Bed {
    fn store(&self, name: &str) -> Backend {
        Backend::S3(S3Store::new(self.client.clone(), self.bucket.clone(), S3Bed::key(name, "")))
    }
    async fn put_raw(&self, name: &str, suffix: &str, bytes: &[u8]) {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(S3Bed::key(name, suffix))
            .body(bytes.to_vec().into())
            .send()
            .await
            .expect("PutObject");
    }
    async fn get_raw(&self, name: &str, suffix: &str) -> Option<Vec<u8>> {
        match self.client.get_object().bucket(&self.bucket).key(S3Bed::key(name, suffix)).send().await {
            Ok(o) => Some(o.body.collect().await.expect("body").into_bytes().to_vec()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
            Err(e) => panic!("GetObject: {}", aws_sdk_s3::error::DisplayErrorContext(&e)),
        }
    }
    fn compare_and_swap(&self) -> bool {
        true
    }
}

// ------------------------------------------------------------------------------------ conformance

async fn conformance(bed: &impl Bed) {
    nothing_stored_loads_as_none(bed).await;
    save_and_load_round_trip_with_serial_bumps(bed).await;
    a_record_is_stored_exactly_and_nothing_is_added(bed).await;
    a_newer_version_is_refused(bed).await;
    unreadable_content_is_refused_and_left_untouched(bed).await;
    another_clusters_state_is_refused(bed).await;
    a_held_lock_names_its_holder_and_waits_once(bed).await;
    unlock_needs_the_holders_id(bed).await;
    a_waiter_gets_the_lock_once_it_is_released(bed).await;
    if bed.compare_and_swap() {
        a_concurrent_writer_makes_our_save_conflict(bed).await;
    }
}

fn record(kind: &str) -> StepRecord {
    StepRecord {
        kind: kind.to_string(),
        fingerprint: "sha256:0f1e2d".into(),
        status: StepStatus::InProgress,
        inputs: json!({"stackName": "Karpenter-c1", "parameters": {"ClusterName": "c1"}}),
        outputs: Value::Null,
        error: None,
        started_at: Some("2026-01-02T03:04:05Z".into()),
        finished_at: None,
    }
}

async fn nothing_stored_loads_as_none(bed: &impl Bed) {
    let b = bed.store("empty");
    assert!(b.load().await.unwrap().is_none());
    assert!(b.lock_holder().await.unwrap().is_none());
    b.unlock("no-such-lock").await.expect("unlocking an unlocked state is a no-op");
    assert!(bed.get_raw("empty", "").await.is_none(), "loading must not create anything");
}

async fn save_and_load_round_trip_with_serial_bumps(bed: &impl Bed) {
    let b = bed.store("roundtrip");
    let mut s = State::new("c1", Some("us-west-2"));
    assert_eq!((s.version, s.serial), (STATE_VERSION, 0));
    let lineage = s.lineage.clone();
    s.steps.insert("cfn-stack/karpenter".into(), record("cfn_stack"));
    b.save(&mut s).await.unwrap();
    assert_eq!(s.serial, 1);
    let loaded = b.load().await.unwrap().expect("saved");
    assert_eq!(loaded, s);

    let mut next = loaded;
    let r = next.steps.get_mut("cfn-stack/karpenter").unwrap();
    r.status = StepStatus::Done;
    r.outputs = json!({"roleArn": "arn:aws:iam::111122223333:role/KarpenterNodeRole-c1"});
    r.finished_at = Some("2026-01-02T03:09:00Z".into());
    b.save(&mut next).await.unwrap();
    b.save(&mut next).await.unwrap();
    assert_eq!(next.serial, 3);

    // A fresh store on the same location sees the same thing.
    let again = bed.store("roundtrip").load().await.unwrap().expect("saved");
    assert_eq!(again, next);
    assert_eq!(again.lineage, lineage, "the lineage is fixed at creation");
    assert_eq!(again.tool_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(again.region.as_deref(), Some("us-west-2"));

    let backup = bed.get_raw("roundtrip", ".backup").await.expect("a backup of the previous state");
    let backup = karpctl::state::decode(&backup).unwrap();
    assert_eq!((backup.serial, backup.lineage.as_str()), (2, lineage.as_str()), "the backup holds the previous serial");
}

async fn a_record_is_stored_exactly_and_nothing_is_added(bed: &impl Bed) {
    let b = bed.store("exact");
    let mut s = State::new("c1", None);
    let rec = StepRecord {
        kind: "helm_release".into(),
        fingerprint: "sha256:abc".into(),
        status: StepStatus::Failed,
        inputs: json!({
            "zeta": [1, -2, 18446744073709551615u64, 1.5, true, null, "ü ✓ \"quoted\"\n"],
            "alpha": {"nested": {"empty": {}, "list": []}},
        }),
        outputs: json!({"revision": 3}),
        error: Some("helm upgrade failed:\n  timed out".into()),
        started_at: Some("2026-01-02T03:04:05Z".into()),
        finished_at: Some("2026-01-02T03:05:05Z".into()),
    };
    s.steps.insert("helm-release/karpenter".into(), rec.clone());
    s.steps.insert("a-first".into(), record("kube_apply"));
    b.save(&mut s).await.unwrap();

    let loaded = b.load().await.unwrap().unwrap();
    assert_eq!(loaded.steps["helm-release/karpenter"], rec);

    let raw = bed.get_raw("exact", "").await.unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    let doc: Value = serde_json::from_slice(&raw).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&doc), ["cluster", "lineage", "region", "serial", "steps", "tool_version", "version"]);
    let stored = &doc["steps"]["helm-release/karpenter"];
    assert_eq!(
        keys(stored),
        ["error", "fingerprint", "finished_at", "inputs", "kind", "outputs", "started_at", "status"],
        "a record holds exactly the engine's fields"
    );
    assert_eq!(stored["inputs"], rec.inputs);
    assert_eq!(stored["outputs"], rec.outputs);
    assert_eq!(stored["status"], "failed");
    assert_eq!(doc["steps"]["a-first"]["status"], "in_progress");
    // Pretty, with keys sorted at every level, so equal states are equal bytes.
    assert!(text.contains("\n  \"cluster\": \"c1\""), "{text}");
    assert!(text.find("\"alpha\"").unwrap() < text.find("\"zeta\"").unwrap(), "{text}");
    assert!(text.find("\"a-first\"").unwrap() < text.find("\"helm-release/karpenter\"").unwrap());
    assert!(text.ends_with("}\n"));
    assert_eq!(karpctl::state::encode(&loaded).unwrap(), text, "encoding is deterministic");
}

async fn a_newer_version_is_refused(bed: &impl Bed) {
    let b = bed.store("future");
    let future = br#"{"version": 2, "lineage": "6f1c", "serial": 9, "a_field_from_the_future": {"x": 1}}"#;
    bed.put_raw("future", "", future).await;
    let e = b.load().await.expect_err("a newer version is refused");
    assert!(matches!(e, StateError::NewerVersion { found: 2, supported: 1, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("newer karpctl (version 2)") && msg.contains("upgrade karpctl"), "{msg}");
    assert!(msg.contains(&b.describe()), "{msg}");
    assert_eq!(bed.get_raw("future", "").await.unwrap(), future, "left as it was");
}

async fn unreadable_content_is_refused_and_left_untouched(bed: &impl Bed) {
    let mut good = State::new("c1", None);
    good.serial = 4;
    good.steps.insert("x".into(), record("cfn_stack"));
    let full = karpctl::state::encode(&good).unwrap().into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("whitespace", b"  \n".to_vec()),
        ("truncated", full[..full.len() / 2].to_vec()),
        ("not-utf8", [&full[..20], &[0xff, 0xfe], &full[20..]].concat()),
        ("not-json", b"serial = 3\n".to_vec()),
        ("no-version", br#"{"serial": 3}"#.to_vec()),
        ("version-zero", br#"{"version": 0}"#.to_vec()),
        ("version-text", br#"{"version": "1"}"#.to_vec()),
        ("array", b"[1, 2]".to_vec()),
        ("bad-status", String::from_utf8(full.clone()).unwrap().replace("in_progress", "sideways").into_bytes()),
        ("unknown-field", String::from_utf8(full.clone()).unwrap().replacen("{", "{\"secret\": \"x\",", 1).into_bytes()),
        ("trailing", [&full[..], b"{}"].concat()),
    ];
    for (label, bytes) in cases {
        let name = format!("corrupt-{label}");
        bed.put_raw(&name, "", &bytes).await;
        let b = bed.store(&name);
        let e = match b.load().await {
            Err(e) => e,
            Ok(s) => panic!("{label}: loaded {s:?}"),
        };
        let StateError::Corrupt { location, line, byte, .. } = &e else { panic!("{label}: {e:?}") };
        assert_eq!(location.as_ref(), Some(&b.location()), "{label}");
        let msg = e.to_string();
        assert!(msg.contains(&b.describe()) && msg.contains("unreadable"), "{label}: {msg}");
        match label {
            "empty" | "whitespace" => assert_eq!(*byte, Some(0), "{label}: {msg}"),
            "not-utf8" => assert_eq!(*byte, Some(20), "{label}: {msg}"),
            "truncated" | "not-json" | "bad-status" | "trailing" => {
                assert!(line.is_some() && msg.contains(" at line "), "{label}: {msg}")
            }
            _ => {}
        }
        if label == "bad-status" {
            assert!(msg.contains("steps.x.status"), "names the field: {msg}");
        }
        assert_eq!(bed.get_raw(&name, "").await.unwrap(), bytes, "{label}: the bad content is left as it was");
    }
}

async fn another_clusters_state_is_refused(bed: &impl Bed) {
    let b = bed.store("identity");
    let mut s = State::new("prod-1", None);
    b.save(&mut s).await.unwrap();
    let loaded = b.load().await.unwrap().unwrap();
    loaded.check_identity("prod-1").unwrap();
    let e = loaded.check_identity("staging").expect_err("another cluster's state");
    assert!(matches!(&e, StateError::ForeignCluster { found, expected } if found == "prod-1" && expected == "staging"));
    assert!(e.to_string().contains("`prod-1`") && e.to_string().contains("`staging`"), "{e}");
    loaded.check_lineage(&s.lineage).unwrap();
    let other = State::new("prod-1", None);
    assert!(matches!(loaded.check_lineage(&other.lineage), Err(StateError::ForeignLineage { .. })));
}

async fn a_held_lock_names_its_holder_and_waits_once(bed: &impl Bed) {
    let (a, b) = (bed.store("lock"), bed.store("lock"));
    let holder = LockInfo::for_this_process("karpctl up");
    a.lock(&holder, Duration::from_secs(5), &|h| panic!("nobody holds it, yet told to wait for {h}")).await.unwrap();
    assert_eq!(b.lock_holder().await.unwrap().as_ref(), Some(&holder));
    // Taking it again with the same id is a no-op.
    a.lock(&holder, Duration::ZERO, &|_| {}).await.unwrap();

    let me = LockInfo::for_this_process("karpctl plan");
    let waits = AtomicUsize::new(0);
    let on_wait = |h: &LockInfo| {
        assert_eq!(h, &holder);
        waits.fetch_add(1, Ordering::SeqCst);
    };
    let e = b.lock(&me, Duration::from_millis(400), &on_wait).await.expect_err("held by someone else");
    assert_eq!(waits.load(Ordering::SeqCst), 1, "on_wait is called once, when waiting starts");
    assert!(matches!(&e, StateError::Locked { holder: h, stale: false, .. } if **h == holder), "{e:?}");
    let msg = e.to_string();
    for part in [holder.pid.to_string(), holder.host.clone(), holder.user.clone(), holder.command.clone(), holder.started_at.clone()] {
        assert!(msg.contains(&part), "`{msg}` lacks {part}");
    }
    assert!(msg.contains(&b.describe()), "{msg}");
    assert_eq!(e.help().unwrap(), format!("karpctl state unlock {}", holder.id));
    assert_eq!(b.lock_holder().await.unwrap().as_ref(), Some(&holder), "a failed lock leaves the holder's lock alone");
    a.unlock(&holder.id).await.unwrap();
}

async fn unlock_needs_the_holders_id(bed: &impl Bed) {
    let (a, b) = (bed.store("unlock"), bed.store("unlock"));
    let holder = LockInfo::for_this_process("karpctl up");
    a.lock(&holder, Duration::from_secs(5), &|_| {}).await.unwrap();
    let e = b.unlock("not-the-id").await.expect_err("wrong id");
    assert!(matches!(&e, StateError::NotLockHolder { holder: h, id, .. } if **h == holder && id == "not-the-id"), "{e:?}");
    assert!(e.to_string().contains(&holder.id) && e.to_string().contains(&holder.command), "{e}");
    assert_eq!(b.lock_holder().await.unwrap().as_ref(), Some(&holder), "still held");

    b.unlock(&holder.id).await.unwrap();
    assert!(a.lock_holder().await.unwrap().is_none());
    let me = LockInfo::for_this_process("karpctl rollback");
    b.lock(&me, Duration::from_secs(5), &|h| panic!("released, yet told to wait for {h}")).await.unwrap();
    assert_eq!(a.lock_holder().await.unwrap(), Some(me.clone()));
    b.unlock(&me.id).await.unwrap();
}

async fn a_waiter_gets_the_lock_once_it_is_released(bed: &impl Bed) {
    let (a, b) = (bed.store("handover"), bed.store("handover"));
    let first = LockInfo::for_this_process("karpctl up");
    let second = LockInfo::for_this_process("karpctl up");
    a.lock(&first, Duration::from_secs(5), &|_| {}).await.unwrap();
    let waits = AtomicUsize::new(0);
    let on_wait = |h: &LockInfo| {
        assert_eq!(h.id, first.id);
        waits.fetch_add(1, Ordering::SeqCst);
    };
    let (got, released) = tokio::join!(b.lock(&second, Duration::from_secs(60), &on_wait), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.unlock(&first.id).await
    });
    released.unwrap();
    got.expect("the lock is taken once the holder lets go");
    assert_eq!(waits.load(Ordering::SeqCst), 1);
    assert_eq!(a.lock_holder().await.unwrap().map(|h| h.id), Some(second.id.clone()));
    b.unlock(&second.id).await.unwrap();
}

async fn a_concurrent_writer_makes_our_save_conflict(bed: &impl Bed) {
    // Both start from an existing state; they write in between.
    let ours = bed.store("cas");
    let mut s = State::new("c1", None);
    ours.save(&mut s).await.unwrap();
    let mut mine = ours.load().await.unwrap().unwrap();
    let theirs = bed.store("cas");
    let mut t = theirs.load().await.unwrap().unwrap();
    t.steps.insert("theirs".into(), record("cfn_stack"));
    theirs.save(&mut t).await.unwrap();
    mine.steps.insert("mine".into(), record("kube_apply"));
    let e = ours.save(&mut mine).await.expect_err("they wrote since we read");
    assert!(matches!(&e, StateError::Conflict { location } if *location == ours.location()), "{e:?}");
    assert!(e.to_string().contains("someone else wrote the state") && e.to_string().contains("re-run"), "{e}");
    assert!(e.help().is_some());
    assert_eq!(mine.serial, 1, "a failed save leaves the serial as it was");
    let stored = karpctl::state::decode(&bed.get_raw("cas", "").await.unwrap()).unwrap();
    assert_eq!(stored, t, "their write is intact");
    // Reading again resolves it.
    let mut fresh = ours.load().await.unwrap().unwrap();
    ours.save(&mut fresh).await.unwrap();
    assert_eq!(fresh.serial, 3);

    // Both start from nothing; they create it first.
    let (a, b) = (bed.store("cas-new"), bed.store("cas-new"));
    assert!(a.load().await.unwrap().is_none() && b.load().await.unwrap().is_none());
    let mut theirs = State::new("c1", None);
    b.save(&mut theirs).await.unwrap();
    let e = a.save(&mut State::new("c1", None)).await.expect_err("they created it since we read");
    assert!(matches!(e, StateError::Conflict { .. }), "{e:?}");
    let stored = karpctl::state::decode(&bed.get_raw("cas-new", "").await.unwrap()).unwrap();
    assert_eq!(stored.lineage, theirs.lineage);

    // A store that never loaded may only create.
    let blind = bed.store("cas");
    let e = blind.save(&mut State::new("c1", None)).await.expect_err("never overwrite unread state");
    assert!(matches!(e, StateError::Conflict { .. }), "{e:?}");
}

// ------------------------------------------------------------------------------------------ local

#[tokio::test]
async fn local_backend_conforms() {
    conformance(&LocalBed::new("conformance")).await;
}

#[tokio::test]
async fn local_files_are_private_and_the_previous_copy_is_kept() {
    use std::os::unix::fs::PermissionsExt;
    let bed = LocalBed::new("files");
    let b = bed.store("p");
    let mut s = State::new("c1", None);
    b.save(&mut s).await.unwrap();
    assert!(bed.get_raw("p", ".backup").await.is_none(), "nothing to back up on the first save");
    s.steps.insert("x".into(), record("cfn_stack"));
    b.save(&mut s).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let path = bed.path("p");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&with_suffix(&path, ".backup")), 0o600);
    let backup = karpctl::state::decode(&bed.get_raw("p", ".backup").await.unwrap()).unwrap();
    assert_eq!(backup.serial, 1);
    assert!(backup.steps.is_empty());
    let lock = LockInfo::for_this_process("karpctl up");
    b.lock(&lock, Duration::from_secs(1), &|_| {}).await.unwrap();
    assert_eq!(mode(&with_suffix(&path, ".lock")), 0o600);
    let on_disk: LockInfo = serde_json::from_slice(&bed.get_raw("p", ".lock").await.unwrap()).unwrap();
    assert_eq!(on_disk, lock, "the lock file holds the holder");
    b.unlock(&lock.id).await.unwrap();
    assert!(!with_suffix(&path, ".lock").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&bed.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "only the state and its backup: {leftovers:?}");
}

#[tokio::test]
async fn a_lock_of_a_dead_process_on_this_host_is_reported_as_stale() {
    let bed = LocalBed::new("stale");
    let b = bed.store("s");
    let mut child = Command::new("true").spawn().expect("spawning true");
    let pid = child.id();
    child.wait().unwrap();
    let mut dead = LockInfo::for_this_process("karpctl up");
    dead.pid = pid;
    let lock_json = serde_json::to_vec(&dead).unwrap();
    bed.put_raw("s", ".lock", &lock_json).await;

    let me = LockInfo::for_this_process("karpctl up");
    let e = b
        .lock(&me, Duration::from_secs(30), &|h| panic!("a dead holder is not waited for: {h}"))
        .await
        .expect_err("never taken over silently");
    assert!(matches!(&e, StateError::Locked { holder, stale: true, .. } if **holder == dead), "{e:?}");
    assert!(e.to_string().contains(&format!("stale lock: process {pid} on this host is gone")), "{e}");
    assert_eq!(e.help().unwrap(), format!("karpctl state unlock {}", dead.id));
    assert_eq!(bed.get_raw("s", ".lock").await.unwrap(), lock_json, "the stale lock is left for `state unlock`");

    // The same pid on another host may be alive: not stale, just held.
    let mut remote = dead.clone();
    remote.host = format!("{}-elsewhere", dead.host);
    bed.put_raw("s", ".lock", &serde_json::to_vec(&remote).unwrap()).await;
    let e = b.lock(&me, Duration::from_millis(100), &|_| {}).await.expect_err("held");
    assert!(matches!(&e, StateError::Locked { stale: false, .. }), "{e:?}");
    assert!(!e.to_string().contains("stale lock"), "{e}");

    b.unlock(&remote.id).await.unwrap();
    b.lock(&me, Duration::from_secs(1), &|_| {}).await.expect("free after `state unlock`");
}

#[tokio::test]
async fn an_unreadable_lock_is_reported_with_how_to_clear_it() {
    let bed = LocalBed::new("badlock");
    let b = bed.store("s");
    bed.put_raw("s", ".lock", b"{\"id\": ").await;
    let me = LockInfo::for_this_process("karpctl up");
    let e = b.lock(&me, Duration::from_millis(200), &|_| {}).await.expect_err("unreadable lock");
    assert!(matches!(e, StateError::LockUnreadable { .. }), "{e:?}");
    assert!(e.help().unwrap().starts_with(&format!("rm {}", with_suffix(&bed.path("s"), ".lock").display())));
    assert!(b.lock_holder().await.is_err());
}

/// Two OS threads, each with its own runtime and its own store on the same
/// file: one holds the lock while the other times out, then both hammer
/// lock → load → save → unlock, and no update is lost.
#[test]
fn two_threads_with_their_own_runtimes_exclude_each_other() {
    const ROUNDS: u64 = 15;
    let bed = LocalBed::new("threads");
    let path = bed.path("t");
    let rt = || tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();

    // Contention: A holds it; B gives up after its timeout, naming A.
    let (held_tx, held_rx) = mpsc::channel::<LockInfo>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let p = path.clone();
    let holder = std::thread::spawn(move || {
        rt().block_on(async {
            let a = Backend::Local(LocalStore::new(p));
            let me = LockInfo::for_this_process("thread A");
            a.lock(&me, Duration::from_secs(5), &|_| {}).await.unwrap();
            held_tx.send(me.clone()).unwrap();
            done_rx.recv().unwrap();
            a.unlock(&me.id).await.unwrap();
        })
    });
    let a_info = held_rx.recv().unwrap();
    let b = Backend::Local(LocalStore::new(path.clone()));
    let err = rt().block_on(b.lock(&LockInfo::for_this_process("thread B"), Duration::from_millis(200), &|_| {}));
    assert!(matches!(&err, Err(StateError::Locked { holder, .. }) if holder.id == a_info.id), "{err:?}");
    done_tx.send(()).unwrap();
    holder.join().unwrap();

    // Mutual exclusion: every increment survives.
    rt().block_on(async {
        let mut s = State::new("c1", None);
        s.steps.insert("counter".into(), StepRecord { outputs: json!({"n": 0}), ..record("counter") });
        b.save(&mut s).await.unwrap();
    });
    let workers: Vec<_> = ["x", "y"]
        .into_iter()
        .map(|who| {
            let p = path.clone();
            std::thread::spawn(move || {
                rt().block_on(async {
                    let store = Backend::Local(LocalStore::new(p));
                    for _ in 0..ROUNDS {
                        let me = LockInfo::for_this_process(&format!("worker {who}"));
                        store.lock(&me, Duration::from_secs(60), &|_| {}).await.unwrap();
                        let mut s = store.load().await.unwrap().unwrap();
                        let r = s.steps.get_mut("counter").unwrap();
                        let n = r.outputs["n"].as_u64().unwrap();
                        tokio::task::yield_now().await;
                        r.outputs = json!({"n": n + 1});
                        store.save(&mut s).await.unwrap();
                        store.unlock(&me.id).await.unwrap();
                    }
                })
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let s = rt().block_on(b.load()).unwrap().unwrap();
    assert_eq!(s.steps["counter"].outputs["n"], 2 * ROUNDS);
    assert_eq!(s.serial, 2 * ROUNDS + 1);
    assert!(rt().block_on(b.lock_holder()).unwrap().is_none());
}

#[tokio::test]
async fn a_failed_write_leaves_an_errored_copy_and_says_how_to_push_it() {
    let bed = LocalBed::new("errored");
    let path = bed.path("w");
    // Something that is not a state file sits where the state goes.
    std::fs::create_dir_all(path.join("in-the-way")).unwrap();
    let b = bed.store("w");
    let mut s = State::new("c1", None);
    s.steps.insert("x".into(), record("cfn_stack"));
    let e = b.save(&mut s).await.expect_err("the path is a directory");
    let errored = with_suffix(&path, ".errored");
    assert!(matches!(&e, StateError::WriteFailed { errored: Some(p), .. } if *p == errored), "{e:?}");
    assert_eq!(e.help().unwrap(), format!("karpctl state push {}", errored.display()));
    assert!(e.to_string().contains(&errored.display().to_string()), "{e}");
    assert_eq!(s.serial, 0, "a failed save leaves the caller's state as it was");
    let kept = karpctl::state::decode(&std::fs::read(&errored).unwrap()).unwrap();
    assert_eq!(kept.steps, s.steps, "the errored copy holds the state that could not be written");
    assert_eq!(kept.lineage, s.lineage);
    assert!(path.join("in-the-way").is_dir(), "what was there is left alone");
}

#[tokio::test]
async fn an_unwritable_directory_puts_the_errored_copy_in_the_temp_dir() {
    let bed = LocalBed::new("unwritable");
    // The state's directory cannot be created (a file is in the way), so neither
    // the state nor `<path>.errored` can be written there.
    std::fs::write(bed.dir.join("blocker"), b"").unwrap();
    let name = format!("u-{}.state.json", std::process::id());
    let b = Backend::Local(LocalStore::new(bed.dir.join("blocker").join(&name)));
    let e = b.save(&mut State::new("c1", None)).await.expect_err("cannot write there");
    let fallback = std::env::temp_dir().join(format!("karpctl-{name}.errored"));
    assert!(matches!(&e, StateError::WriteFailed { errored: Some(p), .. } if *p == fallback), "{e:?}");
    assert_eq!(e.help().unwrap(), format!("karpctl state push {}", fallback.display()));
    karpctl::state::decode(&std::fs::read(&fallback).unwrap()).unwrap();
    std::fs::remove_file(&fallback).unwrap();

    // A read-only directory does the same, except for root, whom it does not stop.
    use std::os::unix::fs::PermissionsExt;
    let ro = bed.dir.join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"").is_ok() {
        eprintln!("skipping the read-only-directory case: this user can write to a 0555 directory (root)");
    } else {
        let b = Backend::Local(LocalStore::new(ro.join(&name)));
        let e = b.save(&mut State::new("c1", None)).await.expect_err("read-only directory");
        assert!(matches!(&e, StateError::WriteFailed { errored: Some(p), .. } if *p == fallback), "{e:?}");
        assert!(e.help().unwrap().starts_with("karpctl state push "));
        std::fs::remove_file(&fallback).unwrap();
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_corrupt_file_points_at_the_backup_and_pushing_over_it_keeps_it() {
    let bed = LocalBed::new("corrupt");
    let b = bed.store("c");
    let mut s = State::new("c1", None);
    b.save(&mut s).await.unwrap();
    b.save(&mut s).await.unwrap();
    let backup_before = bed.get_raw("c", ".backup").await.unwrap();
    bed.put_raw("c", "", b"{\"version\": 1, \"lin").await;

    let e = b.load().await.expect_err("truncated");
    let backup = with_suffix(&bed.path("c"), ".backup");
    assert_eq!(e.help().unwrap(), format!("karpctl state push {}", backup.display()));
    assert!(e.to_string().contains("line 1"), "{e}");

    // What `state push` does: save over it. The bad file is moved aside, never
    // overwritten, and the backup (the last good copy) is not replaced by it.
    let mut pushed = karpctl::state::decode(&backup_before).unwrap();
    b.save(&mut pushed).await.unwrap();
    assert_eq!(bed.get_raw("c", ".corrupt").await.unwrap(), b"{\"version\": 1, \"lin");
    assert_eq!(bed.get_raw("c", ".backup").await.unwrap(), backup_before);
    assert_eq!(b.load().await.unwrap().unwrap().lineage, s.lineage);
}

#[tokio::test]
async fn a_newer_state_is_never_saved_over() {
    let bed = LocalBed::new("newer");
    let future = br#"{"version": 7}"#;
    bed.put_raw("n", "", future).await;
    let e = bed.store("n").save(&mut State::new("c1", None)).await.expect_err("refused");
    assert!(matches!(e, StateError::NewerVersion { found: 7, .. }), "{e:?}");
    assert_eq!(bed.get_raw("n", "").await.unwrap(), future);
    assert!(bed.get_raw("n", ".errored").await.is_none() && bed.get_raw("n", ".backup").await.is_none());
}

#[test]
fn decoding_a_document_outside_a_store_names_no_location() {
    let e = karpctl::state::decode(b"{\"version\": 1,").unwrap_err();
    assert!(matches!(e, StateError::Corrupt { location: None, line: Some(1), .. }), "{e:?}");
    assert!(e.to_string().starts_with("the state document is unreadable at line 1"), "{e}");
    assert!(e.help().is_none());
    let s = State::new("c1", Some("eu-west-1"));
    assert_eq!(karpctl::state::decode(karpctl::state::encode(&s).unwrap().as_bytes()).unwrap(), s);
    assert_eq!(Location::S3 { bucket: "b".into(), key: "k/x.json".into() }.to_string(), "s3://b/k/x.json");
}

// --------------------------------------------------------------------------------------------- S3

#[tokio::test]
async fn s3_backend_conforms() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let bed = s3_bed(&emu, "karpctl-state-it").await;
    conformance(&bed).await;

    // An unreadable object: refused on load, and a later save (`state push`)
    // moves it to `<key>.corrupt` before writing, never overwriting it unkept.
    bed.put_raw("s3-corrupt", "", b"garbage").await;
    let b = bed.store("s3-corrupt");
    let e = b.load().await.expect_err("garbage");
    let help = e.help().unwrap();
    assert!(help.contains("s3://karpctl-state-it/karpctl/s3-corrupt.state.json.backup") && help.contains("karpctl state push"), "{help}");
    let mut s = State::new("c1", None);
    b.save(&mut s).await.unwrap();
    assert_eq!(bed.get_raw("s3-corrupt", ".corrupt").await.unwrap(), b"garbage");
    assert_eq!(b.load().await.unwrap().unwrap(), s);

    // SDK errors carry bucket, key, code, message and request id.
    let missing = Backend::S3(S3Store::new(bed.client.clone(), "no-such-bucket-here", "k.json"));
    let e = missing.load().await.expect_err("no bucket");
    let StateError::S3(f) = &e else { panic!("{e:?}") };
    assert_eq!((f.op, f.bucket.as_str(), f.key.as_str(), f.code.as_deref()), ("GetObject", "no-such-bucket-here", "k.json", Some("NoSuchBucket")));
    assert_eq!(f.status, Some(404));
    assert!(f.request_id.is_some() && !f.message.is_empty(), "{f:?}");
    assert!(e.to_string().contains("s3://no-such-bucket-here/k.json") && e.to_string().contains("NoSuchBucket"), "{e}");
    assert_eq!(e.help().unwrap(), "aws s3 mb s3://no-such-bucket-here");

    // A failed write keeps an errored copy when asked to.
    let errored = scratch("s3-errored").join("x.state.json.errored");
    let failing = Backend::S3(S3Store::new(bed.client.clone(), "no-such-bucket-here", "k.json").with_errored_copy(errored.clone()));
    assert!(failing.load().await.is_err());
    let e = failing.save(&mut State::new("c1", None)).await.expect_err("no bucket");
    assert!(matches!(&e, StateError::WriteFailed { errored: Some(p), .. } if *p == errored), "{e:?}");
    assert_eq!(e.help().unwrap(), format!("karpctl state push {}", errored.display()));
    karpctl::state::decode(&std::fs::read(&errored).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(errored.parent().unwrap());
}

/// An S3 bed on a fresh emulator bucket.
async fn s3_bed(emu: &AwsEmulator, bucket: &str) -> S3Bed {
    let cfg = emu.sdk_config("us-east-1").await;
    let client = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&cfg).force_path_style(true).build());
    client.create_bucket().bucket(bucket).send().await.expect("CreateBucket");
    S3Bed { client, bucket: bucket.to_string() }
}

// ---------------------------------------------------------------------------------------- helpers

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
