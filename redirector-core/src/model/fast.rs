//! A fast reader for the plain subset of YAML that resource files are
//! written in: block and flow mappings and sequences, plain scalars made of
//! `[A-Za-z0-9._/-]`, and quoted scalars without escapes.
//!
//! Through serde_yaml (libyaml's events, then a tree built from them) the
//! agent loaded resource documents at about 5 MB/s per CPU here; this reader
//! and typing straight from its nodes ([`super::node`]) load the same
//! documents about ten times faster. It reads a document into a [`Node`]
//! tree whose [`Node::to_value`] is the value that
//! [`super::yaml::read_document`] gives, or declines it (`None`) at the
//! first thing outside the subset: tags, anchors, block scalars, escapes,
//! multi-line scalars, duplicate keys, numbers other than plain decimal
//! `u64`s, tabs, and anything it is not sure of. A declined document is
//! read by libyaml, so every message is libyaml's.
//! `fast_reader_agrees_with_libyaml` holds the two readers to the same
//! value, and `the_fast_path_types_resources_as_the_slow_path` (in
//! [`super::load`]) the typed results.

use super::node::Node;
use bumpalo::{Bump, collections::Vec as BVec};
#[cfg(test)]
use serde_yaml::Value;

/// Mappings with more entries than this check keys for duplicates in a set.
const SMALL_MAP: usize = 16;

/// Adds `key` to a mapping being read; `None` when it is already there.
fn insert<'a>(map: &mut BVec<'a, (&'a str, Node<'a>)>, seen: &mut Option<std::collections::HashSet<&'a str>>, key: &'a str, value: Node<'a>) -> Option<()> {
    if map.len() < SMALL_MAP {
        if map.iter().any(|(k, _)| *k == key) {
            return None;
        }
    } else {
        let seen = seen.get_or_insert_with(|| map.iter().map(|(k, _)| *k).collect());
        if !seen.insert(key) {
            return None;
        }
    }
    map.push((key, value));
    Some(())
}

/// How deep collections may nest here; deeper ones are declined.
const MAX_DEPTH: usize = 64;

/// One document of a stream, by byte ranges of the stream.
#[derive(Clone, Debug)]
pub(super) struct Document {
    /// From its `---` marker (or the stream's start) to the next marker.
    pub(super) span: std::ops::Range<usize>,
    /// Whether it starts with a marker (then its content starts on the
    /// marker's line, after the `---`).
    pub(super) marked: bool,
}

/// The documents of a stream, cut at its `---` markers, or `None` for a
/// stream the subset does not cover (directives, document end markers).
/// Content before the first marker is a document unless it is only blank
/// lines and comments, as libyaml counts documents.
pub(super) fn split(text: &str) -> Option<Vec<Document>> {
    let mut documents = Vec::new();
    let (mut start, mut marked, mut offset) = (0, false, 0);
    for line in text.split_inclusive('\n') {
        if is_marker(line.trim_end_matches('\n')) {
            if marked || !is_blank(&text[start..offset]) {
                documents.push(Document { span: start..offset, marked });
            }
            (start, marked) = (offset, true);
        } else if line.starts_with("...") || line.starts_with('%') {
            return None;
        }
        offset += line.len();
    }
    if marked || !is_blank(&text[start..]) {
        documents.push(Document { span: start..text.len(), marked });
    }
    Some(documents)
}

/// A document start marker line.
fn is_marker(line: &str) -> bool {
    line.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// Only blank lines and comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// Reads one document (its span), or declines it.
pub(super) fn read<'a>(document: &'a str, marked: bool, arena: &'a Bump) -> Option<Node<'a>> {
    // Line breaks other than `\n`, tabs, control bytes and non-ASCII text
    // (which libyaml checks for characters it does not allow) are left to
    // libyaml. At the end [`Reader::peek`] gives a NUL, so none may be inside.
    if !document.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\n') {
        return None;
    }
    let mut p = Reader { text: document, s: document.as_bytes(), i: 0, depth: 0, arena };
    let first = if marked {
        p.i = 3;
        p.spaces();
        match p.peek() {
            // Content on the marker's line can only be a flow collection here.
            b'{' | b'[' => {
                let v = p.flow()?;
                p.end_of_line()?;
                return p.next_line()?.is_none().then_some(v);
            }
            b'\n' | b'#' | 0 => {
                p.end_of_line()?;
                p.next_line()?
            }
            _ => return None,
        }
    } else {
        p.first_line()?
    };
    let Some(indent) = first else { return Some(Node::Null) };
    let value = match p.peek() {
        b'{' | b'[' => {
            let v = p.flow()?;
            p.end_of_line()?;
            v
        }
        _ => p.block(indent)?,
    };
    // Nothing may follow the document's node.
    p.next_line()?.is_none().then_some(value)
}

struct Reader<'a> {
    /// The document, for slicing scalars out of it without checking UTF-8 again.
    text: &'a str,
    s: &'a [u8],
    i: usize,
    depth: usize,
    /// Where the collections go.
    arena: &'a Bump,
}

/// Bytes of a plain scalar in the subset.
fn plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-')
}

impl<'a> Reader<'a> {
    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn at(&self, k: usize) -> u8 {
        self.s.get(self.i + k).copied().unwrap_or(0)
    }

    fn spaces(&mut self) {
        while self.peek() == b' ' {
            self.i += 1;
        }
    }

    /// Skips spaces and a comment after one; must then be at a line end.
    fn end_of_line(&mut self) -> Option<()> {
        let before = self.i;
        self.spaces();
        if self.peek() == b'#' && (self.i > before || self.i == 0 || self.s[self.i - 1] == b' ') {
            while !matches!(self.peek(), b'\n' | 0) {
                self.i += 1;
            }
        }
        match self.peek() {
            b'\n' | 0 => Some(()),
            _ => None,
        }
    }

    /// Moves to the first content of the next line that has any (skipping
    /// blank and comment lines) and returns its indentation, or `None` at the
    /// end. Only spaces and a comment may be left on the current line.
    fn next_line(&mut self) -> Option<Option<usize>> {
        while !matches!(self.peek(), b'\n' | 0) {
            match self.peek() {
                b' ' => self.i += 1,
                b'#' => {
                    while !matches!(self.peek(), b'\n' | 0) {
                        self.i += 1;
                    }
                }
                _ => return None,
            }
        }
        if self.peek() == 0 {
            return Some(None);
        }
        self.i += 1;
        self.first_line()
    }

    /// From a line's start, moves to the first content of this or a later
    /// line, skipping blank and comment lines, and returns its indentation.
    /// Declines tabs in indentation.
    fn first_line(&mut self) -> Option<Option<usize>> {
        loop {
            let start = self.i;
            self.spaces();
            match self.peek() {
                0 => return Some(None),
                b'\t' => return None,
                b'\n' | b'#' => {
                    while !matches!(self.peek(), b'\n' | 0) {
                        self.i += 1;
                    }
                    if self.peek() == b'\n' {
                        self.i += 1;
                    }
                }
                _ => return Some(Some(self.i - start)),
            }
        }
    }

    fn column(&self) -> usize {
        let line_start = self.s[..self.i].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        self.i - line_start
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Whether a block sequence item (`- ` or `-` at the line's end) starts here.
    fn at_item(&self) -> bool {
        self.peek() == b'-' && matches!(self.at(1), b' ' | b'\n')
    }

    /// A block node whose first line starts here, at column `indent`.
    fn block(&mut self, indent: usize) -> Option<Node<'a>> {
        if self.at_item() {
            self.sequence(indent)
        } else {
            self.mapping(indent)
        }
    }

    /// A block sequence at column `indent`, at its first `-`.
    fn sequence(&mut self, indent: usize) -> Option<Node<'a>> {
        self.enter()?;
        let mut items = BVec::new_in(self.arena);
        loop {
            // At a `-` at column `indent`.
            self.i += 1;
            self.spaces();
            let item = match self.peek() {
                b'\n' | b'#' | 0 => {
                    self.end_of_line()?;
                    let mark = self.i;
                    match self.next_line()? {
                        Some(n) if n > indent => self.block(n)?,
                        _ => {
                            self.i = mark;
                            Node::Null
                        }
                    }
                }
                _ if self.at_item() => return None,
                _ if self.starts_key() => {
                    let column = self.column();
                    self.mapping(column)?
                }
                _ => self.inline()?,
            };
            items.push(item);
            let mark = self.i;
            match self.next_line()? {
                Some(n) if n == indent && self.at_item() => {}
                // A line at the sequence's column that is no item ends it
                // (a sequence may sit at its key's column).
                Some(n) if n > indent => return None,
                _ => {
                    self.i = mark;
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(Node::Seq(items))
    }

    /// Whether a plain key and `: ` (or `:` at the line end) start here.
    fn starts_key(&self) -> bool {
        let mut k = self.i;
        while self.s.get(k).copied().is_some_and(plain_byte) {
            k += 1;
        }
        k > self.i && self.s.get(k) == Some(&b':') && matches!(self.s.get(k + 1), Some(b' ' | b'\n') | None)
    }

    /// A block mapping at column `indent`, at its first key.
    fn mapping(&mut self, indent: usize) -> Option<Node<'a>> {
        self.enter()?;
        let (mut map, mut seen) = (BVec::new_in(self.arena), None);
        loop {
            if !self.starts_key() {
                return None;
            }
            let key = self.plain_key()?;
            self.i += 1; // the `:`
            self.spaces();
            let value = match self.peek() {
                b'\n' | b'#' | 0 => {
                    self.end_of_line()?;
                    let mark = self.i;
                    match self.next_line()? {
                        Some(n) if n > indent => self.block(n)?,
                        // A sequence may sit at its key's column.
                        Some(n) if n == indent && self.at_item() => {
                            self.sequence(n)?
                        }
                        _ => {
                            self.i = mark;
                            Node::Null
                        }
                    }
                }
                _ => self.inline()?,
            };
            insert(&mut map, &mut seen, key, value)?;
            let mark = self.i;
            match self.next_line()? {
                Some(n) if n == indent => {}
                Some(n) if n > indent => return None,
                _ => {
                    self.i = mark;
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(Node::Map(map))
    }

    /// A value on the rest of a block line: a flow collection or a scalar,
    /// then the line's end.
    fn inline(&mut self) -> Option<Node<'a>> {
        let value = match self.peek() {
            b'{' | b'[' => {
                let line = self.line_end();
                let v = self.flow()?;
                // A flow collection over several lines is left to libyaml.
                if self.i > line {
                    return None;
                }
                v
            }
            b'"' | b'\'' => self.quoted()?,
            _ => self.plain()?,
        };
        self.end_of_line()?;
        Some(value)
    }

    fn line_end(&self) -> usize {
        self.s[self.i..].iter().position(|&b| b == b'\n').map_or(self.s.len(), |p| self.i + p)
    }

    /// Skips spaces and line breaks inside a flow collection.
    fn flow_space(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                b' ' | b'\n' => self.i += 1,
                // Comments and tabs inside flow collections are left to libyaml.
                b'#' | b'\t' => return None,
                _ => return Some(()),
            }
        }
    }

    /// A flow collection, at its opening bracket.
    fn flow(&mut self) -> Option<Node<'a>> {
        self.enter()?;
        let close = if self.peek() == b'{' { b'}' } else { b']' };
        self.i += 1;
        self.flow_space()?;
        let value = if close == b'}' {
            let (mut map, mut seen) = (BVec::new_in(self.arena), None);
            if self.peek() != b'}' {
                loop {
                    let key = match self.peek() {
                        b'"' | b'\'' => {
                            let Node::Str(k) = self.quoted()? else { return None };
                            self.spaces();
                            if self.peek() != b':' {
                                return None;
                            }
                            k
                        }
                        _ => {
                            let k = self.plain_key()?;
                            if self.peek() != b':' || !matches!(self.at(1), b' ' | b'\n') {
                                return None;
                            }
                            k
                        }
                    };
                    self.i += 1;
                    self.flow_space()?;
                    let value = self.flow_item()?;
                    insert(&mut map, &mut seen, key, value)?;
                    if !self.flow_next(b'}')? {
                        break;
                    }
                }
            }
            Node::Map(map)
        } else {
            let mut items = BVec::new_in(self.arena);
            if self.peek() != b']' {
                loop {
                    items.push(self.flow_item()?);
                    if !self.flow_next(b']')? {
                        break;
                    }
                }
            }
            Node::Seq(items)
        };
        self.i += 1;
        self.depth -= 1;
        Some(value)
    }

    /// After an entry: `true` at a `,` (and the next entry), `false` at the
    /// closing bracket (not consumed).
    fn flow_next(&mut self, close: u8) -> Option<bool> {
        self.flow_space()?;
        match self.peek() {
            b',' => {
                self.i += 1;
                self.flow_space()?;
                // A trailing comma is left to libyaml.
                (self.peek() != close).then_some(true)
            }
            c if c == close => Some(false),
            _ => None,
        }
    }

    /// A value inside a flow collection.
    fn flow_item(&mut self) -> Option<Node<'a>> {
        match self.peek() {
            b'{' | b'[' => self.flow(),
            b'"' | b'\'' => self.quoted(),
            _ => {
                let v = self.plain()?;
                // `[a: b]` (a one-pair mapping) is left to libyaml.
                if self.peek() == b':' {
                    return None;
                }
                Some(v)
            }
        }
    }

    /// The text of a plain scalar here.
    fn plain_text(&mut self) -> Option<&'a str> {
        let start = self.i;
        while plain_byte(self.peek()) {
            self.i += 1;
        }
        // ASCII bytes only, so both ends are character boundaries.
        let text = self.text.get(start..self.i)?;
        (!text.is_empty()).then_some(text)
    }

    /// A plain mapping key; only keys that read as strings.
    fn plain_key(&mut self) -> Option<&'a str> {
        match self.plain()? {
            Node::Str(key) => Some(key),
            _ => None,
        }
    }

    /// A plain scalar, resolved as serde_yaml resolves it.
    fn plain(&mut self) -> Option<Node<'a>> {
        let text = self.plain_text()?;
        resolve(text)
    }

    /// A single- or double-quoted scalar on one line, without escapes.
    fn quoted(&mut self) -> Option<Node<'a>> {
        let quote = self.peek();
        let start = self.i + 1;
        let mut k = start;
        loop {
            let b = *self.s.get(k)?;
            if b == quote {
                break;
            }
            // Escapes, line breaks, control and non-ASCII bytes are left to libyaml.
            if b == b'\\' || !(0x20..0x7f).contains(&b) {
                return None;
            }
            k += 1;
        }
        // `''` inside single quotes is an escaped quote.
        if quote == b'\'' && self.s.get(k + 1) == Some(&b'\'') {
            return None;
        }
        self.i = k + 1;
        // A quoted scalar must be followed by a separator.
        if !matches!(self.peek(), b' ' | b'\n' | b',' | b']' | b'}' | b':' | 0) {
            return None;
        }
        Some(Node::Str(self.text.get(start..k)?))
    }
}

/// The value of a plain scalar made of [`plain_byte`]s, as serde_yaml
/// resolves it (YAML 1.2 core schema), or `None` where that takes more
/// than telling a word from a plain decimal number.
fn resolve(text: &str) -> Option<Node<'_>> {
    match text {
        "null" | "Null" | "NULL" => return Some(Node::Null),
        "true" | "True" | "TRUE" => return Some(Node::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Node::Bool(false)),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if first.is_ascii_alphabetic() || first == b'_' || first == b'/' {
        // Not a number: numbers start with a digit, a sign or a dot, and
        // Rust's float parser's words (`inf`, `nan`) are not finite.
        return Some(Node::Str(text));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // A leading zero makes digits a string; leave those to libyaml.
        if text.len() > 1 && first == b'0' {
            return None;
        }
        return text.parse::<u64>().ok().map(Node::Int);
    }
    // Digits and at least two dots (an IPv4 address) are no number.
    if first.is_ascii_digit() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') && text.bytes().filter(|&b| b == b'.').count() >= 2 {
        return Some(Node::Str(text));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::{prelude::*, strategy::ValueTree};

    /// libyaml's reading of one document, as the slow path reads it; `None`
    /// when it fails or notes what the value does not show.
    fn libyaml(document: &str) -> Option<Value> {
        let mut documents = serde_yaml::Deserializer::from_str(document);
        let first = documents.next()?;
        let (value, notes) = super::super::yaml::read_document(first).ok()?;
        if documents.next().is_some() || !notes.tags.is_empty() || !notes.big_numbers.is_empty() {
            return None;
        }
        Some(value)
    }

    const SCALARS: &[&str] = &[
        "a", "s-1", "kuma.io/service", "_port", "/x", "80", "0", "007", "0x1F", "0o7", "1e5", "1.5", "127.0.0.1",
        "1.2", "null", "Null", "~", "true", "False", "yes", "", "-", "-1", "+1", ".inf", ".5", "a b", "a:b",
        "a#b", "'q'", "\"q\"", "'it''s'", "\"a\\nb\"", "\"\"", "''", "18446744073709551616", "18446744073709551615",
        "!tag x", "&a x", "*a", "|", ">", "@x", "a,b", "::1", "NaN", "inf", "- x", "x-", "1-2", "1.2.3.4.5", "1..2",
    ];
    const KEYS: &[&str] = &["a", "b", "a", "type", "kuma.io/mesh", "\"q\"", "'k'", "80", "null", "true", "a b", "?x", "-k", "x.y"];

    #[derive(Clone, Debug)]
    enum Node {
        Scalar(&'static str),
        Map(Vec<(&'static str, Node)>),
        Seq(Vec<Node>),
    }

    fn node() -> impl Strategy<Value = Node> {
        let plain = prop::sample::select(&["a", "s-1", "kuma.io/service", "80", "0", "127.0.0.1", "null", "true", "x.y", "_p", "'q'", "\"q\""][..]);
        let leaf = prop_oneof![3 => plain, 1 => prop::sample::select(SCALARS)].prop_map(Node::Scalar);
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec((prop::sample::select(KEYS), inner.clone()), 0..4).prop_map(Node::Map),
                prop::collection::vec(inner, 0..4).prop_map(Node::Seq),
            ]
        })
    }

    /// Renders `node` with layout choices drawn from `choices`.
    struct Render<'c> {
        choices: &'c [u8],
        at: usize,
        out: String,
    }

    impl Render<'_> {
        fn choose(&mut self, n: u8) -> u8 {
            let c = self.choices.get(self.at % self.choices.len().max(1)).copied().unwrap_or(0);
            self.at += 1;
            c % n
        }

        fn pick(&mut self, options: &[&str]) {
            let i = self.choose(options.len() as u8) as usize;
            self.out.push_str(options[i]);
        }

        fn noise(&mut self) -> &'static str {
            ["", "", "", " ", "  # note", " #c"][self.choose(6) as usize]
        }

        fn flow(&mut self, node: &Node) {
            match node {
                Node::Scalar(s) => self.out.push_str(s),
                Node::Map(entries) => {
                    self.out.push('{');
                    for (i, (k, v)) in entries.iter().enumerate() {
                        if i > 0 {
                            self.pick(&[", ", ",", ",\n  ", " , "]);
                        }
                        self.out.push_str(k);
                        self.pick(&[": ", ":", " : ", ":\n "]);
                        self.flow(v);
                    }
                    self.pick(&["}", " }", ",}"]);
                }
                Node::Seq(items) => {
                    self.out.push('[');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            self.pick(&[", ", ",", ",\n "]);
                        }
                        self.flow(v);
                    }
                    self.pick(&["]", " ]", ",]"]);
                }
            }
        }

        /// A value after `key:` or `- ` at column `indent`.
        fn value(&mut self, node: &Node, indent: usize, in_seq: bool) {
            let block = matches!(node, Node::Map(e) if !e.is_empty()) || matches!(node, Node::Seq(i) if !i.is_empty());
            if !block || self.choose(3) == 0 {
                self.out.push(' ');
                self.flow(node);
                let noise = self.noise();
                self.out.push_str(noise);
                self.out.push('\n');
                return;
            }
            if in_seq && matches!(node, Node::Map(_)) && self.choose(2) == 0 {
                // Compact: the mapping starts on the item's line.
                self.out.push(' ');
                self.block(node, indent + 2, true);
                return;
            }
            let noise = self.noise();
            self.out.push_str(noise);
            self.out.push('\n');
            if self.choose(5) == 0 {
                self.out.push_str("\n# between\n");
            }
            let step = [2, 4, 1, 0][self.choose(4) as usize];
            self.block(node, indent + step, false);
        }

        fn block(&mut self, node: &Node, indent: usize, first_inline: bool) {
            let pad = " ".repeat(indent);
            let mut first = first_inline;
            match node {
                Node::Map(entries) => {
                    for (k, v) in entries {
                        if !first {
                            self.out.push_str(&pad);
                        }
                        first = false;
                        self.out.push_str(k);
                        self.out.push(':');
                        self.value(v, indent, false);
                    }
                }
                Node::Seq(items) => {
                    for v in items {
                        if !first {
                            self.out.push_str(&pad);
                        }
                        first = false;
                        self.out.push('-');
                        self.value(v, indent, true);
                    }
                }
                Node::Scalar(s) => {
                    self.out.push_str(&pad);
                    self.out.push_str(s);
                    self.out.push('\n');
                }
            }
        }
    }

    fn render(node: &Node, choices: &[u8], marked: bool) -> String {
        let mut r = Render { choices, at: 0, out: String::new() };
        if marked {
            r.pick(&["---\n", "--- ", "--- # c\n"]);
        }
        if r.out.ends_with(' ') {
            r.flow(node);
            r.out.push('\n');
        } else {
            r.block(node, 0, false);
        }
        r.out
    }

    /// A rendered document, with a byte of YAML syntax inserted or removed
    /// at a random place to make near misses.
    fn case() -> impl Strategy<Value = String> {
        let edit = prop::option::weighted(0.4, (
            any::<prop::sample::Index>(),
            prop::sample::select(&[":", " ", "\n", "-", "#", "\t", "{", "}", "[", "]", ",", "\"", "'", "\r", "", "---\n", "\0", "é", "\u{85}"][..]),
        ));
        (node(), prop::collection::vec(any::<u8>(), 1..64), any::<bool>(), edit).prop_map(|(node, choices, marked, edit)| {
            let mut text = render(&node, &choices, marked);
            if let Some((at, insert)) = edit {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                if insert.is_empty() && i < text.len() {
                    text.remove(i);
                } else {
                    text.insert_str(i, insert);
                }
            }
            text
        })
    }

    /// Whatever the fast reader reads, libyaml reads the same; what libyaml
    /// rejects, the fast reader declines. A fifth of the cases at least must
    /// be read fast, or the test proves nothing.
    #[test]
    fn fast_reader_agrees_with_libyaml() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = case();
        let (mut documents, mut fast) = (0, 0);
        for _ in 0..10_000 {
            let text = strategy.new_tree(&mut runner).unwrap().current();
            for document in split(&text).unwrap_or_default() {
                documents += 1;
                let span = &text[document.span.clone()];
                if let Some(node) = read(span, document.marked, &bumpalo::Bump::new()) {
                    fast += 1;
                    assert_eq!(Some(node.to_value()), libyaml(span), "document {span:?}");
                }
            }
        }
        assert!(fast * 5 > documents, "{fast} of {documents} documents read fast");
    }

    #[test]
    fn resource_documents_are_in_the_subset() {
        let documents = [
            "--- {type: MeshService, name: s-1, mesh: default, spec: {selector: {dataplaneTags: {app: s-1}}, ports: [{port: 80, targetPort: 8080, name: main}]}, status: {vips: [{ip: 127.40.0.1}]}}\n",
            "---\ntype: MeshTCPRoute\nname: r-1\nspec:\n  targetRef:\n    kind: Mesh\n  to:\n  - targetRef: {kind: MeshService, name: s-1}\n    rules:\n      - default:\n          backendRefs:\n            - kind: MeshService # the canary\n              name: v2\n              port: 80\n              weight: 10\n",
            "apiVersion: kuma.io/v1alpha1\nkind: MeshService\nmetadata:\n  name: s\n  namespace: kuma-demo\n  labels:\n    kuma.io/mesh: \"default\"\nspec:\n  ports:\n  - port: 80\n    targetPort: 8080\n",
        ];
        for (i, text) in documents.iter().enumerate() {
            let split = split(text).unwrap();
            assert_eq!(split.len(), 1);
            let arena = bumpalo::Bump::new();
            let fast = read(&text[split[0].span.clone()], split[0].marked, &arena);
            assert!(fast.is_some(), "document {i} is read fast");
            assert_eq!(fast.map(|n| n.to_value()), libyaml(text));
        }
    }
}
