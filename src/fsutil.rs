/*!
The one way karpctl writes files: to a temporary file in the same directory,
fsynced, then renamed over the target, so a crash leaves either the old file or
the new one, never a torn mix.
*/

use std::io::Write;
use std::path::Path;

/// Numbers the temporary files, so concurrent writers of one process never share one.
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn temp_name(name: &str, seq: u64) -> String {
    format!(".{name}.tmp-{}-{seq}", std::process::id())
}

/// Atomically replaces `path` with `data`; `mode` applies on Unix.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(temp_name(name, seq));
    let result = (|| {
        let mut f = open_with_mode(&tmp, mode)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files [`write_atomic`] left beside `path` when the process
/// writing them died between creating and renaming them (kill -9, power loss).
/// Only files of processes known to be gone are removed: those of a live writer,
/// and all of them where liveness cannot be told (no `/proc`), are left alone.
pub fn remove_orphaned_temps(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return };
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Creates the temporary file exclusively. The name is predictable (pid and a
/// counter), and the state's fallback copy goes to the shared temp directory, so
/// whatever already sits at that name (a crashed run's leftover, or a file or
/// symlink someone else planted) is removed, never written through: otherwise the
/// data would land in a file another user owns, or wherever a symlink points.
#[cfg(unix)]
fn open_with_mode(p: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    remove_if_present(p)?;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(p)
}

#[cfg(not(unix))]
fn open_with_mode(p: &Path, _mode: u32) -> std::io::Result<std::fs::File> {
    remove_if_present(p)?;
    std::fs::OpenOptions::new().write(true).create_new(true).open(p)
}

fn remove_if_present(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates `dir` and any missing parents as private directories (0700 on Unix,
/// whatever the umask allows beyond that is dropped too), for files that must not
/// be readable or replaceable by other users: the state, its backup and lock.
/// Directories that already exist keep their mode.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_file_or_symlink_planted_at_the_temp_name_is_never_written_through() {
        let dir = std::env::temp_dir().join(format!("karpctl-fsutil-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let target = dir.join("state.json");
        // Plant at the next names write_atomic will use (other tests may take some).
        let next = SEQ.load(std::sync::atomic::Ordering::Relaxed);
        for seq in next..next + 64 {
            let p = dir.join(temp_name("state.json", seq));
            if seq % 2 == 0 {
                std::os::unix::fs::symlink(&victim, &p).unwrap();
            } else {
                std::fs::write(&p, b"").unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
            }
        }
        write_atomic(&target, b"secret state", 0o600).unwrap();
        write_atomic(&target, b"secret state 2", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "written through a planted symlink");
        assert_eq!(std::fs::read(&target).unwrap(), b"secret state 2");
        assert!(!std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600, "a planted 0666 file was reused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
