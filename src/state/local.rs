//! A state in a local file. Writes go through [`crate::fsutil::write_atomic`]
//! (mode 0600); the copy being replaced is kept as `<path>.backup`; a write
//! that fails leaves the unsaved state in `<path>.errored`. The lock is
//! `<path>.lock`, created exclusively and holding the holder's [`LockInfo`].

use std::ffi::OsString;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::codec::{self, Problem};
use super::lock::{self, Attempt};
use super::{LockInfo, Location, State, StateError, MODE};
use crate::fsutil::{create_private_dir_all, remove_orphaned_temps, write_atomic};

pub struct LocalStore {
    path: PathBuf,
}

impl LocalStore {
    pub fn new(path: PathBuf) -> LocalStore {
        LocalStore { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<path>.backup`: the copy replaced by the last save.
    pub fn backup_path(&self) -> PathBuf {
        sibling(&self.path, ".backup")
    }

    /// `<path>.lock`.
    pub fn lock_path(&self) -> PathBuf {
        sibling(&self.path, ".lock")
    }

    /// `<path>.errored`: where a state that could not be saved goes.
    pub fn errored_path(&self) -> PathBuf {
        sibling(&self.path, ".errored")
    }

    /// `<path>.corrupt`: where an unreadable state is moved (never overwritten)
    /// when a new state is saved over it, e.g. by `karpctl state push`.
    pub fn corrupt_path(&self) -> PathBuf {
        sibling(&self.path, ".corrupt")
    }

    pub fn location(&self) -> Location {
        Location::Local { path: self.path.clone() }
    }

    pub async fn load(&self) -> Result<Option<State>, StateError> {
        let (path, backup, location) = (self.path.clone(), self.backup_path(), self.location());
        blocking(move || {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StateError::io("reading the state file", &path, e)),
            };
            codec::decode_raw(&bytes).map(Some).map_err(|p| p.at(location, backup.is_file()))
        })
        .await
    }

    pub async fn save(&self, s: &mut State) -> Result<(), StateError> {
        let before = (s.serial, s.tool_version.clone());
        s.serial += 1;
        s.tool_version = env!("CARGO_PKG_VERSION").to_string();
        let data = codec::encode_bytes(s);
        let (path, backup, corrupt, errored, location) =
            (self.path.clone(), self.backup_path(), self.corrupt_path(), self.errored_path(), self.location());
        let result = blocking(move || {
            write_over(&path, &backup, &corrupt, &location, &data)
                .map_err(|cause| failed(location.clone(), cause, &errored, &path, &data))
        })
        .await;
        if result.is_err() {
            (s.serial, s.tool_version) = before;
        }
        result
    }

    pub async fn lock(
        &self,
        info: &LockInfo,
        timeout: Duration,
        on_wait: &(dyn Fn(&LockInfo) + Sync),
    ) -> Result<(), StateError> {
        let lock_path = self.lock_path();
        let data = serde_json::to_vec_pretty(info).expect("lock info serializes");
        let location = self.location();
        lock::acquire(&location, &lock_path.display().to_string(), info, timeout, on_wait, || {
            let (lock_path, data) = (lock_path.clone(), data.clone());
            blocking(move || try_lock(&lock_path, &data))
        })
        .await
    }

    pub async fn unlock(&self, id: &str) -> Result<(), StateError> {
        let (lock_path, location, id) = (self.lock_path(), self.location(), id.to_string());
        blocking(move || {
            let holder = match read_lock(&lock_path)? {
                None => return Ok(()),
                Some(Ok(h)) => h,
                Some(Err(detail)) => {
                    return Err(StateError::LockUnreadable {
                        location,
                        lock: lock_path.display().to_string(),
                        detail,
                    })
                }
            };
            if holder.id != id {
                return Err(StateError::NotLockHolder { location, id, holder: Box::new(holder) });
            }
            match std::fs::remove_file(&lock_path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StateError::io("removing the lock file", &lock_path, e)),
            }
        })
        .await
    }

    pub async fn lock_holder(&self) -> Result<Option<LockInfo>, StateError> {
        let (lock_path, location) = (self.lock_path(), self.location());
        blocking(move || match read_lock(&lock_path)? {
            None => Ok(None),
            Some(Ok(h)) => Ok(Some(h)),
            Some(Err(detail)) => {
                Err(StateError::LockUnreadable { location, lock: lock_path.display().to_string(), detail })
            }
        })
        .await
    }
}

/// Replaces the state file, keeping what it replaces: a readable previous
/// state goes to `.backup`, an unreadable one is moved to `.corrupt` (the
/// backup, likely the last good copy, stays as it is), and a state written by
/// a newer karpctl is never replaced.
fn write_over(path: &Path, backup: &Path, corrupt: &Path, location: &Location, data: &[u8]) -> Result<(), StateError> {
    if let Some(dir) = path.parent() {
        create_private_dir_all(dir).map_err(|e| StateError::io("creating the state directory", dir, e))?;
    }
    // A run killed mid-write leaves its temporary copies; the lock says no one else writes now.
    remove_orphaned_temps(path);
    remove_orphaned_temps(backup);
    match std::fs::read(path) {
        Ok(prev) => match codec::decode_raw(&prev) {
            Ok(_) => write_atomic(backup, &prev, MODE).map_err(|e| StateError::io("writing the backup", backup, e))?,
            Err(p @ Problem::Newer { .. }) => return Err(p.at(location.clone(), false)),
            Err(Problem::Corrupt { .. }) => std::fs::rename(path, corrupt)
                .map_err(|e| StateError::io("moving the unreadable state aside to", corrupt, e))?,
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(StateError::io("reading the current state to back it up", path, e)),
    }
    write_atomic(path, data, MODE).map_err(|e| StateError::io("writing the state file", path, e))
}

/// The error for a failed save, after putting the unsaved state somewhere:
/// `<path>.errored`, or the temp directory when that directory is not writable.
fn failed(location: Location, cause: StateError, errored: &Path, path: &Path, data: &[u8]) -> StateError {
    if let StateError::NewerVersion { .. } = cause {
        return cause; // nothing was attempted; there is nothing to recover
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    let errored = super::keep_unsaved(&[errored.to_path_buf(), super::errored_in_temp_dir(&name)], data);
    StateError::WriteFailed { location, cause: Box::new(cause), errored }
}

fn try_lock(lock_path: &Path, data: &[u8]) -> Result<Attempt, StateError> {
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir_all(dir).map_err(|e| StateError::io("creating the state directory", dir, e))?;
    }
    // A holder that lets go between our create and our read: try again at once.
    for _ in 0..3 {
        match create_new(lock_path) {
            Ok(mut f) => {
                let written = f.write_all(data).and_then(|()| f.sync_all());
                if let Err(e) = written {
                    drop(f);
                    let _ = std::fs::remove_file(lock_path);
                    return Err(StateError::io("writing the lock file", lock_path, e));
                }
                return Ok(Attempt::Acquired);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => match read_lock(lock_path)? {
                None => continue,
                Some(Ok(h)) => return Ok(Attempt::Held(h)),
                Some(Err(detail)) => return Ok(Attempt::Unreadable(detail)),
            },
            Err(e) => return Err(StateError::io("creating the lock file", lock_path, e)),
        }
    }
    Ok(Attempt::Unreadable("the lock file keeps appearing and disappearing".into()))
}

#[cfg(unix)]
fn create_new(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(MODE).open(p)
}

#[cfg(not(unix))]
fn create_new(p: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(p)
}

/// The holder, `Some(Err(why))` when the file cannot be parsed, `None` when
/// there is no lock. A lock is created, then written: a reader can catch it
/// empty, so an unparsable one is read again briefly before giving up.
fn read_lock(lock_path: &Path) -> Result<Option<Result<LockInfo, String>>, StateError> {
    let mut last = String::new();
    for i in 0..5 {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let bytes = match std::fs::read(lock_path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::io("reading the lock file", lock_path, e)),
        };
        match serde_json::from_slice::<LockInfo>(&bytes) {
            Ok(h) => return Ok(Some(Ok(h))),
            Err(_) if bytes.is_empty() => last = "it is empty".into(),
            Err(e) => last = e.to_string(),
        }
    }
    Ok(Some(Err(last)))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// File work runs off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
