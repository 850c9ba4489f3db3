/*!
Validation findings about the user's config file. Every finding names the file,
the line and column, the field path, what is wrong and what is allowed, so the
user can fix all of them in one pass instead of one per run.
*/

use std::fmt;
use std::path::{Path, PathBuf};

use super::source::{FieldPath, Pos, SourceMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Field path, e.g. `nodePools[0].weight`.
    pub field: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip)]
    pub path: FieldPath,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{sev}: {}: {}", self.field, self.message)?;
        write!(f, "  --> {}:{}:{}", self.file.display(), self.line, self.column)?;
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

/// Collects findings while validation walks the config.
pub struct Diags<'a> {
    file: &'a Path,
    map: &'a SourceMap,
    pub items: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub fn new(file: &'a Path, map: &'a SourceMap) -> Self {
        Diags { file, map, items: Vec::new() }
    }

    fn push(&mut self, severity: Severity, path: &FieldPath, pos: Option<Pos>, msg: String, help: Option<String>) {
        let pos = pos.unwrap_or(Pos { line: 1, col: 1 });
        self.items.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.col,
            field: path.to_string(),
            message: msg,
            help,
            path: path.clone(),
        });
    }

    /// An error about the value at `path`.
    pub fn error(&mut self, path: &FieldPath, msg: impl Into<String>) {
        let pos = self.map.value_pos(path);
        self.push(Severity::Error, path, pos, msg.into(), None);
    }

    pub fn error_help(&mut self, path: &FieldPath, msg: impl Into<String>, help: impl Into<String>) {
        let pos = self.map.value_pos(path);
        self.push(Severity::Error, path, pos, msg.into(), Some(help.into()));
    }

    /// An error about the key at `path` itself (unknown field).
    pub fn key_error(&mut self, path: &FieldPath, msg: impl Into<String>, help: Option<String>) {
        let pos = self.map.key_pos(path);
        self.push(Severity::Error, path, pos, msg.into(), help);
    }

    pub fn warning(&mut self, path: &FieldPath, msg: impl Into<String>) {
        let pos = self.map.value_pos(path);
        self.push(Severity::Warning, path, pos, msg.into(), None);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }
}

/// The config could not be used. Holds every finding, errors first in file order.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }
    pub fn single(file: &Path, line: usize, column: usize, field: &str, message: String, help: Option<String>) -> Self {
        ConfigErrors {
            file: file.to_path_buf(),
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: file.to_path_buf(),
                line,
                column,
                field: field.to_string(),
                message,
                help,
                path: FieldPath::root(),
            }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count();
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        write!(
            f,
            "{} has {n} error{}; nothing was changed",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )
    }
}

pub fn sort(items: &mut [Diagnostic]) {
    items.sort_by(|a, b| (a.severity, a.line, a.column, &a.field).cmp(&(b.severity, b.line, b.column, &b.field)));
}
