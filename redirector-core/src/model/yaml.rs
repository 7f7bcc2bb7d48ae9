//! Reading one YAML document into a [`Value`], noting what the value alone
//! does not show: where the tags are, and which numbers are beyond 64 bits.
//!
//! serde_yaml's own `Value::deserialize` fails on an integer beyond 64 bits
//! (the whole document is lost, and the resource name with it), and the
//! typed deserializers drop tags without a word. Here every node is read
//! knowing its field path, so both can be reported at their field.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_yaml::{
    Mapping, Number, Value,
    value::{Tag, TaggedValue},
};
use std::{collections::HashMap, fmt, fmt::Write as _};

/// A number beyond 64 bits, as it was read. In the [`Value`] it is a float.
#[derive(Debug)]
pub(super) enum BigNumber {
    /// An integer within 128 bits, as written.
    Integer(String),
    /// A float with an integral value beyond 64 bits. libyaml reads an
    /// integer beyond 128 bits as a float, so its digits are lost.
    Float(f64),
}

impl fmt::Display for BigNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(text) => f.write_str(text),
            Self::Float(v) => write!(f, "{v:e}"),
        }
    }
}

/// What reading one document noticed, by field path (`spec.to[0].weight`,
/// the notation of `serde_path_to_error`).
#[derive(Debug, Default)]
pub(super) struct Notes {
    /// Every tagged node, in document order: its path and its tag (`!foo`).
    pub(super) tags: Vec<(String, String)>,
    /// Every number beyond 64 bits.
    pub(super) big_numbers: HashMap<String, BigNumber>,
    /// Where the node being read is.
    at: Vec<Segment>,
}

/// One step of a field path: a mapping key or a list index.
#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Notes {
    /// The path of the node being read, with `key` appended when given.
    fn path(&self, key: Option<&str>) -> String {
        let mut path = String::new();
        let mut separator = "";
        for segment in &self.at {
            match segment {
                Segment::Key(k) => {
                    path.push_str(separator);
                    path.push_str(k);
                }
                Segment::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
            }
            separator = ".";
        }
        if let Some(k) = key {
            path.push_str(separator);
            path.push_str(k);
        }
        path
    }
}

/// A tag as written: `!foo`, or `!` for the non-specific tag (which
/// serde_yaml's `Tag` displays as `!!`).
pub(super) fn tag_text(tag: &Tag) -> String {
    let shown = tag.to_string();
    if shown == "!!" { "!".into() } else { shown }
}

/// Reads one document into a [`Value`] (tags kept as `Value::Tagged`,
/// numbers beyond 64 bits as floats) and what was noticed on the way.
pub(super) fn read_document<'de, D: Deserializer<'de>>(document: D) -> Result<(Value, Notes), D::Error> {
    let mut notes = Notes::default();
    let value = Node { notes: &mut notes, key: false }.deserialize(document)?;
    Ok((value, notes))
}

/// One node of the document; `key` when it is a mapping key (a tag on a
/// key is noted at the path of its entry).
struct Node<'n> {
    notes: &'n mut Notes,
    key: bool,
}

impl Node<'_> {
    fn big(self, number: BigNumber, approximation: f64) -> Value {
        let path = self.notes.path(None);
        self.notes.big_numbers.insert(path, number);
        Value::Number(Number::from(approximation))
    }
}

/// The text a key adds to a field path.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Tagged(t) => key_text(&t.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => "?".into(),
    }
}

/// serde_yaml's message for a key given twice.
fn duplicate_key(key: &Value) -> String {
    match key {
        Value::Null => "duplicate entry with null key".into(),
        Value::Bool(b) => format!("duplicate entry with key `{b}`"),
        Value::Number(n) => format!("duplicate entry with key {n}"),
        Value::String(s) => format!("duplicate entry with key {s:?}"),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => "duplicate entry in YAML map".into(),
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(small) => Value::Number(small.into()),
            Err(_) => self.big(BigNumber::Integer(v.to_string()), v as f64),
        })
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(match u64::try_from(v) {
            Ok(small) => Value::Number(small.into()),
            Err(_) => self.big(BigNumber::Integer(v.to_string()), v as f64),
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // 2^64 and -2^63: the ends of u64 and i64, exact as floats.
        let beyond_64_bits = !(-9_223_372_036_854_775_808.0..18_446_744_073_709_551_616.0).contains(&v);
        Ok(if v.is_finite() && v.fract() == 0.0 && beyond_64_bits {
            self.big(BigNumber::Float(v), v)
        } else {
            Value::Number(Number::from(v))
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            self.notes.at.push(Segment::Index(out.len()));
            let item = seq.next_element_seed(Node { notes: &mut *self.notes, key: false });
            self.notes.at.pop();
            match item? {
                Some(value) => out.push(value),
                None => return Ok(Value::Sequence(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Mapping::new();
        while let Some(key) = map.next_key_seed(Node { notes: &mut *self.notes, key: true })? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(duplicate_key(&key)));
            }
            self.notes.at.push(Segment::Key(key_text(&key)));
            let value = map.next_value_seed(Node { notes: &mut *self.notes, key: false });
            self.notes.at.pop();
            out.insert(key, value?);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, content) = data.variant::<String>()?;
        // libyaml never gives an empty tag, and `Tag::new` would panic on one.
        let tag = Tag::new(if tag.is_empty() { "!".into() } else { tag });
        // Noted before the content, so that tags are listed in document order.
        let slot = self.notes.tags.len();
        self.notes.tags.push((String::new(), tag_text(&tag)));
        let value = content.newtype_variant_seed(Node { notes: &mut *self.notes, key: self.key })?;
        self.notes.tags[slot].0 = self.notes.path(self.key.then(|| key_text(&value)).as_deref());
        Ok(Value::Tagged(Box::new(TaggedValue { tag, value })))
    }
}

/// How deep flow collections (`[...]`, `{...}`) may nest. Kuma resources
/// nest a handful of levels; libyaml's scanner takes quadratic time on deep
/// flow nesting (80,000 levels in 160 KB took 25 s), long before serde_yaml's
/// own recursion limit is reached, so the text is checked before parsing.
pub(super) const MAX_FLOW_DEPTH: usize = 64;

/// Fails, naming the line (`text` starting at `first_line`) and column,
/// when flow collections in `text` nest deeper than [`MAX_FLOW_DEPTH`]. A
/// linear scan: quoted scalars and comments are skipped, and a bracket
/// counts only where a flow collection can start (after indentation, `: `,
/// `- `, `,` or another opening bracket), so brackets inside plain scalars
/// such as `a[0]` do not.
pub(super) fn check_flow_depth(text: &str, first_line: usize) -> Result<(), String> {
    let (mut depth, mut line, mut column) = (0usize, first_line, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    // Whether a flow collection may start here.
    let mut may_open = true;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        // Whether `c` opened a flow collection.
        let mut opened = false;
        if c == '\n' {
            (line, column, comment, may_open) = (line + 1, 0, false, true);
            prev = c;
            continue;
        }
        if comment {
            continue;
        }
        match quote {
            Some('\'') if c == '\'' => {
                // '' is an escaped quote inside a single-quoted scalar.
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    quote = None;
                }
            }
            Some('"') if c == '\\' => {
                chars.next();
                column += 1;
            }
            Some('"') if c == '"' => quote = None,
            Some(_) => {}
            None => match c {
                '#' if prev.is_whitespace() => comment = true,
                '\'' | '"' if may_open => quote = Some(c),
                '[' | '{' if may_open => {
                    opened = true;
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!(
                            "YAML nesting deeper than {MAX_FLOW_DEPTH} levels at line {line} column {column} (flow collections nest at most {MAX_FLOW_DEPTH} deep)"
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        if quote.is_none() {
            may_open = match c {
                '[' | '{' => opened,
                // In block context a comma is part of a plain scalar.
                ',' => depth > 0,
                ':' | '-' | '?' => chars.peek().is_none_or(|n| n.is_whitespace()),
                c if c.is_whitespace() => may_open,
                _ => false,
            };
        }
        prev = c;
    }
    Ok(())
}
