/*!
Where every value of the user's YAML file sits (line and column), so that each
validation error can point at the exact spot. serde_yaml does not expose
positions, so we walk the YAML event stream once with a marked parser and record
the position of every key and value under its field path.
*/

use std::collections::BTreeMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A field path such as `nodePools[1].disruption.budgets[0].nodes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }
    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.into()));
        FieldPath(v)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        FieldPath(v)
    }
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            None
        } else {
            Some(FieldPath(self.0[..self.0.len() - 1].to_vec()))
        }
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    let plain = !k.is_empty()
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if plain {
                        if !first {
                            f.write_str(".")?;
                        }
                        f.write_str(k)?;
                    } else {
                        // Keys such as `nvidia.com/gpu` are shown in brackets so the
                        // dots inside them are not mistaken for nesting.
                        write!(f, "[{k:?}]")?;
                    }
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    /// Where the character after `before` sits: `\n` ends a line, and the column
    /// counts characters, as an editor shows them (not bytes).
    pub fn after(before: &str) -> Pos {
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Pos { line, col }
    }
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml-rust2 lines are 1-based, columns 0-based.
        Pos { line: m.line(), col: m.col() + 1 }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Spot {
    key: Option<Pos>,
    value: Option<Pos>,
}

/// Positions of keys and values by field path.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    spots: BTreeMap<FieldPath, Spot>,
    /// Nodes written with an explicit YAML tag (`!!binary`, `!foo`), which
    /// serde_yaml resolves silently.
    pub tagged: Vec<(FieldPath, String)>,
}

impl SourceMap {
    /// Builds the map from YAML text. Returns an empty map when the text does not
    /// parse: the caller reports the parse error from serde_yaml, which has a position.
    pub fn build(text: &str) -> SourceMap {
        let mut b = Builder { map: SourceMap::default(), stack: Vec::new() };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut b, false).is_err() {
            return SourceMap::default();
        }
        b.map
    }

    /// Position of the value at `path`, else of its key, else of the nearest ancestor.
    pub fn value_pos(&self, path: &FieldPath) -> Option<Pos> {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(s) = self.spots.get(&cur) {
                if let Some(v) = s.value.or(s.key) {
                    return Some(v);
                }
            }
            p = cur.parent();
        }
        None
    }

    /// The field whose value starts at `pos`, if any.
    pub fn path_at(&self, pos: Pos) -> Option<FieldPath> {
        self.spots.iter().find(|(_, s)| s.value == Some(pos)).map(|(p, _)| p.clone())
    }

    /// Position of the key at `path` (for unknown-field errors), else of the value.
    pub fn key_pos(&self, path: &FieldPath) -> Option<Pos> {
        match self.spots.get(path) {
            Some(s) => s.key.or(s.value),
            None => self.value_pos(path),
        }
    }
}

enum Frame {
    Map { path: FieldPath, pending_key: Option<(String, Pos)>, expecting_key: bool },
    Seq { path: FieldPath, next: usize },
}

struct Builder {
    map: SourceMap,
    stack: Vec<Frame>,
}

impl Builder {
    fn note_tag(&mut self, path: Option<FieldPath>, tag: Option<&yaml_rust2::parser::Tag>) {
        if let (Some(p), Some(t)) = (path, tag) {
            let handle = if t.handle == "tag:yaml.org,2002:" { "!!" } else { t.handle.as_str() };
            self.map.tagged.push((p, format!("{handle}{}", t.suffix)));
        }
    }

    /// Path of the node that starts now, and records where it starts.
    fn node_start(&mut self, pos: Pos) -> Option<FieldPath> {
        let path = match self.stack.last_mut() {
            None => FieldPath::root(),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                p
            }
            Some(Frame::Map { path, pending_key, expecting_key }) => {
                if *expecting_key {
                    return None;
                }
                let (k, kpos) = pending_key.take().unwrap_or_default_key();
                *expecting_key = true;
                let p = path.key(k);
                self.map.spots.entry(p.clone()).or_default().key = Some(kpos);
                p
            }
        };
        let spot = self.map.spots.entry(path.clone()).or_default();
        spot.value = Some(pos);
        Some(path)
    }
}

trait DefaultKey {
    fn unwrap_or_default_key(self) -> (String, Pos);
}
impl DefaultKey for Option<(String, Pos)> {
    fn unwrap_or_default_key(self) -> (String, Pos) {
        self.unwrap_or((String::new(), Pos { line: 0, col: 0 }))
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(value, _, _, tag) => {
                if let Some(Frame::Map { pending_key, expecting_key, .. }) = self.stack.last_mut() {
                    if *expecting_key {
                        *pending_key = Some((value, pos));
                        *expecting_key = false;
                        return;
                    }
                }
                let path = self.node_start(pos);
                self.note_tag(path, tag.as_ref());
            }
            Event::Alias(_) => {
                if let Some(Frame::Map { pending_key, expecting_key, .. }) = self.stack.last_mut() {
                    if *expecting_key {
                        *pending_key = Some(("<alias>".into(), pos));
                        *expecting_key = false;
                        return;
                    }
                }
                self.node_start(pos);
            }
            Event::MappingStart(_, tag) => {
                let tag = tag.clone();
                // A mapping used as a key (rare, and rejected later) gets a placeholder.
                if let Some(Frame::Map { pending_key, expecting_key, .. }) = self.stack.last_mut() {
                    if *expecting_key {
                        *pending_key = Some(("<complex key>".into(), pos));
                        *expecting_key = false;
                    }
                }
                let path = self.node_start(pos).unwrap_or_default();
                self.note_tag(Some(path.clone()), tag.as_ref());
                self.stack.push(Frame::Map { path, pending_key: None, expecting_key: true });
            }
            Event::SequenceStart(_, tag) => {
                let tag = tag.clone();
                if let Some(Frame::Map { pending_key, expecting_key, .. }) = self.stack.last_mut() {
                    if *expecting_key {
                        *pending_key = Some(("<complex key>".into(), pos));
                        *expecting_key = false;
                    }
                }
                let path = self.node_start(pos).unwrap_or_default();
                self.note_tag(Some(path.clone()), tag.as_ref());
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_nested_positions() {
        let text = "a:\n  b: 1\n  list:\n    - x: 2\n    - y\n";
        let m = SourceMap::build(text);
        let p = FieldPath::root().key("a").key("list").index(0).key("x");
        assert_eq!(m.value_pos(&p), Some(Pos { line: 4, col: 10 }));
        assert_eq!(m.key_pos(&p), Some(Pos { line: 4, col: 7 }));
        let y = FieldPath::root().key("a").key("list").index(1);
        assert_eq!(m.value_pos(&y), Some(Pos { line: 5, col: 7 }));
        // A missing field falls back to its nearest parent.
        let missing = FieldPath::root().key("a").key("nope");
        assert_eq!(m.value_pos(&missing).map(|p| p.line), Some(2));
    }

    #[test]
    fn a_position_after_text_counts_characters_and_newlines_only() {
        assert_eq!(Pos::after(""), Pos { line: 1, col: 1 });
        assert_eq!(Pos::after("ab\n"), Pos { line: 2, col: 1 });
        assert_eq!(Pos::after("ab\r\ncaf\u{e9} \u{2603}"), Pos { line: 2, col: 7 });
        assert_eq!(Pos::after("a\rb"), Pos { line: 1, col: 4 }, "a lone CR is not a line break here");
    }

    #[test]
    fn displays_paths() {
        let p = FieldPath::root().key("nodePools").index(1).key("limits").key("nvidia.com/gpu");
        assert_eq!(p.to_string(), "nodePools[1].limits[\"nvidia.com/gpu\"]");
    }
}
