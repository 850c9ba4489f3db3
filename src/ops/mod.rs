/*!
One function per command. Each takes parsed arguments, does the work through
the library modules and returns a `Report` for `ui` to show; commands are thin
wrappers over these.
*/

pub mod amis;
pub mod context;
pub mod doctor;
pub mod init;
pub mod live;
pub mod plan;
pub mod render;
pub mod rollout;
pub mod rollback;
pub mod state;
pub mod verify;
pub mod walk;

use crate::config::Diagnostic;

/// What a command produced: text for stdout, notes and warnings for stderr, and
/// the exit code.
#[derive(Debug, Default)]
pub struct Report {
    pub stdout: String,
    pub notes: Vec<String>,
    pub warnings: Vec<Diagnostic>,
    /// `help:` lines (the exact next command), shown after the notes on stderr.
    pub help: Vec<String>,
    pub exit: i32,
    /// Set when the command failed because AWS could not be asked at all; `main`
    /// then points at the local sandbox when there is one.
    pub aws_access: Option<crate::aws::Access>,
}

/// Exit codes (documented in README's table, which a test compares with `ALL`).
pub mod exit {
    /// Every exit code with its meaning, in the order README lists them.
    pub const ALL: [(i32, &str); 6] = [
        (OK, "success (for `plan --detailed-exitcode`: no changes)"),
        (
            ERROR,
            "error: a failed step (the state records it `failed` and the finished ones `done`; the `help:` lines end with `karpctl up` to resume), a failed check or verify, a held lock, an unreachable cluster …",
        ),
        (CHANGES, "`plan --detailed-exitcode` found changes"),
        (INVALID_CONFIG, "invalid or unreadable config file: nothing was changed"),
        (USAGE, "usage error (unknown flag, bad value)"),
        (INTERRUPTED, "interrupted (Ctrl-C); the state records where it stopped"),
    ];
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const CHANGES: i32 = 2;
    pub const INVALID_CONFIG: i32 = 3;
    pub const USAGE: i32 = 64;
    /// Ctrl-C: the state records where the run stopped.
    pub const INTERRUPTED: i32 = 130;
}

