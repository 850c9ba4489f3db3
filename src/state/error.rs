//! Every way loading, saving or locking a state can fail. Messages are
//! self-contained (they include their cause), and each recoverable one carries
//! the exact next command in [`StateError::help`]. Bulky payloads are boxed so
//! a `Result<_, StateError>` stays small.

use std::fmt;
use std::path::PathBuf;

use super::{LockInfo, Location};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{action} {}: {cause}", path.display())]
    Io { action: &'static str, path: PathBuf, cause: std::io::Error },

    #[error("{} is unreadable{}: {problem}{}", place(location), position(*line, *column, *byte), if location.is_some() { "; it was left untouched" } else { "" })]
    Corrupt {
        /// `None` for a document read outside a store ([`super::decode`]).
        location: Option<Location>,
        problem: String,
        line: Option<u32>,
        column: Option<u32>,
        byte: Option<usize>,
        /// Whether a previous copy (`<path>.backup`, `<key>.backup`) exists to restore from.
        backup: bool,
    },

    #[error("{} was written by a newer karpctl (version {found}); upgrade karpctl (this one reads state version {supported})", place(location))]
    NewerVersion { location: Option<Location>, found: u64, supported: u32 },

    #[error("the state belongs to cluster `{found}`, not `{expected}`")]
    ForeignCluster { found: String, expected: String },

    #[error("the state has lineage {found}, not the expected {expected}: it is a different state kept under the same name")]
    ForeignLineage { found: String, expected: String },

    #[error("the state in {location} is locked by {holder}{}", stale_note(holder, *stale))]
    Locked { location: Location, holder: Box<LockInfo>, stale: bool },

    #[error("the lock on {location} ({lock}) cannot be read: {detail}")]
    LockUnreadable { location: Location, lock: String, detail: String },

    #[error("not unlocking {location}: the lock is held by {holder} with lock id {}, not {id}", holder.id)]
    NotLockHolder { location: Location, id: String, holder: Box<LockInfo> },

    #[error("someone else wrote the state in {location} since it was read; re-run")]
    Conflict { location: Location },

    #[error("{0}")]
    S3(Box<S3Failure>),

    #[error("could not save the state to {location}: {cause}{}", match errored {
        Some(p) => format!("; the state that could not be written was saved to {}", p.display()),
        None => "; the state that could not be written was not saved anywhere else either".to_string(),
    })]
    WriteFailed { location: Location, cause: Box<StateError>, errored: Option<PathBuf> },
}

/// A failed S3 call: which, on what, and what AWS said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Failure {
    /// The S3 operation, e.g. `PutObject`.
    pub op: &'static str,
    pub bucket: String,
    pub key: String,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// AWS error code, e.g. `AccessDenied`.
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3 {} on s3://{}/{} failed: ", self.op, self.bucket, self.key)?;
        if let Some(c) = &self.code {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(r) = &self.request_id {
            write!(f, " (request id {r})")?;
        }
        Ok(())
    }
}

fn place(location: &Option<Location>) -> String {
    match location {
        Some(l) => format!("the state in {l}"),
        None => "the state document".into(),
    }
}

fn position(line: Option<u32>, column: Option<u32>, byte: Option<usize>) -> String {
    match (line, column, byte) {
        (Some(l), Some(c), _) => format!(" at line {l}, column {c}"),
        (Some(l), None, _) => format!(" at line {l}"),
        (None, _, Some(b)) => format!(" at byte {b}"),
        _ => String::new(),
    }
}

fn stale_note(holder: &LockInfo, stale: bool) -> String {
    if stale {
        format!("; stale lock: process {} on this host is gone", holder.pid)
    } else {
        String::new()
    }
}

impl StateError {
    /// The exact next command, for situations a user can recover from.
    pub fn help(&self) -> Option<String> {
        match self {
            StateError::Locked { holder, .. } => Some(format!("karpctl state unlock {}", holder.id)),
            StateError::NotLockHolder { holder, .. } => {
                Some(format!("only if that run is gone: karpctl state unlock {}", holder.id))
            }
            StateError::WriteFailed { errored: Some(p), .. } => Some(format!("karpctl state push {}", p.display())),
            StateError::WriteFailed { cause, errored: None, .. } => cause.help(),
            StateError::Corrupt { location: Some(location), backup: true, .. } => Some(match location {
                Location::Local { path } => format!("karpctl state push {}.backup", path.display()),
                Location::S3 { bucket, key } => {
                    let name = key.rsplit('/').next().unwrap_or(key);
                    format!("aws s3 cp s3://{bucket}/{key}.backup ./{name}.backup && karpctl state push ./{name}.backup")
                }
            }),
            StateError::Corrupt { location: Some(location), backup: false, .. } => Some(match location {
                Location::Local { path } => format!(
                    "mv {p} {p}.corrupt   # keeps it; the next `karpctl up` observes what exists and records it again",
                    p = path.display()
                ),
                Location::S3 { bucket, key } => format!(
                    "aws s3 mv s3://{bucket}/{key} s3://{bucket}/{key}.corrupt   # keeps it; the next `karpctl up` observes what exists and records it again"
                ),
            }),
            StateError::Conflict { .. } => Some("re-run the same command: it reads the newer state first".into()),
            StateError::LockUnreadable { location, lock, .. } => Some(match location {
                Location::Local { .. } => format!("rm {lock}   # once no karpctl run is using {location}"),
                Location::S3 { bucket, .. } => {
                    format!("aws s3 rm s3://{bucket}/{lock}   # once no karpctl run is using {location}")
                }
            }),
            StateError::ForeignCluster { .. } | StateError::ForeignLineage { .. } => {
                Some("point `state.path` (or `state.s3.key`) in the config file at this cluster's own state".into())
            }
            StateError::S3(f) if f.code.as_deref() == Some("NoSuchBucket") => {
                Some(format!("aws s3 mb s3://{}", f.bucket))
            }
            _ => None,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> StateError {
        StateError::Io { action, path: path.into(), cause }
    }
}
