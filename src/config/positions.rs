//! Where each key of a configuration file sits, so that a value rejected
//! after deserialisation (an overlapping route, a table base that leaves no
//! room) can be reported with the line it came from.
//!
//! The typed `Config` keeps plain field types for the rest of the agent; this
//! tree is built from a second pass over the same text and is looked up by
//! key path.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

// toml reports the position of a value to a type that asks for it under these
// names (the protocol behind `toml::Spanned`). `toml::Spanned<T>` itself cannot
// be used for a generic tree: a table created implicitly by a dotted key
// (`log.level = "…"`) has no position, and `Spanned` then fails to
// deserialise, so the visitor below accepts both shapes.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

/// One step of a key path: a key in a table or an index in an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for Seg<'a> {
    fn from(key: &'a str) -> Self {
        Seg::Key(key)
    }
}

impl From<usize> for Seg<'_> {
    fn from(index: usize) -> Self {
        Seg::Index(index)
    }
}

/// Renders a key path the way an operator would find it in the file:
/// `eni[2].main_routes[0].via` (indices count from 1, like the entries one
/// reads top to bottom).
pub fn display_path(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push_str(&format!("[{}]", i + 1));
            }
        }
    }
    out
}

/// The position tree of a TOML document.
#[derive(Debug, Default)]
pub struct Positions {
    span: Option<Range<usize>>,
    keys: BTreeMap<String, Positions>,
    items: Vec<Positions>,
}

impl Positions {
    /// Reads the positions of every key in `text`; fails only on TOML syntax.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The byte offset where the value at `path` starts, or where its nearest
    /// positioned ancestor starts when the key itself is absent (a missing
    /// key is reported at the table that lacks it).
    pub fn offset(&self, path: &[Seg<'_>]) -> Option<usize> {
        let mut node = self;
        let mut best = node.span.as_ref().map(|s| s.start);
        for seg in path {
            let next = match seg {
                Seg::Key(k) => node.keys.get(*k),
                Seg::Index(i) => node.items.get(*i),
            };
            let Some(next) = next else { break };
            node = next;
            if let Some(s) = &node.span {
                best = Some(s.start);
            }
        }
        best
    }

    /// The top-level keys and where their values start.
    pub fn top_level(&self) -> impl Iterator<Item = (&str, Option<usize>)> {
        self.keys.iter().map(|(k, p)| (k.as_str(), p.offset(&[])))
    }

    /// The innermost key path whose value contains `offset`.
    pub fn path_at(&self, offset: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut node = self;
        'descend: loop {
            for (k, child) in &node.keys {
                if child.contains(offset) {
                    out.push(k.clone());
                    node = child;
                    continue 'descend;
                }
            }
            for (i, child) in node.items.iter().enumerate() {
                if child.contains(offset) {
                    if let Some(last) = out.last_mut() {
                        last.push_str(&format!("[{}]", i + 1));
                    }
                    node = child;
                    continue 'descend;
                }
            }
            return out;
        }
    }

    /// Whether `offset` falls inside this value. A table without a position
    /// of its own (created by a dotted key) contains whatever its keys do.
    fn contains(&self, offset: usize) -> bool {
        match &self.span {
            Some(s) => s.start <= offset && offset < s.end.max(s.start + 1),
            None => self.keys.values().any(|c| c.contains(offset)),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl<'de> Deserialize<'de> for Positions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, PositionsVisitor)
    }
}

/// Deserialises the value inside a positioned wrapper without asking for a
/// position again.
struct Unwrapped;

impl<'de> DeserializeSeed<'de> for Unwrapped {
    type Value = Positions;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Positions, D::Error> {
        d.deserialize_any(PositionsVisitor)
    }
}

struct PositionsVisitor;

impl<'de> Visitor<'de> for PositionsVisitor {
    type Value = Positions;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Positions, E> {
        Ok(Positions::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Positions, E> {
        Ok(Positions::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Positions, E> {
        Ok(Positions::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Positions, E> {
        Ok(Positions::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Positions, E> {
        Ok(Positions::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Positions, A::Error> {
        let mut p = Positions::default();
        while let Some(item) = seq.next_element::<Positions>()? {
            p.items.push(item);
        }
        Ok(p)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Positions, A::Error> {
        let mut p = Positions::default();
        let (mut start, mut end) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => {
                    let mut inner = map.next_value_seed(Unwrapped)?;
                    if let (Some(s), Some(e)) = (start, end) {
                        inner.span = Some(s..e);
                    }
                    return Ok(inner);
                }
                _ => {
                    let child = map.next_value::<Positions>()?;
                    p.keys.insert(key, child);
                }
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# comment
[metadata]
endpoint = "http://x"

[numbering]
table_base = 1
log.level = "x"

[[eni]]
match = { device = 1 }
main_routes = [
  { dst = "10.0.0.0/8", via = "10.0.0.1" },
  { dst = "10.1.0.0/16" },
]

[[eni]]
[eni.match]
name = "x"
[[eni.table_routes]]
dst = "1.2.3.4/32"
"#;

    fn line(p: &Positions, path: &[Seg<'_>]) -> Option<usize> {
        p.offset(path).map(|o| line_of(TEXT, o))
    }

    #[test]
    fn lines_of_values_tables_and_array_entries() {
        let p = Positions::parse(TEXT).unwrap();
        assert_eq!(line(&p, &["metadata".into()]), Some(2));
        assert_eq!(line(&p, &["metadata".into(), "endpoint".into()]), Some(3));
        assert_eq!(
            line(&p, &["numbering".into(), "log".into(), "level".into()]),
            Some(7)
        );
        assert_eq!(line(&p, &["eni".into(), 0.into()]), Some(9));
        assert_eq!(
            line(&p, &["eni".into(), 0.into(), "match".into()]),
            Some(10)
        );
        let via = [
            "eni".into(),
            0.into(),
            "main_routes".into(),
            0.into(),
            "via".into(),
        ];
        assert_eq!(line(&p, &via), Some(12));
        let dst = [
            "eni".into(),
            0.into(),
            "main_routes".into(),
            1.into(),
            "dst".into(),
        ];
        assert_eq!(line(&p, &dst), Some(13));
        assert_eq!(line(&p, &["eni".into(), 1.into()]), Some(16));
        let name = ["eni".into(), 1.into(), "match".into(), "name".into()];
        assert_eq!(line(&p, &name), Some(18));
        let tr = [
            "eni".into(),
            1.into(),
            "table_routes".into(),
            0.into(),
            "dst".into(),
        ];
        assert_eq!(line(&p, &tr), Some(20));
    }

    #[test]
    fn absent_key_falls_back_to_its_table() {
        let p = Positions::parse(TEXT).unwrap();
        assert_eq!(line(&p, &["metadata".into(), "use_ipv6".into()]), Some(2));
        let absent = ["eni".into(), 0.into(), "table_routes".into(), 0.into()];
        assert_eq!(line(&p, &absent), Some(9));
    }

    #[test]
    fn path_at_offset() {
        let p = Positions::parse(TEXT).unwrap();
        let off = TEXT.find("10.1.0.0/16").unwrap();
        assert_eq!(p.path_at(off), ["eni[1]", "main_routes[2]", "dst"]);
        let off = TEXT.find("\"x\"\n\n").unwrap();
        assert_eq!(p.path_at(off), ["numbering", "log", "level"]);
    }

    #[test]
    fn display() {
        let path = [
            "eni".into(),
            1.into(),
            "main_routes".into(),
            0.into(),
            "via".into(),
        ];
        assert_eq!(display_path(&path), "eni[2].main_routes[1].via");
    }
}
