/*!
Where karpctl remembers what it did to a cluster, so a re-run skips finished
steps, resumes interrupted ones and never loses track of what it created.

The state is one versioned JSON document (`codec.rs` has one reader per
schema version). It lives in a local file or an S3 object behind the same
[`Backend`] interface, and every write guards against a second writer: a local
file by an exclusive lock file, an S3 object by a lock object *and*
compare-and-swap (`If-Match` on the ETag that was read). The local file has
no compare-and-swap: only the lock keeps two writers apart there. Nothing here decides
what a step means; the engine owns the records, this module only keeps them
safe.
*/

mod codec;
mod error;
mod local;
mod lock;
#[cfg(feature = "cli")]
mod s3;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use codec::{decode, encode};
pub use error::{S3Failure, StateError};
pub use local::LocalStore;
pub use lock::LockInfo;
#[cfg(feature = "cli")]
pub use s3::S3Store;

/// The schema version this karpctl writes (and the newest it reads).
pub const STATE_VERSION: u32 = 1;

/// What karpctl knows about one cluster: one record per step.
///
/// Holds only what the engine hands it (non-secret inputs and outputs); no
/// field is added on the way to storage, so what is saved is exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// Fixed at creation; tells two states with the same name apart.
    pub lineage: String,
    /// Bumped on every save.
    pub serial: u64,
    /// The karpctl that last wrote this state.
    pub tool_version: String,
    pub cluster: String,
    pub region: Option<String>,
    pub steps: BTreeMap<String, StepRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub kind: String,
    pub fingerprint: String,
    pub status: StepStatus,
    pub inputs: serde_json::Value,
    pub outputs: serde_json::Value,
    pub error: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    InProgress,
    Done,
    Failed,
}

impl State {
    /// A fresh state (serial 0, new lineage) for `cluster`.
    pub fn new(cluster: &str, region: Option<&str>) -> State {
        State {
            version: STATE_VERSION,
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            cluster: cluster.to_string(),
            region: region.map(str::to_string),
            steps: BTreeMap::new(),
        }
    }

    /// Refuses a state that belongs to another cluster.
    pub fn check_identity(&self, cluster: &str) -> Result<(), StateError> {
        if self.cluster == cluster {
            Ok(())
        } else {
            Err(StateError::ForeignCluster { found: self.cluster.clone(), expected: cluster.to_string() })
        }
    }

    /// Refuses a state of another lineage (a different state under the same name).
    pub fn check_lineage(&self, lineage: &str) -> Result<(), StateError> {
        if self.lineage == lineage {
            Ok(())
        } else {
            Err(StateError::ForeignLineage { found: self.lineage.clone(), expected: lineage.to_string() })
        }
    }
}

/// The mode of every file karpctl writes a state, backup, lock or unsaved copy to.
pub(crate) const MODE: u32 = 0o600;

/// Writes a state that could not be saved to the first of `candidates` that
/// takes it (privately, atomically) and returns that path, so the user can
/// `karpctl state push` it; `None` when none could be written.
pub(crate) fn keep_unsaved(candidates: &[PathBuf], data: &[u8]) -> Option<PathBuf> {
    candidates.iter().find(|p| crate::fsutil::write_atomic(p, data, MODE).is_ok()).cloned()
}

/// `karpctl-<name>.errored` in the temp directory: the last place to keep an
/// unsaved state when the usual one cannot be written.
pub(crate) fn errored_in_temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("karpctl-{name}.errored"))
}

/// Where a state is kept; errors name it with these fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local { path: PathBuf },
    S3 { bucket: String, key: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local { path } => write!(f, "local file {}", path.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// The one interface the engine and `ops` use, whatever the storage.
#[cfg(feature = "cli")]
pub enum Backend {
    Local(LocalStore),
    S3(S3Store),
}

#[cfg(feature = "cli")]
impl Backend {
    /// The stored state, or `None` when none has been written yet.
    pub async fn load(&self) -> Result<Option<State>, StateError> {
        match self {
            Backend::Local(b) => b.load().await,
            Backend::S3(b) => b.load().await,
        }
    }

    /// Bumps `s.serial` (and records this karpctl's version), then writes
    /// atomically. On failure `s` is left as it was.
    pub async fn save(&self, s: &mut State) -> Result<(), StateError> {
        match self {
            Backend::Local(b) => b.save(s).await,
            Backend::S3(b) => b.save(s).await,
        }
    }

    /// Takes the lock, waiting up to `timeout` for a holder to let go;
    /// `on_wait` is told who holds it, once, when waiting starts.
    pub async fn lock(
        &self,
        info: &LockInfo,
        timeout: std::time::Duration,
        on_wait: &(dyn Fn(&LockInfo) + Sync),
    ) -> Result<(), StateError> {
        match self {
            Backend::Local(b) => b.lock(info, timeout, on_wait).await,
            Backend::S3(b) => b.lock(info, timeout, on_wait).await,
        }
    }

    /// Releases the lock if `id` is the holder's; no lock at all is fine.
    pub async fn unlock(&self, id: &str) -> Result<(), StateError> {
        match self {
            Backend::Local(b) => b.unlock(id).await,
            Backend::S3(b) => b.unlock(id).await,
        }
    }

    pub async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        match self {
            Backend::Local(b) => b.lock_holder().await,
            Backend::S3(b) => b.lock_holder().await,
        }
    }

    pub fn location(&self) -> Location {
        match self {
            Backend::Local(b) => b.location(),
            Backend::S3(b) => b.location(),
        }
    }

    /// `local file .karpctl/x.state.json` or `s3://bucket/key`.
    pub fn describe(&self) -> String {
        self.location().to_string()
    }
}
