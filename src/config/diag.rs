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
            field: tidy(&path.to_string()),
            message: tidy(&msg),
            help: help.as_deref().map(tidy),
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

/// Findings shown at most; a file with thousands of bad list items says how
/// many more there are instead of printing every one.
pub const MAX_SHOWN: usize = 50;

/// Longest finding text shown; a longer one keeps its start and end.
const MAX_TEXT: usize = 300;

/// Makes text from the user's file safe to print: control characters (a
/// terminal escape sequence in a key or value) and bidirectional overrides are
/// shown escaped, and a very long text is cut in the middle.
pub fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_TEXT + 64));
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    let mut n = out.chars().count();
    if n <= MAX_TEXT {
        return out;
    }
    // Quoted values (`{:?}` of the user's text) are cut first, so the words
    // around them — what is wrong, what is allowed — stay whole.
    out = shorten_quoted(&out);
    n = out.chars().count();
    if n <= MAX_TEXT {
        return out;
    }
    let head: String = out.chars().take(MAX_TEXT - 60).collect();
    let tail: String = out.chars().skip(n - 40).collect();
    format!("{head}…({} characters cut)…{tail}", n - (MAX_TEXT - 60) - 40)
}

/// Cuts the middle of every `"…"` longer than 60 characters.
fn shorten_quoted(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len().min(4096));
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '"' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // Find the closing quote, skipping escaped characters.
        let mut j = i + 1;
        while j < chars.len() && chars[j] != '"' {
            j += if chars[j] == '\\' { 2 } else { 1 };
        }
        let inner = &chars[i + 1..j.min(chars.len())];
        out.push('"');
        if inner.len() > 60 {
            out.extend(&inner[..40]);
            out.push_str(&format!("…({} characters cut)…", inner.len() - 50));
            out.extend(&inner[inner.len() - 10..]);
        } else {
            out.extend(inner);
        }
        if j < chars.len() {
            out.push('"');
        }
        i = j + 1;
    }
    out
}

/// The config could not be used. Holds the findings, errors first in file order
/// (at most [`MAX_SHOWN`]; `omitted` counts the rest).
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
    /// Findings beyond [`MAX_SHOWN`], not kept.
    pub omitted: usize,
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
                field: tidy(field),
                message: tidy(&message),
                help: help.as_deref().map(tidy),
                path: FieldPath::root(),
            }],
            omitted: 0,
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count() + self.omitted;
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        if self.omitted > 0 {
            writeln!(f, "… and {} more not shown", self.omitted)?;
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
