//! Bytes ⇄ [`State`]: the version is read first, then the reader for that
//! version runs, so an old file is upgraded on read and a newer one is refused
//! before any of it is interpreted.

use serde::Deserialize;
use serde_json::Value;

use super::{Location, State, StateError, STATE_VERSION};

/// The canonical stored form: pretty JSON, every object's keys sorted, a final newline.
pub fn encode(s: &State) -> Result<String, serde_json::Error> {
    let mut out = serde_json::to_string_pretty(&sorted(serde_json::to_value(s)?))?;
    out.push('\n');
    Ok(out)
}

/// [`encode`] for the stores: a state is plain data, so this cannot fail.
pub(crate) fn encode_bytes(s: &State) -> Vec<u8> {
    encode(s).expect("a state is plain data and always serializes").into_bytes()
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Reads a state document that is not in a store (e.g. the file given to
/// `karpctl state push`); errors name no location, so callers add context.
pub fn decode(bytes: &[u8]) -> Result<State, StateError> {
    decode_raw(bytes).map_err(|p| p.into_error(None, false))
}

/// Why stored bytes are not a state this karpctl can use.
#[derive(Debug)]
pub(crate) enum Problem {
    Corrupt { problem: String, line: Option<u32>, column: Option<u32>, byte: Option<usize> },
    Newer { found: u64 },
}

impl Problem {
    /// The error for `location`; `backup` tells whether a previous copy exists.
    pub(crate) fn at(self, location: Location, backup: bool) -> StateError {
        self.into_error(Some(location), backup)
    }

    fn into_error(self, location: Option<Location>, backup: bool) -> StateError {
        match self {
            Problem::Corrupt { problem, line, column, byte } => {
                StateError::Corrupt { location, problem, line, column, byte, backup }
            }
            Problem::Newer { found } => StateError::NewerVersion { location, found, supported: STATE_VERSION },
        }
    }

    fn plain(problem: impl Into<String>) -> Problem {
        Problem::Corrupt { problem: problem.into(), line: None, column: None, byte: None }
    }

    fn json(e: &serde_json::Error, path: Option<&str>) -> Problem {
        // serde_json appends " at line L column C"; the position is kept in fields instead.
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let msg = text.strip_suffix(&suffix).unwrap_or(&text);
        let problem = match path {
            Some(p) if !p.is_empty() && p != "." => format!("field `{p}`: {msg}"),
            _ => msg.to_string(),
        };
        let (line, column) = match e.line() {
            0 => (None, None),
            l => (u32::try_from(l).ok(), u32::try_from(e.column()).ok()),
        };
        Problem::Corrupt { problem, line, column, byte: None }
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    version: Option<Value>,
}

pub(crate) fn decode_raw(bytes: &[u8]) -> Result<State, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let problem = if bytes.is_empty() { "it is empty" } else { "it holds only whitespace" };
        return Err(Problem::Corrupt { problem: problem.into(), line: None, column: None, byte: Some(0) });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| Problem::Corrupt {
        problem: "it is not UTF-8 text".into(),
        line: None,
        column: None,
        byte: Some(e.valid_up_to()),
    })?;
    let probe: VersionProbe = serde_json::from_str(text).map_err(|e| Problem::json(&e, None))?;
    if !text.trim_start().starts_with('{') {
        return Err(Problem::plain("it is not a JSON object"));
    }
    let version = match probe.version {
        None => return Err(Problem::plain("it has no `version` field; it is not a karpctl state")),
        Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            Problem::plain(format!("`version` must be a positive integer, found {v}"))
        })?,
    };
    match version {
        1 => read_v1(text),
        n if n > u64::from(STATE_VERSION) => Err(Problem::Newer { found: n }),
        n => Err(Problem::plain(format!("unknown state version {n}"))),
    }
}

/// Version 1 is the current schema: read as is.
fn read_v1(text: &str) -> Result<State, Problem> {
    let mut de = serde_json::Deserializer::from_str(text);
    let s: State = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        Problem::json(e.inner(), Some(&path))
    })?;
    de.end().map_err(|e| Problem::json(&e, None))?;
    Ok(s)
}
