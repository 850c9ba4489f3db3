//! Who holds a state's lock, and the wait-and-retry loop both stores share:
//! a held lock is waited for (saying so once), a lock whose process is known
//! to be dead is reported as stale at once, and nothing is ever taken over
//! silently — `karpctl state unlock` is always a person's decision.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Location, StateError};

/// Written into the lock: enough for a person to find the run that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LockInfo {
    /// A fresh UUID per run; `state unlock` takes it.
    pub id: String,
    pub pid: u32,
    pub host: String,
    pub user: String,
    /// The command line, e.g. `karpctl up`.
    pub command: String,
    /// RFC 3339.
    pub started_at: String,
}

impl LockInfo {
    pub fn for_this_process(command: &str) -> LockInfo {
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            pid: std::process::id(),
            host: this_host(),
            user: this_user(),
            command: command.to_string(),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    /// `process 42 on host h (user u, running `karpctl up`, since …)`.
    pub fn describe(&self) -> String {
        format!(
            "process {} on host {} (user {}, running `{}`, since {})",
            self.pid, self.host, self.user, self.command, self.started_at
        )
    }

    /// True only when the holder ran on this host and its process is gone.
    /// (A reused pid makes a dead holder look alive: then we wait, never steal.)
    pub fn is_stale(&self) -> bool {
        let proc_fs = Path::new("/proc/self").exists();
        proc_fs && self.host == this_host() && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn this_host() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn this_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .or_else(user_from_uid)
        .unwrap_or_else(|| "unknown".into())
}

/// The login name of this process's uid (containers and CI often set no `USER`).
#[cfg(unix)]
fn user_from_uid() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}

#[cfg(not(unix))]
fn user_from_uid() -> Option<String> {
    None
}

/// One try at taking a lock.
pub(crate) enum Attempt {
    Acquired,
    Held(LockInfo),
    /// Held, but its content cannot be read (yet): the reason.
    Unreadable(String),
}

/// Tries `attempt` until it succeeds or `timeout` passes.
pub(crate) async fn acquire<F, Fut>(
    location: &Location,
    lock_name: &str,
    info: &LockInfo,
    timeout: Duration,
    on_wait: &(dyn Fn(&LockInfo) + Sync),
    mut attempt: F,
) -> Result<(), StateError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt, StateError>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(25);
    let mut told = false;
    loop {
        match attempt().await? {
            Attempt::Acquired => return Ok(()),
            // Our own lock (same run): already held.
            Attempt::Held(h) if h.id == info.id => return Ok(()),
            Attempt::Held(h) if h.is_stale() => {
                return Err(StateError::Locked { location: location.clone(), holder: Box::new(h), stale: true })
            }
            Attempt::Held(h) => {
                if start.elapsed() >= timeout {
                    return Err(StateError::Locked { location: location.clone(), holder: Box::new(h), stale: false });
                }
                if !told {
                    told = true;
                    on_wait(&h);
                }
            }
            Attempt::Unreadable(detail) => {
                if start.elapsed() >= timeout {
                    return Err(StateError::LockUnreadable {
                        location: location.clone(),
                        lock: lock_name.to_string(),
                        detail,
                    });
                }
            }
        }
        let left = timeout.saturating_sub(start.elapsed());
        tokio::time::sleep(delay.min(left)).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
