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
pub mod rollback;
pub mod state;
pub mod verify;

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
}

/// Exit codes (documented in README).
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const CHANGES: i32 = 2;
    pub const INVALID_CONFIG: i32 = 3;
    pub const USAGE: i32 = 64;
    /// Ctrl-C: the state records where the run stopped.
    pub const INTERRUPTED: i32 = 130;
}

