//! Where each key of a configuration file sits, so that a value rejected
//! after deserialisation (an overlapping route, a table base that leaves no
//! room) can be reported with the line it came from.
//!
//! The typed `Config` keeps plain field types for the rest of the agent; the
//! positions come from toml_edit's document of the same text, whose items
//! keep their byte spans.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, TomlError, Value};

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

/// A configuration text parsed for positions.
pub struct Spans<'t> {
    doc: ImDocument<&'t str>,
}

/// A node of the document: a table (standard, inline, or one entry of an
/// array of tables), an array (inline, or of tables) or a plain value.
#[derive(Clone, Copy)]
enum Node<'d> {
    Item(&'d Item),
    Table(&'d Table),
    Value(&'d Value),
}

impl<'d> Node<'d> {
    /// Where the node's text starts and ends. A standard table spans from
    /// its header to its last value; a table made implicitly by a dotted
    /// key (`log.level = …`) has no span of its own.
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }

    fn key(self, key: &str) -> Option<Node<'d>> {
        match self {
            Node::Item(Item::Table(t)) | Node::Table(t) => t.get(key).map(Node::Item),
            Node::Item(Item::Value(v)) | Node::Value(v) => {
                v.as_inline_table()?.get(key).map(Node::Value)
            }
            _ => None,
        }
    }

    fn index(self, index: usize) -> Option<Node<'d>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(index).map(Node::Table),
            Node::Item(Item::Value(v)) | Node::Value(v) => {
                v.as_array()?.get(index).map(Node::Value)
            }
            _ => None,
        }
    }

    /// Children in document order, with the step that reaches each.
    fn children(self) -> Vec<(Step<'d>, Node<'d>)> {
        match self {
            Node::Item(Item::Table(t)) | Node::Table(t) => t
                .iter()
                .map(|(k, i)| (Step::Key(k), Node::Item(i)))
                .collect(),
            Node::Item(Item::ArrayOfTables(a)) => a
                .iter()
                .enumerate()
                .map(|(n, t)| (Step::Index(n), Node::Table(t)))
                .collect(),
            Node::Item(Item::Value(v)) | Node::Value(v) => match v {
                Value::InlineTable(t) => t
                    .iter()
                    .map(|(k, v)| (Step::Key(k), Node::Value(v)))
                    .collect(),
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .map(|(n, v)| (Step::Index(n), Node::Value(v)))
                    .collect(),
                _ => Vec::new(),
            },
            Node::Item(Item::None) => Vec::new(),
        }
    }

    /// Whether `offset` falls inside this node. A table without a span of
    /// its own contains whatever its keys do.
    fn contains(self, offset: usize) -> bool {
        match self.span() {
            Some(s) => s.start <= offset && offset < s.end.max(s.start + 1),
            None => self.children().into_iter().any(|(_, c)| c.contains(offset)),
        }
    }
}

enum Step<'d> {
    Key(&'d str),
    Index(usize),
}

impl<'t> Spans<'t> {
    /// Parses `text`; fails only on TOML syntax.
    pub fn parse(text: &'t str) -> Result<Self, TomlError> {
        Ok(Spans {
            doc: ImDocument::parse(text)?,
        })
    }

    fn root(&self) -> Node<'_> {
        Node::Table(self.doc.as_table())
    }

    /// The byte offset where the value at `path` starts, or where its nearest
    /// positioned ancestor starts when the key itself is absent (a missing
    /// key is reported at the table that lacks it).
    pub fn offset(&self, path: &[Seg<'_>]) -> Option<usize> {
        let mut node = self.root();
        let mut best = node.span().map(|s| s.start);
        for seg in path {
            let next = match seg {
                Seg::Key(k) => node.key(k),
                Seg::Index(i) => node.index(*i),
            };
            let Some(next) = next else { break };
            node = next;
            if let Some(s) = node.span() {
                best = Some(s.start);
            }
        }
        best
    }

    /// The top-level keys, sorted, and where their values start.
    pub fn top_level(&self) -> Vec<(&str, Option<usize>)> {
        let mut keys: Vec<(&str, Option<usize>)> = self
            .doc
            .as_table()
            .iter()
            .map(|(k, item)| (k, item.span().map(|s| s.start)))
            .collect();
        keys.sort_unstable_by_key(|(k, _)| *k);
        keys
    }

    /// The innermost key path whose value contains `offset`.
    pub fn path_at(&self, offset: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut node = self.root();
        'descend: loop {
            // Keys before array entries, as a table's keys and an array's
            // entries never mix in one node.
            for (step, child) in node.children() {
                if child.contains(offset) {
                    match step {
                        Step::Key(k) => out.push(k.to_string()),
                        Step::Index(i) => {
                            if let Some(last) = out.last_mut() {
                                last.push_str(&format!("[{}]", i + 1));
                            }
                        }
                    }
                    node = child;
                    continue 'descend;
                }
            }
            return out;
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

    fn line(p: &Spans, path: &[Seg<'_>]) -> Option<usize> {
        p.offset(path).map(|o| line_of(TEXT, o))
    }

    #[test]
    fn lines_of_values_tables_and_array_entries() {
        let p = Spans::parse(TEXT).unwrap();
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
        let p = Spans::parse(TEXT).unwrap();
        assert_eq!(line(&p, &["metadata".into(), "use_ipv6".into()]), Some(2));
        let absent = ["eni".into(), 0.into(), "table_routes".into(), 0.into()];
        assert_eq!(line(&p, &absent), Some(9));
    }

    #[test]
    fn path_at_offset() {
        let p = Spans::parse(TEXT).unwrap();
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
