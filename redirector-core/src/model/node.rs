//! The documents the fast reader ([`super::fast`]) reads: a tree of
//! [`Node`]s, its [`Value`], and typing resources straight from it.
//!
//! Typing a node ([`Deserializer`] for `&Node`) does what typing its
//! [`Value`] with serde_yaml does, wherever that succeeds; where serde_yaml
//! would fail, or might do anything else, it fails ([`Declined`]), and the
//! document goes to libyaml and the slow path, which say what is wrong.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value};
use bumpalo::collections::Vec as BVec;
use std::fmt;

/// A node of a document read by the fast reader. Scalars are slices of the
/// text, resolved as serde_yaml resolves them; mapping keys are strings,
/// each once. Collections live in the reader's arena: a document's nodes are
/// gone as soon as its resources are typed, and one arena per file serves
/// every document without a single allocation of its own.
#[derive(Debug, PartialEq)]
pub(super) enum Node<'a> {
    Null,
    Bool(bool),
    Int(u64),
    Str(&'a str),
    Map(BVec<'a, (&'a str, Node<'a>)>),
    Seq(BVec<'a, Node<'a>>),
}

impl Node<'_> {
    /// The [`Value`] serde_yaml reads for this node.
    pub(super) fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(n) => Value::Number((*n).into()),
            Node::Str(s) => Value::String((*s).to_owned()),
            Node::Map(entries) => {
                let mut map = Mapping::with_capacity(entries.len());
                for (k, v) in entries {
                    map.insert(Value::String((*k).to_owned()), v.to_value());
                }
                Value::Mapping(map)
            }
            Node::Seq(items) => Value::Sequence(items.iter().map(Node::to_value).collect()),
        }
    }

    /// The value of `key` in a mapping.
    pub(super) fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why typing a node failed; the document is then read by libyaml, whose
/// messages say what is wrong.
#[derive(Debug)]
pub(super) struct Declined;

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("left to libyaml")
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Declined
    }
}

impl Node<'_> {
    /// A scalar as the [`Value`] serde_yaml would read; collections have none.
    fn scalar(&self) -> Result<Value, Declined> {
        match self {
            Node::Map(_) | Node::Seq(_) => Err(Declined),
            scalar => Ok(scalar.to_value()),
        }
    }
}

/// Types a node as serde_yaml types the [`Value`] of `Node::to_value`,
/// wherever that succeeds; where serde_yaml would fail, or might do
/// something this does not, it fails too (`Declined`).
impl<'de, 'a: 'de> Deserializer<'de> for &'de Node<'a> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Int(n) => visitor.visit_u64(*n),
            Node::Str(s) => visitor.visit_borrowed_str(s),
            Node::Map(entries) => visit_map(entries.iter().map(|(k, v)| (*k, v)), visitor),
            Node::Seq(items) => visit_seq(items, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self {
            Node::Str(s) => visitor.visit_borrowed_str(s),
            _ => Err(Declined),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_str(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self {
            Node::Seq(items) => visit_seq(items, visitor),
            Node::Null => visit_seq(&[], visitor),
            _ => Err(Declined),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _name: &'static str, _len: usize, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self {
            Node::Map(entries) => visit_map(entries.iter().map(|(k, v)| (*k, v)), visitor),
            Node::Null => visit_map(std::iter::empty(), visitor),
            _ => Err(Declined),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _name: &'static str, _fields: &'static [&'static str], visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(self, _name: &'static str, _variants: &'static [&'static str], visitor: V) -> Result<V::Value, Declined> {
        // A unit variant by name; anything else is left to libyaml.
        match self {
            Node::Str(s) => visitor.visit_enum(de::value::BorrowedStrDeserializer::<Declined>::new(s)),
            _ => Err(Declined),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Declined> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self {
            Node::Null => visitor.visit_unit(),
            _ => Err(Declined),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_unit(visitor)
    }

    // Numbers, booleans and the rest: exactly as serde_yaml's own Value does.
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_bool(visitor).map_err(|_| Declined)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_i8(visitor).map_err(|_| Declined)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_i16(visitor).map_err(|_| Declined)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_i32(visitor).map_err(|_| Declined)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_i64(visitor).map_err(|_| Declined)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_u8(visitor).map_err(|_| Declined)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_u16(visitor).map_err(|_| Declined)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_u32(visitor).map_err(|_| Declined)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_u64(visitor).map_err(|_| Declined)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_f32(visitor).map_err(|_| Declined)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_f64(visitor).map_err(|_| Declined)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.scalar()?.deserialize_char(visitor).map_err(|_| Declined)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Declined> {
        Err(Declined)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Declined> {
        Err(Declined)
    }
}

/// Visits a sequence's items; fails if the visitor leaves some.
fn visit_seq<'de, 'a: 'de, V: Visitor<'de>>(items: &'de [Node<'a>], visitor: V) -> Result<V::Value, Declined> {
    let mut access = Items(items.iter());
    let value = visitor.visit_seq(&mut access)?;
    if access.0.len() == 0 { Ok(value) } else { Err(Declined) }
}

struct Items<'de, 'a>(std::slice::Iter<'de, Node<'a>>);

impl<'de, 'a: 'de> SeqAccess<'de> for Items<'de, 'a> {
    type Error = Declined;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Declined> {
        self.0.next().map(|n| seed.deserialize(n)).transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Visits a mapping's entries (keys are strings); fails if the visitor
/// leaves some.
pub(super) fn visit_map<'de, 'a: 'de, V: Visitor<'de>>(entries: impl Iterator<Item = (&'a str, &'de Node<'a>)>, visitor: V) -> Result<V::Value, Declined> {
    let mut access = Entries { entries, value: None };
    let value = visitor.visit_map(&mut access)?;
    if access.entries.next().is_none() { Ok(value) } else { Err(Declined) }
}

struct Entries<'de, 'a, I> {
    entries: I,
    value: Option<&'de Node<'a>>,
}

impl<'de, 'a: 'de, I: Iterator<Item = (&'a str, &'de Node<'a>)>> MapAccess<'de> for Entries<'de, 'a, I> {
    type Error = Declined;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Declined> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(de::value::BorrowedStrDeserializer::<Declined>::new(key)).map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Declined> {
        seed.deserialize(self.value.take().ok_or(Declined)?)
    }
}

/// The entries of a mapping left after some were taken, typed as a mapping.
pub(super) struct Rest<'de, 'a>(pub(super) Vec<(&'a str, &'de Node<'a>)>);

impl<'de, 'a: 'de> Deserializer<'de> for Rest<'de, 'a> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        visit_map(self.0.into_iter(), visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}
