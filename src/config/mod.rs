/*!
Reading the user's config file: bytes → YAML → structural check → typed config
→ semantic check. Every stage collects all of its findings with file, line,
column and field path, and nothing here touches the network, so a bad file is
always rejected before any API call.
*/

pub mod diag;
pub mod rules;
pub mod schema;
pub mod source;
pub mod types;
pub mod validate;

use std::path::{Path, PathBuf};

pub use diag::{ConfigErrors, Diagnostic, Severity};
pub use types::Config;

use diag::Diags;
use source::{FieldPath, Pos, SourceMap};

/// Larger config files are refused before parsing (a real one is a few KiB).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// A config that passed every check, with its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    /// Where each field is in the file, for findings made after loading.
    pub positions: SourceMap,
}

impl Loaded {
    /// A warning about the value at `field`, with its position in the file: for what a
    /// command finds after validation (`render` missing a fact the config needs).
    pub fn warning_at(&self, field: &FieldPath, message: &str, help: Option<&str>) -> Diagnostic {
        let pos = self.positions.value_pos(field).unwrap_or(Pos { line: 1, col: 1 });
        Diagnostic {
            severity: Severity::Warning,
            file: self.path.clone(),
            line: pos.line,
            column: pos.col,
            field: diag::tidy(&field.to_string()),
            message: diag::tidy(message),
            help: help.map(diag::tidy),
            path: field.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading config file {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

/// Where a path written in the config file points: relative paths are relative
/// to the file's own directory, whatever the working directory (`state.path`,
/// `karpenter.chart.path`, `devicePlugin.chartPath`: [`PATH_FIELDS`]).
pub fn resolve(config_file: &Path, p: &str) -> PathBuf {
    config_file.parent().unwrap_or(Path::new("")).join(p)
}

/// Every field of the config that holds a file system path, as (schema
/// definition, property); each is resolved with [`resolve`].
pub const PATH_FIELDS: [(&str, &str); 3] = [("Chart", "path"), ("DevicePlugin", "chartPath"), ("StateConfig", "path")];

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = read_bounded(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    Ok(parse(path, &bytes)?)
}

/// Reads at most one byte more than [`MAX_CONFIG_BYTES`], so `-c /dev/zero` or an
/// endless pipe is refused as too large instead of filling memory.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, "it is a directory, not a config file"));
    }
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The first character YAML takes for a line break that a `\n`-counting editor
/// does not (a lone CR, NEL, LS, PS), with its byte offset.
fn stray_line_break(text: &str) -> Option<(usize, char)> {
    let bytes = text.as_bytes();
    text.char_indices().find(|&(i, c)| match c {
        '\r' => bytes.get(i + 1) != Some(&b'\n'),
        '\u{85}' | '\u{2028}' | '\u{2029}' => true,
        _ => false,
    })
}

/// Validates config bytes that came from `path` (used by `load` and by tests).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Loaded, ConfigErrors> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigErrors::single(
            path,
            1,
            1,
            "(file)",
            format!("the file is larger than {MAX_CONFIG_BYTES} bytes, the limit for a config file"),
            Some("a config is a few KiB; is -c pointing at the right file?".into()),
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            // Everything before `valid_up_to` is UTF-8 by definition.
            let good = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let at = Pos::after(good);
            return Err(ConfigErrors::single(
                path,
                at.line,
                at.col,
                "(file)",
                "the file is not valid UTF-8".into(),
                Some("save it as UTF-8 text".into()),
            ));
        }
    };
    // Editors on Windows save UTF-8 with a byte order mark; it is not content.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\0') {
        return Err(ConfigErrors::single(path, 1, 1, "(file)", "the file contains NUL bytes; is it a binary file?".into(), None));
    }
    if let Some((at, ch)) = stray_line_break(text) {
        let at = Pos::after(&text[..at]);
        let (what, escape) = match ch {
            '\r' => ("a carriage return (\\r) not followed by a newline", "\\r"),
            '\u{85}' => ("a U+0085 NEXT LINE character", "\\N"),
            '\u{2028}' => ("a U+2028 LINE SEPARATOR character", "\\L"),
            _ => ("a U+2029 PARAGRAPH SEPARATOR character", "\\P"),
        };
        return Err(ConfigErrors::single(
            path,
            at.line,
            at.col,
            "(file)",
            format!("the file contains {what}: YAML reads it as a line break where editors and grep do not, so line numbers would disagree"),
            Some(format!("save the file with \\n or \\r\\n line endings; a value that needs the character can write it as {escape} in a double-quoted string")),
        ));
    }
    let yaml: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, col) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            let msg = e.to_string();
            if msg.contains(" as u128,") || msg.contains(" as i128,") {
                // An integer beyond 64 bits: name the field, not a YAML internals message.
                let map = SourceMap::build(text);
                let at = map.path_at(Pos { line, col }).unwrap_or_default();
                let mut diags = Diags::new(path, &map);
                diags.error_help(&at, "the number is too large (at most 64-bit integers)", "write a smaller value");
                return Err(finish(path, diags));
            }
            let help = if msg.contains("more than one document") {
                Some("a config file holds one YAML document; remove the extra `---`".to_string())
            } else if msg.contains("recursion limit") || msg.contains("repetition limit") {
                Some("the file nests or repeats aliases too deeply; write the values out".to_string())
            } else {
                None
            };
            return Err(ConfigErrors::single(path, line, col, "(file)", format!("not valid YAML: {msg}"), help));
        }
    };
    let map = SourceMap::build(text);
    let mut diags = Diags::new(path, &map);
    for (p, tag) in &map.tagged {
        diags.error_help(p, format!("YAML tags such as {tag} are not accepted"), "write the plain value");
    }
    if diags.has_errors() {
        return Err(finish(path, diags));
    }
    let json = match to_json(&yaml, &FieldPath::root(), &mut diags) {
        Some(j) if !diags.has_errors() => j,
        _ => return Err(finish(path, diags)),
    };
    if json.is_null() {
        diags.error(&FieldPath::root(), "the file is empty; start from `karpctl init`");
        return Err(finish(path, diags));
    }
    let pruned = schema::check(&json, &mut diags);
    if diags.has_errors() {
        // Go on with the offending values removed, so the rules below can report
        // their findings in the same run; skip findings under a removed value.
        let mut rest = json.clone();
        if pruned.iter().all(|p| remove(&mut rest, p)) {
            if let Ok(config) = serde_json::from_value::<Config>(rest) {
                let before = diags.items.len();
                validate::check(&config, &mut diags);
                let extra: Vec<Diagnostic> = diags.items.drain(before..).collect();
                diags.items.extend(extra.into_iter().filter(|d| !pruned.iter().any(|p| d.path.0.starts_with(&p.0))));
            }
        }
        return Err(finish(path, diags));
    }
    let config: Config = match serde_path_to_error::deserialize(json) {
        Ok(c) => c,
        Err(e) => {
            let p = path_from_serde(e.path());
            diags.error(&p, e.inner().to_string());
            return Err(finish(path, diags));
        }
    };
    validate::check(&config, &mut diags);
    if diags.has_errors() {
        return Err(finish(path, diags));
    }
    let mut warnings = diags.items;
    diag::sort(&mut warnings);
    Ok(Loaded { path: path.to_path_buf(), config, warnings, positions: map })
}

fn finish(path: &Path, diags: Diags<'_>) -> ConfigErrors {
    let mut items = diags.items;
    diag::sort(&mut items);
    let errors = items.iter().filter(|d| d.severity == Severity::Error).count();
    items.truncate(diag::MAX_SHOWN);
    let omitted = errors - items.iter().filter(|d| d.severity == Severity::Error).count();
    ConfigErrors { file: path.to_path_buf(), diagnostics: items, omitted }
}

fn path_from_serde(p: &serde_path_to_error::Path) -> FieldPath {
    let mut out = FieldPath::root();
    for seg in p.iter() {
        out = match seg {
            serde_path_to_error::Segment::Seq { index } => out.index(*index),
            serde_path_to_error::Segment::Map { key } => out.key(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => out.key(variant.clone()),
            serde_path_to_error::Segment::Unknown => out,
        };
    }
    out
}

/// Removes the value at `p` (a mapping key); false when it cannot (a list item).
fn remove(doc: &mut serde_json::Value, p: &FieldPath) -> bool {
    let Some((last, parents)) = p.0.split_last() else { return false };
    let mut cur = doc;
    for seg in parents {
        cur = match (seg, cur) {
            (source::Seg::Key(k), serde_json::Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return true,
            },
            (source::Seg::Index(i), serde_json::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return true,
            },
            _ => return true,
        };
    }
    match (last, cur) {
        (source::Seg::Key(k), serde_json::Value::Object(m)) => {
            m.shift_remove(k);
            true
        }
        _ => false,
    }
}

/// YAML → JSON value model; mapping keys must be strings and tags are refused.
fn to_json(v: &serde_yaml::Value, at: &FieldPath, d: &mut Diags<'_>) -> Option<serde_json::Value> {
    use serde_yaml::Value as Y;
    Some(match v {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => serde_json::Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                serde_json::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                serde_json::Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(num) => serde_json::Value::Number(num),
                    None => {
                        d.error(at, "infinite or NaN numbers are not accepted");
                        return None;
                    }
                }
            }
        }
        Y::String(s) => serde_json::Value::String(s.clone()),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(to_json(item, &at.index(i), d)?);
            }
            serde_json::Value::Array(out)
        }
        Y::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => {
                        d.error(at, "mapping keys must be plain strings");
                        return None;
                    }
                };
                let child = to_json(val, &at.key(key.clone()), d)?;
                out.insert(key, child);
            }
            serde_json::Value::Object(out)
        }
        Y::Tagged(t) => {
            d.error_help(at, format!("YAML tags such as {} are not accepted", t.tag), "write the plain value");
            return None;
        }
    })
}

/// Names karpctl derives from the cluster name unless the config overrides them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub stack: String,
    pub queue: String,
    pub node_role: String,
    pub controller_role: String,
}

impl Names {
    pub fn of(c: &Config) -> Names {
        let cluster = &c.cluster.name;
        Names {
            stack: c.stack.name.clone().unwrap_or_else(|| format!("Karpenter-{cluster}")),
            queue: c.stack.queue_name.clone().unwrap_or_else(|| cluster.clone()),
            node_role: c.stack.node_role_name.clone().unwrap_or_else(|| format!("KarpenterNodeRole-{cluster}")),
            controller_role: c.identity.role_name.clone().unwrap_or_else(|| format!("KarpenterControllerRole-{cluster}")),
        }
    }
}
