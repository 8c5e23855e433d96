//! Terms: the version-independent values that cross the plugin boundary.
//!
//! A hot code upgrade replaces one version of a plugin library with another
//! while the process keeps running. Anything that outlives a single call —
//! a plugin's state handed over during an upgrade, messages queued for a
//! plugin, replies going back to the host — must therefore not depend on the
//! layout, the allocator or the code of any particular library version. A
//! pointer into an old library (a vtable, a `&'static str`, a boxed closure)
//! must never survive that library being unloaded, or the next use of it
//! jumps into unmapped memory.
//!
//! [`Term`] solves this the way Erlang does: state and messages are plain,
//! owned, self-describing values (atoms, integers, floats, strings, binaries,
//! lists, tuples and maps) that the host owns and that every plugin version
//! can read, whatever its own Rust types look like. A new plugin version
//! converts the old version's state term into its own types in its upgrade
//! callback instead of reinterpreting the old version's memory.
//!
//! # Strings are lists
//!
//! Erlang has no string type: `"ab"`, `[97,98]` and `[$a,$b]` are one term,
//! and `""` is `[]`. [`Term::Str`] is kept as a variant because text is what
//! plugins mostly handle, but it is only a way of *holding* a list of code
//! points, never a different value: `Term::Str("ab")` equals
//! `Term::List([Int(97), Int(98)])` (`==`, and so [`Term::map_get`]), both
//! print as `"ab"`, `get::<String>()` and `get::<Vec<i64>>()` accept both,
//! and [`Term::as_text`] and [`Term::as_elements`] read either form.
//! [`Term::as_str`] and [`Term::as_list`] still look at the variant only.
//!
//! Terms the host reads from text (a relup's `Extra` and `apply` arguments,
//! an `.app`'s `env`, a request given to `hotcode ctl call`) arrive in one
//! form, [`Term::canonical`]'s: a non-empty list of code points is a
//! `Str`, and `""` is the empty `List`. So a plugin sees the same value
//! whichever way the file wrote it.
//!
//! # Binary encoding
//!
//! At the boundary a term travels as bytes ([`RTerm`] / [`RTermRef`]). Both
//! sides compile this same module, so the encoding below *is* the ABI of
//! terms, and changing it requires bumping [`TERM_FORMAT_VERSION`]:
//!
//! - The first byte is the format version, currently `1`.
//! - Then comes one node, written as a tag byte followed by its payload:
//!   `0x01` atom, `0x02` int, `0x03` float, `0x04` str, `0x05` binary,
//!   `0x06` list, `0x07` tuple, `0x08` map. Tag `0x00` is deliberately
//!   unused so that zero-filled memory is rejected immediately.
//! - Lengths and element counts are unsigned LEB128 varints (7 bits per byte,
//!   least significant group first, high bit set on every byte but the last).
//! - Atom and str payloads are a byte-length varint plus UTF-8 bytes; binary
//!   payloads are a byte-length varint plus the raw bytes.
//! - Ints are zigzag-encoded (`0, -1, 1, -2, ...` map to `0, 1, 2, 3, ...`)
//!   and then written as a varint, so small magnitudes take one byte.
//! - Floats are the 8 bytes of `f64::to_bits` in little-endian order, so
//!   every bit pattern (including NaN payloads and `-0.0`) round-trips.
//! - Lists and tuples are an element-count varint followed by the elements;
//!   maps are a pair-count varint followed by key, value, key, value, ...
//!
//! The encoder always writes minimal varints; the decoder also accepts
//! padded ones. Decoding rejects unknown versions and tags, invalid UTF-8,
//! nesting deeper than [`MAX_DECODE_DEPTH`] containers, and trailing bytes.
//! It never panics and never reserves memory for a claimed length before
//! checking that the remaining input can actually hold that many items.

use std::borrow::Cow;
use std::fmt;

use abi_stable::StableAbi;
use abi_stable::std_types::{RSlice, RVec};

/// The version byte that starts every encoded term.
pub const TERM_FORMAT_VERSION: u8 = 1;

/// The deepest nesting of lists, tuples and maps that [`Term::decode`]
/// accepts.
///
/// Decoding is recursive, so an untrusted input must not be able to nest
/// containers deeply enough to exhaust the stack. Encoding does not enforce
/// this limit, so a term nested deeper than this encodes to bytes that do
/// not decode.
pub const MAX_DECODE_DEPTH: usize = 512;

const TAG_ATOM: u8 = 0x01;
const TAG_INT: u8 = 0x02;
const TAG_FLOAT: u8 = 0x03;
const TAG_STR: u8 = 0x04;
const TAG_BINARY: u8 = 0x05;
const TAG_LIST: u8 = 0x06;
const TAG_TUPLE: u8 = 0x07;
const TAG_MAP: u8 = 0x08;

/// The most container slots the decoder reserves up front for one
/// container.
///
/// A claimed count is only known to be bounded by the remaining input, and
/// each of up to [`MAX_DECODE_DEPTH`] nested containers could claim nearly
/// the whole input before failing. Capping the reservation keeps the memory
/// used for a malformed input proportional to the input, while well-formed
/// large containers simply grow as their elements are actually decoded.
const MAX_PREALLOC: usize = 256;

/// How many characters of a term a [`TermTypeError`] keeps, so that an error
/// about a huge term stays readable and cheap to build.
const FOUND_LIMIT: usize = 60;

/// Words that Erlang reserves and that must therefore be quoted when used
/// as atoms.
const RESERVED_WORDS: &[&str] = &[
    "after", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case", "catch",
    "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive", "rem", "try",
    "when", "xor", "maybe", "else", "and",
];

/// A version-independent value, modelled on Erlang terms.
///
/// A term is plain owned Rust data with no pointers into any library, so it
/// can be kept by the host across plugin upgrades and read by any plugin
/// version.
///
/// Equality is Erlang's exact equality (`=:=`) on values: a [`Term::Str`]
/// equals the [`Term::List`] of its code points (see the [module
/// docs](self#strings-are-lists)); otherwise two terms are equal when they
/// are the same variant with equal contents (`1` and `1.0` differ, floats
/// compare as `f64`, maps compare pair by pair in order).
#[derive(Debug, Clone)]
pub enum Term {
    /// A symbolic constant such as `ok`, `error` or `'Hello world'`.
    Atom(String),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit floating-point number.
    Float(f64),
    /// A string: the list of its code points, held as text. It equals the
    /// [`Term::List`] of the same code points, and `Str("")` equals the
    /// empty list.
    Str(String),
    /// An arbitrary sequence of bytes.
    Binary(Vec<u8>),
    /// A variable-length sequence of terms, written `[a,b]`.
    List(Vec<Term>),
    /// A fixed-shape group of terms, written `{a,b}`.
    Tuple(Vec<Term>),
    /// Key/value pairs, written `#{k => v}`, kept in insertion order.
    ///
    /// Keys are not deduplicated; [`Term::map_get`] returns the first match.
    Map(Vec<(Term, Term)>),
}

impl Term {
    /// Builds an atom from its name.
    pub fn atom(name: impl Into<String>) -> Term {
        Term::Atom(name.into())
    }

    /// Builds a tuple from its elements.
    pub fn tuple(items: impl IntoIterator<Item = Term>) -> Term {
        Term::Tuple(items.into_iter().collect())
    }

    /// Builds a list from its elements.
    pub fn list(items: impl IntoIterator<Item = Term>) -> Term {
        Term::List(items.into_iter().collect())
    }

    /// Builds a map from its key/value pairs, keeping their order.
    pub fn map(pairs: impl IntoIterator<Item = (Term, Term)>) -> Term {
        Term::Map(pairs.into_iter().collect())
    }

    /// The atom `ok`.
    pub fn ok() -> Term {
        Term::atom("ok")
    }

    /// The tuple `{error, Reason}`.
    pub fn error(reason: Term) -> Term {
        Term::Tuple(vec![Term::atom("error"), reason])
    }

    /// Returns the atom's name, or `None` if this is not an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(name) => Some(name),
            _ => None,
        }
    }

    /// Returns whether this is the atom called `name`.
    pub fn is_atom(&self, name: &str) -> bool {
        self.as_atom() == Some(name)
    }

    /// Returns the integer, or `None` if this is not an int.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Term::Int(value) => Some(*value),
            _ => None,
        }
    }

    /// Returns the float, or `None` if this is not a float.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Term::Float(value) => Some(*value),
            _ => None,
        }
    }

    /// Returns the string's text, or `None` if this is not a str.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Term::Str(text) => Some(text),
            _ => None,
        }
    }

    /// Returns the binary's bytes, or `None` if this is not a binary.
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// Returns the list's elements, or `None` if this is not a list.
    pub fn as_list(&self) -> Option<&[Term]> {
        match self {
            Term::List(items) => Some(items),
            _ => None,
        }
    }

    /// Returns the text of a string, whichever form holds it: a
    /// [`Term::Str`], or a [`Term::List`] whose elements are all integers
    /// that are Unicode code points (the empty list is `""`). `None` for
    /// anything else.
    pub fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Term::Str(text) => Some(Cow::Borrowed(text)),
            Term::List(items) => {
                items.iter().map(code_point).collect::<Option<String>>().map(Cow::Owned)
            }
            _ => None,
        }
    }

    /// Returns a list's elements, whichever form holds them: a
    /// [`Term::List`]'s own, or a [`Term::Str`]'s code points as
    /// [`Term::Int`]s. `None` for anything else.
    pub fn as_elements(&self) -> Option<Cow<'_, [Term]>> {
        match self {
            Term::List(items) => Some(Cow::Borrowed(items)),
            Term::Str(text) => {
                Some(Cow::Owned(text.chars().map(|c| Term::Int(i64::from(u32::from(c)))).collect()))
            }
            _ => None,
        }
    }

    /// The same value in its canonical form, at every depth: a non-empty
    /// list whose elements are all integers that are Unicode code points is
    /// a [`Term::Str`], and the empty string is the empty [`Term::List`].
    /// Two equal terms have identical canonical forms (floats aside: `0.0`
    /// and `-0.0` are equal but stay as they are).
    pub fn canonical(&self) -> Term {
        match self {
            Term::Str(text) if text.is_empty() => Term::List(Vec::new()),
            Term::List(items) => {
                let text = (!items.is_empty())
                    .then(|| items.iter().map(code_point).collect::<Option<String>>())
                    .flatten();
                match text {
                    Some(text) => Term::Str(text),
                    None => Term::List(items.iter().map(Term::canonical).collect()),
                }
            }
            Term::Tuple(items) => Term::Tuple(items.iter().map(Term::canonical).collect()),
            Term::Map(pairs) => {
                Term::Map(pairs.iter().map(|(k, v)| (k.canonical(), v.canonical())).collect())
            }
            other => other.clone(),
        }
    }

    /// Returns the tuple's elements, or `None` if this is not a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// Returns the map's key/value pairs, or `None` if this is not a map.
    pub fn as_map(&self) -> Option<&[(Term, Term)]> {
        match self {
            Term::Map(pairs) => Some(pairs),
            _ => None,
        }
    }

    /// Looks up `key` in a map, returning the value of the first pair whose
    /// key equals it, or `None` if there is none or this is not a map.
    pub fn map_get(&self, key: &Term) -> Option<&Term> {
        self.as_map()?.iter().find(|(candidate, _)| candidate == key).map(|(_, value)| value)
    }

    /// Converts this term into a Rust value, reporting a [`TermTypeError`]
    /// if it has the wrong shape.
    pub fn get<T: FromTerm>(&self) -> Result<T, TermTypeError> {
        T::from_term(self)
    }

    /// Encodes this term in the versioned binary format described in the
    /// module documentation.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the complete encoding of this term (version byte included)
    /// to `out`, so callers can reuse one buffer for many terms.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(TERM_FORMAT_VERSION);
        self.encode_node(out);
    }

    /// Writes one node (tag and payload) without the version byte.
    fn encode_node(&self, out: &mut Vec<u8>) {
        match self {
            Term::Atom(name) => {
                out.push(TAG_ATOM);
                put_bytes(out, name.as_bytes());
            }
            Term::Int(value) => {
                out.push(TAG_INT);
                put_varint(out, zigzag(*value));
            }
            Term::Float(value) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&value.to_bits().to_le_bytes());
            }
            Term::Str(text) => {
                out.push(TAG_STR);
                put_bytes(out, text.as_bytes());
            }
            Term::Binary(bytes) => {
                out.push(TAG_BINARY);
                put_bytes(out, bytes);
            }
            Term::List(items) | Term::Tuple(items) => {
                out.push(if matches!(self, Term::List(_)) { TAG_LIST } else { TAG_TUPLE });
                put_len(out, items.len());
                for item in items {
                    item.encode_node(out);
                }
            }
            Term::Map(pairs) => {
                out.push(TAG_MAP);
                put_len(out, pairs.len());
                for (key, value) in pairs {
                    key.encode_node(out);
                    value.encode_node(out);
                }
            }
        }
    }

    /// Decodes a term produced by [`Term::encode`].
    ///
    /// The input is treated as untrusted: any malformed input yields a
    /// [`TermDecodeError`] rather than a panic or an oversized allocation,
    /// and the whole input must be consumed by exactly one term.
    pub fn decode(bytes: &[u8]) -> Result<Term, TermDecodeError> {
        let mut decoder = Decoder { input: bytes, pos: 0 };
        let version = decoder.byte()?;
        if version != TERM_FORMAT_VERSION {
            return Err(TermDecodeError::new(0, TermDecodeErrorKind::BadVersion(version)));
        }
        let term = decoder.node(0)?;
        if decoder.pos != bytes.len() {
            return Err(TermDecodeError::new(decoder.pos, TermDecodeErrorKind::TrailingBytes));
        }
        Ok(term)
    }
}

impl PartialEq for Term {
    /// Erlang's exact equality on values: a string equals the list of its code
    /// points; otherwise the same variant with equal contents.
    fn eq(&self, other: &Term) -> bool {
        match (self, other) {
            (Term::Atom(a), Term::Atom(b)) => a == b,
            (Term::Int(a), Term::Int(b)) => a == b,
            (Term::Float(a), Term::Float(b)) => a == b,
            (Term::Str(a), Term::Str(b)) => a == b,
            (Term::Binary(a), Term::Binary(b)) => a == b,
            (Term::List(a), Term::List(b)) | (Term::Tuple(a), Term::Tuple(b)) => a == b,
            (Term::Map(a), Term::Map(b)) => a == b,
            (Term::Str(text), Term::List(items)) | (Term::List(items), Term::Str(text)) => {
                let mut chars = text.chars();
                items.iter().all(|item| chars.next().is_some_and(|c| item.is_int(char_value(c))))
                    && chars.next().is_none()
            }
            _ => false,
        }
    }
}

impl Term {
    fn is_int(&self, value: i64) -> bool {
        matches!(self, Term::Int(v) if *v == value)
    }
}

/// A char's code point as an integer term's value.
fn char_value(c: char) -> i64 {
    i64::from(u32::from(c))
}

/// The char an integer term stands for in a string, if it is a Unicode code
/// point (a scalar value: not a surrogate).
fn code_point(term: &Term) -> Option<char> {
    match term {
        Term::Int(value) => u32::try_from(*value).ok().and_then(char::from_u32),
        _ => None,
    }
}

/// Whether `c` prints as itself inside a string, as `io_lib`'s printable
/// Unicode lists say: not a control character other than the ones with an
/// escape of their own (`\n`, `\t`, `\r`, `\v`, `\b`, `\f`, `\e`), and not a
/// non-character `U+FFFE`/`U+FFFF`.
fn printable(c: char) -> bool {
    matches!(c, '\n' | '\t' | '\r' | '\u{b}' | '\u{8}' | '\u{c}' | '\u{1b}')
        || !(c.is_control() || c == '\u{fffe}' || c == '\u{ffff}')
}

/// Appends `value` as an unsigned LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // The mask keeps only the low seven bits, so the cast cannot lose
        // information.
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a length or count as a varint.
fn put_len(out: &mut Vec<u8>, len: usize) {
    // Rust supports no platform whose `usize` is wider than 64 bits, so this
    // conversion is lossless.
    put_varint(out, len as u64);
}

/// Appends a length-prefixed byte string.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Maps signed integers to unsigned ones so that small magnitudes of either
/// sign become small varints.
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverts [`zigzag`].
fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// A cursor over untrusted encoded input.
struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// The input not yet consumed.
    fn rest(&self) -> &'a [u8] {
        // `pos` never exceeds the input length, but `get` keeps this free of
        // any panic path even if that invariant were broken.
        self.input.get(self.pos..).unwrap_or(&[])
    }

    /// Reads one byte.
    fn byte(&mut self) -> Result<u8, TermDecodeError> {
        match self.rest().first() {
            Some(&byte) => {
                self.pos += 1;
                Ok(byte)
            }
            None => Err(TermDecodeError::new(self.pos, TermDecodeErrorKind::UnexpectedEnd)),
        }
    }

    /// Reads an unsigned LEB128 varint that must fit in 64 bits.
    fn varint(&mut self) -> Result<u64, TermDecodeError> {
        let start = self.pos;
        let mut value = 0u64;
        for index in 0..10 {
            let byte = self
                .byte()
                .map_err(|_| TermDecodeError::new(start, TermDecodeErrorKind::UnexpectedEnd))?;
            // The tenth group holds only bit 63, so anything more in it (a
            // larger value or a continuation bit) cannot fit in a u64.
            if index == 9 && byte > 1 {
                return Err(TermDecodeError::new(start, TermDecodeErrorKind::LengthOverflow));
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(TermDecodeError::new(start, TermDecodeErrorKind::LengthOverflow))
    }

    /// Reads a length that must fit in `usize`.
    fn length(&mut self) -> Result<usize, TermDecodeError> {
        let start = self.pos;
        let value = self.varint()?;
        usize::try_from(value)
            .map_err(|_| TermDecodeError::new(start, TermDecodeErrorKind::LengthOverflow))
    }

    /// Reads an element count and checks that the remaining input could hold
    /// that many items of at least `min_item_bytes` bytes each, so that no
    /// memory is reserved for items that cannot exist.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, TermDecodeError> {
        let start = self.pos;
        let count = self.length()?;
        if count > self.rest().len() / min_item_bytes {
            return Err(TermDecodeError::new(start, TermDecodeErrorKind::UnexpectedEnd));
        }
        Ok(count)
    }

    /// Reads `len` raw bytes, failing before any copy if they are not there.
    fn take(&mut self, len: usize, field_start: usize) -> Result<&'a [u8], TermDecodeError> {
        match self.rest().get(..len) {
            Some(bytes) => {
                self.pos += len;
                Ok(bytes)
            }
            None => Err(TermDecodeError::new(field_start, TermDecodeErrorKind::UnexpectedEnd)),
        }
    }

    /// Reads a length-prefixed byte string.
    fn bytes(&mut self) -> Result<&'a [u8], TermDecodeError> {
        let start = self.pos;
        let len = self.length()?;
        self.take(len, start)
    }

    /// Reads a length-prefixed UTF-8 string.
    fn text(&mut self) -> Result<String, TermDecodeError> {
        let bytes = self.bytes()?;
        let bytes_start = self.pos - bytes.len();
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(error) => Err(TermDecodeError::new(
                bytes_start + error.valid_up_to(),
                TermDecodeErrorKind::BadUtf8,
            )),
        }
    }

    /// Reads the elements of a list or tuple.
    fn items(&mut self, depth: usize) -> Result<Vec<Term>, TermDecodeError> {
        // Every element needs at least its tag byte.
        let count = self.count(1)?;
        let mut items = Vec::with_capacity(count.min(MAX_PREALLOC));
        for _ in 0..count {
            items.push(self.node(depth + 1)?);
        }
        Ok(items)
    }

    /// Reads one node; `depth` is the number of containers around it.
    fn node(&mut self, depth: usize) -> Result<Term, TermDecodeError> {
        let start = self.pos;
        let tag = self.byte()?;
        let is_container = matches!(tag, TAG_LIST | TAG_TUPLE | TAG_MAP);
        if is_container && depth >= MAX_DECODE_DEPTH {
            return Err(TermDecodeError::new(start, TermDecodeErrorKind::TooDeep));
        }
        match tag {
            TAG_ATOM => Ok(Term::Atom(self.text()?)),
            TAG_INT => Ok(Term::Int(unzigzag(self.varint()?))),
            TAG_FLOAT => {
                let field_start = self.pos;
                let bytes = self.take(8, field_start)?;
                let bits: [u8; 8] = bytes.try_into().map_err(|_| {
                    TermDecodeError::new(field_start, TermDecodeErrorKind::UnexpectedEnd)
                })?;
                Ok(Term::Float(f64::from_bits(u64::from_le_bytes(bits))))
            }
            TAG_STR => Ok(Term::Str(self.text()?)),
            TAG_BINARY => Ok(Term::Binary(self.bytes()?.to_vec())),
            TAG_LIST => Ok(Term::List(self.items(depth)?)),
            TAG_TUPLE => Ok(Term::Tuple(self.items(depth)?)),
            TAG_MAP => {
                // Every pair needs at least a key tag and a value tag.
                let count = self.count(2)?;
                let mut pairs = Vec::with_capacity(count.min(MAX_PREALLOC));
                for _ in 0..count {
                    let key = self.node(depth + 1)?;
                    let value = self.node(depth + 1)?;
                    pairs.push((key, value));
                }
                Ok(Term::Map(pairs))
            }
            other => Err(TermDecodeError::new(start, TermDecodeErrorKind::BadTag(other))),
        }
    }
}

/// Why an encoded term could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TermDecodeErrorKind {
    /// The input ended inside a term, or a length or count claims more data
    /// than the remaining input holds.
    UnexpectedEnd,
    /// The input starts with a format version this code does not know.
    BadVersion(u8),
    /// A node starts with a byte that is not a known tag.
    BadTag(u8),
    /// An atom or str is not valid UTF-8.
    BadUtf8,
    /// Containers are nested deeper than [`MAX_DECODE_DEPTH`].
    TooDeep,
    /// Bytes remain after the complete term.
    TrailingBytes,
    /// A varint does not fit in 64 bits, or a length does not fit in
    /// `usize`.
    LengthOverflow,
}

impl fmt::Display for TermDecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TermDecodeErrorKind::UnexpectedEnd => f.write_str("unexpected end of input"),
            TermDecodeErrorKind::BadVersion(version) => {
                write!(f, "unsupported format version {version} (expected {TERM_FORMAT_VERSION})")
            }
            TermDecodeErrorKind::BadTag(tag) => write!(f, "unknown tag byte 0x{tag:02x}"),
            TermDecodeErrorKind::BadUtf8 => f.write_str("invalid UTF-8"),
            TermDecodeErrorKind::TooDeep => {
                write!(f, "nested deeper than {MAX_DECODE_DEPTH} containers")
            }
            TermDecodeErrorKind::TrailingBytes => f.write_str("trailing bytes after the term"),
            TermDecodeErrorKind::LengthOverflow => f.write_str("varint or length overflows"),
        }
    }
}

/// An error from [`Term::decode`], locating the problem in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermDecodeError {
    /// The byte offset in the input where the offending field starts.
    pub offset: usize,
    /// What was wrong there.
    pub kind: TermDecodeErrorKind,
}

impl TermDecodeError {
    /// Creates an error of `kind` at byte `offset`.
    pub fn new(offset: usize, kind: TermDecodeErrorKind) -> Self {
        Self { offset, kind }
    }
}

impl fmt::Display for TermDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "term decode error at byte {}: {}", self.offset, self.kind)
    }
}

impl std::error::Error for TermDecodeError {}

/// A term had a different shape than a [`FromTerm`] conversion expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermTypeError {
    /// A short description of what was expected, such as `"integer"`.
    pub expected: &'static str,
    /// The offending term in Erlang syntax, truncated to about 60
    /// characters so errors about large terms stay readable.
    pub found: String,
}

impl TermTypeError {
    /// Creates an error saying that `expected` was wanted but `found` was
    /// given.
    pub fn new(expected: &'static str, found: &Term) -> Self {
        Self { expected, found: render_truncated(found, FOUND_LIMIT) }
    }
}

impl fmt::Display for TermTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, found {}", self.expected, self.found)
    }
}

impl std::error::Error for TermTypeError {}

/// A `fmt::Write` sink that keeps at most `remaining` characters and then
/// aborts formatting, so rendering a huge term for an error message costs
/// only as much as the part that is kept.
struct Truncating {
    out: String,
    remaining: usize,
    truncated: bool,
}

impl fmt::Write for Truncating {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.remaining == 0 {
                self.truncated = true;
                return Err(fmt::Error);
            }
            self.out.push(c);
            self.remaining -= 1;
        }
        Ok(())
    }
}

/// Renders `term` in Erlang syntax, keeping at most `limit` characters and
/// marking a cut with `...`.
fn render_truncated(term: &Term, limit: usize) -> String {
    use fmt::Write as _;
    let mut sink = Truncating { out: String::new(), remaining: limit, truncated: false };
    // The only error a term's Display can produce here is the sink's own
    // abort signal, which the `truncated` flag already records.
    let _ = write!(sink, "{term}");
    if sink.truncated {
        sink.out.push_str("...");
    }
    sink.out
}

/// Returns whether an atom can be written without quotes.
fn atom_is_bare(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_lowercase = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    starts_lowercase
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
        && !RESERVED_WORDS.contains(&name)
}

/// Writes `text` between `quote` characters, escaping the quote, the
/// backslash and control characters so the output reads back as the same
/// text.
fn write_quoted(f: &mut fmt::Formatter<'_>, text: &str, quote: char) -> fmt::Result {
    use fmt::Write as _;
    f.write_char(quote)?;
    for c in text.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            // Control characters all lie below U+00A0, so two hex digits
            // always suffice.
            c if c == quote => write!(f, "\\{c}")?,
            c if c.is_control() => write!(f, "\\x{:02x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char(quote)
}

/// Writes a float so that it reads back as a float in Erlang syntax, which
/// requires a digit, a `.` and a digit before any exponent.
fn write_float(f: &mut fmt::Formatter<'_>, value: f64) -> fmt::Result {
    // Erlang has no syntax for these; bare words are the least surprising
    // rendering.
    if value.is_nan() {
        return f.write_str("nan");
    }
    if value.is_infinite() {
        return f.write_str(if value > 0.0 { "inf" } else { "-inf" });
    }
    // Rust's Debug form is the shortest text that round-trips, but it
    // writes `1e300` where Erlang needs `1.0e300`.
    let text = format!("{value:?}");
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => text.split_at(at),
        None => (text.as_str(), ""),
    };
    if mantissa.contains('.') {
        write!(f, "{mantissa}{exponent}")
    } else {
        write!(f, "{mantissa}.0{exponent}")
    }
}

/// Writes `items` separated by commas.
fn write_seq(f: &mut fmt::Formatter<'_>, items: &[Term]) -> fmt::Result {
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            f.write_str(",")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl fmt::Display for Term {
    /// Writes the term in Erlang term syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Atom(name) if atom_is_bare(name) => f.write_str(name),
            Term::Atom(name) => write_quoted(f, name, '\''),
            Term::Int(value) => write!(f, "{value}"),
            Term::Float(value) => write_float(f, *value),
            // A string prints as a list when it is empty or holds a character
            // that does not print, as Erlang's `~p` does: the two forms of
            // one value always print alike.
            Term::Str(text) if !text.is_empty() && text.chars().all(printable) => {
                write_quoted(f, text, '"')
            }
            Term::Str(text) => {
                f.write_str("[")?;
                for (index, c) in text.chars().enumerate() {
                    if index > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}", char_value(c))?;
                }
                f.write_str("]")
            }
            Term::List(items)
                if !items.is_empty()
                    && items.iter().all(|i| code_point(i).is_some_and(printable)) =>
            {
                let text: String = items.iter().filter_map(code_point).collect();
                write_quoted(f, &text, '"')
            }
            Term::Binary(bytes) => {
                f.write_str("<<")?;
                let printable =
                    !bytes.is_empty() && bytes.iter().all(|b| (0x20..=0x7e).contains(b));
                if printable {
                    // Printable ASCII is valid UTF-8 byte for byte, so each
                    // byte converts to the identical char.
                    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
                    write_quoted(f, &text, '"')?;
                } else {
                    for (index, byte) in bytes.iter().enumerate() {
                        if index > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{byte}")?;
                    }
                }
                f.write_str(">>")
            }
            Term::List(items) => {
                f.write_str("[")?;
                write_seq(f, items)?;
                f.write_str("]")
            }
            Term::Tuple(items) => {
                f.write_str("{")?;
                write_seq(f, items)?;
                f.write_str("}")
            }
            Term::Map(pairs) => {
                f.write_str("#{")?;
                for (index, (key, value)) in pairs.iter().enumerate() {
                    if index > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{key} => {value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

impl From<i64> for Term {
    /// Converts to an int.
    fn from(value: i64) -> Self {
        Term::Int(value)
    }
}

impl From<i32> for Term {
    /// Converts to an int.
    fn from(value: i32) -> Self {
        Term::Int(i64::from(value))
    }
}

impl From<u32> for Term {
    /// Converts to an int.
    fn from(value: u32) -> Self {
        Term::Int(i64::from(value))
    }
}

impl From<f64> for Term {
    /// Converts to a float.
    fn from(value: f64) -> Self {
        Term::Float(value)
    }
}

impl From<bool> for Term {
    /// Converts to the atom `true` or `false`, as Erlang represents booleans.
    fn from(value: bool) -> Self {
        Term::atom(if value { "true" } else { "false" })
    }
}

impl From<&str> for Term {
    /// Converts to a str.
    fn from(value: &str) -> Self {
        Term::Str(value.to_owned())
    }
}

impl From<String> for Term {
    /// Converts to a str.
    fn from(value: String) -> Self {
        Term::Str(value)
    }
}

impl<T: Into<Term>> From<Vec<T>> for Term {
    /// Converts to a list, converting each element.
    fn from(items: Vec<T>) -> Self {
        Term::List(items.into_iter().map(Into::into).collect())
    }
}

impl From<()> for Term {
    /// Converts to the empty tuple `{}`, the term counterpart of `()`.
    fn from((): ()) -> Self {
        Term::Tuple(Vec::new())
    }
}

impl<A: Into<Term>, B: Into<Term>> From<(A, B)> for Term {
    /// Converts to a 2-tuple.
    fn from((a, b): (A, B)) -> Self {
        Term::Tuple(vec![a.into(), b.into()])
    }
}

impl<A: Into<Term>, B: Into<Term>, C: Into<Term>> From<(A, B, C)> for Term {
    /// Converts to a 3-tuple.
    fn from((a, b, c): (A, B, C)) -> Self {
        Term::Tuple(vec![a.into(), b.into(), c.into()])
    }
}

/// Conversion from a borrowed [`Term`] into a Rust value, failing if the
/// term has the wrong shape.
pub trait FromTerm: Sized {
    /// Converts `term`, or reports what was expected instead.
    fn from_term(term: &Term) -> Result<Self, TermTypeError>;
}

impl FromTerm for Term {
    fn from_term(term: &Term) -> Result<Self, TermTypeError> {
        Ok(term.clone())
    }
}

impl FromTerm for i64 {
    fn from_term(term: &Term) -> Result<Self, TermTypeError> {
        term.as_int().ok_or_else(|| TermTypeError::new("integer", term))
    }
}

/// Implements [`FromTerm`] for an integer type by range-checking an int.
macro_rules! from_term_checked_int {
    ($($ty:ty => $expected:literal),* $(,)?) => {
        $(
            impl FromTerm for $ty {
                fn from_term(term: &Term) -> Result<Self, TermTypeError> {
                    term.as_int()
                        .and_then(|value| <$ty>::try_from(value).ok())
                        .ok_or_else(|| TermTypeError::new($expected, term))
                }
            }
        )*
    };
}

from_term_checked_int! {
    i32 => "integer in i32 range",
    u32 => "integer in u32 range",
    u64 => "non-negative integer",
}

impl FromTerm for f64 {
    fn from_term(term: &Term) -> Result<Self, TermTypeError> {
        term.as_float().ok_or_else(|| TermTypeError::new("float", term))
    }
}

impl FromTerm for bool {
    fn from_term(term: &Term) -> Result<Self, TermTypeError> {
        match term.as_atom() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err(TermTypeError::new("atom true or false", term)),
        }
    }
}

impl FromTerm for String {
    /// Accepts a string in either form ([`Term::as_text`]).
    fn from_term(term: &Term) -> Result<Self, TermTypeError> {
        term.as_text().map(Cow::into_owned).ok_or_else(|| TermTypeError::new("string", term))
    }
}

impl<T: FromTerm> FromTerm for Vec<T> {
    /// Accepts a list in either form ([`Term::as_elements`]): a string is the
    /// list of its code points.
    fn from_term(term: &Term) -> Result<Self, TermTypeError> {
        term.as_elements()
            .ok_or_else(|| TermTypeError::new("list", term))?
            .iter()
            .map(T::from_term)
            .collect()
    }
}

impl<A: FromTerm, B: FromTerm> FromTerm for (A, B) {
    fn from_term(term: &Term) -> Result<Self, TermTypeError> {
        match term.as_tuple() {
            Some([a, b]) => Ok((A::from_term(a)?, B::from_term(b)?)),
            _ => Err(TermTypeError::new("2-tuple", term)),
        }
    }
}

impl<A: FromTerm, B: FromTerm, C: FromTerm> FromTerm for (A, B, C) {
    fn from_term(term: &Term) -> Result<Self, TermTypeError> {
        match term.as_tuple() {
            Some([a, b, c]) => Ok((A::from_term(a)?, B::from_term(b)?, C::from_term(c)?)),
            _ => Err(TermTypeError::new("3-tuple", term)),
        }
    }
}

/// An owned, encoded term in an ABI-stable container, for passing terms
/// across the plugin boundary by value.
///
/// A term crosses as bytes rather than as a tree of `abi_stable` types
/// because the receiver immediately decodes it into a [`Term`] in its own
/// memory. Nothing created by the sender survives past that copy: an `RVec`
/// built by a plugin carries a vtable pointing into that plugin's code, so
/// the host decodes and drops it while the plugin is still loaded, and from
/// then on holds only host-owned data that stays valid after the plugin's
/// library is unloaded. Keep `RTerm`s short-lived for the same reason.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RTerm {
    bytes: RVec<u8>,
}

impl RTerm {
    /// Encodes `term` into a new carrier.
    pub fn from_term(term: &Term) -> RTerm {
        RTerm { bytes: RVec::from(term.encode()) }
    }

    /// Decodes the carried term into memory owned by the caller.
    pub fn decode(&self) -> Result<Term, TermDecodeError> {
        Term::decode(&self.bytes)
    }

    /// Borrows the encoded bytes as an [`RTermRef`].
    pub fn as_ref(&self) -> RTermRef<'_> {
        RTermRef::new(self.bytes.as_slice())
    }

    /// The encoded bytes, for diagnostics or re-sending.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

impl From<&Term> for RTerm {
    /// Encodes the term, like [`RTerm::from_term`].
    fn from(term: &Term) -> Self {
        RTerm::from_term(term)
    }
}

/// A borrowed, encoded term in an ABI-stable form, for passing a term to a
/// call without transferring ownership.
///
/// The borrow only lasts for the call, and the callee decodes it into its
/// own memory before keeping anything, for the same reason as explained on
/// [`RTerm`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RTermRef<'a> {
    bytes: RSlice<'a, u8>,
}

impl<'a> RTermRef<'a> {
    /// Wraps already-encoded bytes; they are validated only when decoded.
    pub const fn new(bytes: &'a [u8]) -> RTermRef<'a> {
        RTermRef { bytes: RSlice::from_slice(bytes) }
    }

    /// Decodes the referenced term into memory owned by the caller.
    pub fn decode(&self) -> Result<Term, TermDecodeError> {
        Term::decode(self.bytes.as_slice())
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes.as_slice()
    }
}

impl<'a> From<&'a RTerm> for RTermRef<'a> {
    /// Borrows the carrier, like [`RTerm::as_ref`].
    fn from(term: &'a RTerm) -> Self {
        term.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Compares terms structurally, treating floats as equal when their bits
    /// are, so NaN payloads and signed zeros are checked exactly.
    fn same(a: &Term, b: &Term) -> bool {
        match (a, b) {
            (Term::Float(x), Term::Float(y)) => x.to_bits() == y.to_bits(),
            (Term::List(xs), Term::List(ys)) | (Term::Tuple(xs), Term::Tuple(ys)) => {
                xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
            }
            (Term::Map(xs), Term::Map(ys)) => {
                xs.len() == ys.len()
                    && xs.iter().zip(ys).all(|((xk, xv), (yk, yv))| same(xk, yk) && same(xv, yv))
            }
            _ => a == b,
        }
    }

    fn arb_term() -> impl Strategy<Value = Term> {
        let leaf = prop_oneof![
            "[a-zA-Z_@ '\\\\é\n]{0,12}".prop_map(Term::Atom),
            any::<i64>().prop_map(Term::Int),
            any::<f64>().prop_map(Term::Float),
            any::<String>().prop_map(Term::Str),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Term::Binary),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Term::List),
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Term::Tuple),
                proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(Term::Map),
            ]
        })
    }

    fn nested_lists(depth: usize) -> Term {
        let mut term = Term::Int(7);
        for _ in 0..depth {
            term = Term::List(vec![term]);
        }
        term
    }

    fn decode_kind(bytes: &[u8]) -> Option<TermDecodeErrorKind> {
        Term::decode(bytes).err().map(|error| error.kind)
    }

    #[test]
    fn display_atoms_follow_erlang_quoting_rules() {
        assert_eq!(Term::atom("ok").to_string(), "ok");
        assert_eq!(Term::atom("a@b_C9").to_string(), "a@b_C9");
        assert_eq!(Term::atom("Ok").to_string(), "'Ok'");
        assert_eq!(Term::atom("_x").to_string(), "'_x'");
        assert_eq!(Term::atom("9a").to_string(), "'9a'");
        assert_eq!(Term::atom("").to_string(), "''");
        assert_eq!(Term::atom("hello world").to_string(), "'hello world'");
        assert_eq!(Term::atom("a-b").to_string(), "'a-b'");
        assert_eq!(Term::atom("héllo").to_string(), "'héllo'");
        assert_eq!(Term::atom("it's").to_string(), "'it\\'s'");
        assert_eq!(Term::atom("back\\slash").to_string(), "'back\\\\slash'");
        assert_eq!(Term::atom("new\nline").to_string(), "'new\\nline'");
        for word in [
            "after", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
            "catch", "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse",
            "receive", "rem", "try", "when", "xor", "maybe", "else",
        ] {
            assert_eq!(Term::atom(word).to_string(), format!("'{word}'"));
        }
        // Words that merely contain a reserved word stay bare.
        assert_eq!(Term::atom("ending").to_string(), "ending");
    }

    #[test]
    fn display_scalars() {
        assert_eq!(Term::Int(0).to_string(), "0");
        assert_eq!(Term::Int(-42).to_string(), "-42");
        assert_eq!(Term::Int(i64::MIN).to_string(), "-9223372036854775808");
        assert_eq!(Term::Float(1.0).to_string(), "1.0");
        assert_eq!(Term::Float(-2.5).to_string(), "-2.5");
        assert_eq!(Term::Float(0.1).to_string(), "0.1");
        assert_eq!(Term::Float(-0.0).to_string(), "-0.0");
        assert_eq!(Term::Float(1.5e300).to_string(), "1.5e300");
        assert_eq!(Term::Float(1e300).to_string(), "1.0e300");
        assert_eq!(Term::Float(1e-7).to_string(), "1.0e-7");
        assert_eq!(Term::Float(f64::NAN).to_string(), "nan");
        assert_eq!(Term::Float(f64::NEG_INFINITY).to_string(), "-inf");
        assert_eq!(Term::from("hi").to_string(), "\"hi\"");
        assert_eq!(
            Term::from("q\"b\\n\nt\tr\re\u{1b}").to_string(),
            "\"q\\\"b\\\\n\\nt\\tr\\re\\x1b\""
        );
        assert_eq!(Term::from("ünï").to_string(), "\"ünï\"");
    }

    #[test]
    fn display_binaries() {
        assert_eq!(Term::Binary(vec![]).to_string(), "<<>>");
        assert_eq!(Term::Binary(vec![1, 2, 3]).to_string(), "<<1,2,3>>");
        assert_eq!(Term::Binary(b"text".to_vec()).to_string(), "<<\"text\">>");
        assert_eq!(Term::Binary(b"a\"b".to_vec()).to_string(), "<<\"a\\\"b\">>");
        assert_eq!(Term::Binary(b"ab\n".to_vec()).to_string(), "<<97,98,10>>");
        assert_eq!(Term::Binary(vec![200]).to_string(), "<<200>>");
    }

    #[test]
    fn display_containers() {
        assert_eq!(Term::list([]).to_string(), "[]");
        assert_eq!(Term::list([Term::atom("a"), Term::Int(1)]).to_string(), "[a,1]");
        assert_eq!(Term::tuple([]).to_string(), "{}");
        assert_eq!(Term::error(Term::atom("enoent")).to_string(), "{error,enoent}");
        assert_eq!(
            Term::map([
                (Term::atom("k"), Term::Int(1)),
                (Term::from("s"), Term::list([Term::ok()])),
            ])
            .to_string(),
            "#{k => 1,\"s\" => [ok]}"
        );
        assert_eq!(Term::map([]).to_string(), "#{}");
    }

    #[test]
    fn accessors_return_only_their_variant() {
        let tuple = Term::tuple([Term::ok(), Term::Int(3)]);
        assert_eq!(tuple.as_tuple().map(<[Term]>::len), Some(2));
        assert_eq!(tuple.as_list(), None);
        assert!(Term::ok().is_atom("ok"));
        assert!(!Term::ok().is_atom("error"));
        assert!(!Term::from("ok").is_atom("ok"));
        assert_eq!(Term::Int(5).as_int(), Some(5));
        assert_eq!(Term::Float(5.0).as_int(), None);
        assert_eq!(Term::Float(0.5).as_float(), Some(0.5));
        assert_eq!(Term::from("x").as_str(), Some("x"));
        assert_eq!(Term::atom("x").as_str(), None);
        assert_eq!(Term::Binary(vec![9]).as_binary(), Some(&[9u8][..]));
        assert_eq!(Term::list([Term::ok()]).as_list(), Some(&[Term::ok()][..]));

        let map = Term::map([
            (Term::atom("a"), Term::Int(1)),
            (Term::atom("b"), Term::Int(2)),
            (Term::atom("a"), Term::Int(3)),
        ]);
        assert_eq!(map.as_map().map(<[(Term, Term)]>::len), Some(3));
        assert_eq!(map.map_get(&Term::atom("b")), Some(&Term::Int(2)));
        assert_eq!(map.map_get(&Term::atom("a")), Some(&Term::Int(1)));
        assert_eq!(map.map_get(&Term::atom("c")), None);
        assert_eq!(Term::Int(1).map_get(&Term::Int(1)), None);
    }

    /// Erlang has no string type: `"ab"`, `[97,98]` and `[$a,$b]` are one
    /// term and `""` is `[]` (Erlang reference manual, "Data Types: String").
    #[test]
    fn strings_are_lists_of_code_points() {
        let ab = Term::from("ab");
        let codes = Term::list([Term::Int(97), Term::Int(98)]);
        assert_eq!(ab, codes);
        assert_eq!(codes, ab);
        assert_eq!(Term::from(""), Term::list([]));
        assert_ne!(Term::from("ab"), Term::list([Term::Int(97)]));
        assert_ne!(Term::from("a"), Term::list([Term::Int(97), Term::Int(98)]));
        assert_ne!(Term::from("a"), Term::list([Term::Float(97.0)]));
        assert_ne!(Term::from("ab"), Term::tuple([Term::Int(97), Term::Int(98)]));
        // At any depth, and as map keys.
        let nested = Term::tuple([Term::list([Term::from("x")]), Term::from("é")]);
        let other =
            Term::tuple([Term::list([Term::list([Term::Int(120)])]), Term::list([Term::Int(233)])]);
        assert_eq!(nested, other);
        let map = Term::map([(Term::list([Term::Int(107)]), Term::ok())]);
        assert_eq!(map.map_get(&Term::from("k")), Some(&Term::ok()));
        // Both forms print alike, as Erlang's `~p` prints them.
        assert_eq!(codes.to_string(), "\"ab\"");
        assert_eq!(Term::from("").to_string(), "[]");
        assert_eq!(Term::list([Term::Int(1), Term::Int(2)]).to_string(), "[1,2]");
        assert_eq!(Term::from("a\u{1}").to_string(), "[97,1]");
        assert_eq!(Term::list([Term::Int(0x2603)]).to_string(), "\"\u{2603}\"");
        assert_eq!(Term::list([Term::Int(0xd800)]).to_string(), "[55296]");
        // Both forms convert alike.
        assert_eq!(codes.get::<String>(), Ok("ab".to_owned()));
        assert_eq!(Term::list([]).get::<String>(), Ok(String::new()));
        assert_eq!(ab.get::<Vec<i64>>(), Ok(vec![97, 98]));
        assert!(Term::list([Term::Int(-1)]).get::<String>().is_err());
        assert_eq!(codes.as_text().as_deref(), Some("ab"));
        assert_eq!(ab.as_elements().as_deref(), Some(&[Term::Int(97), Term::Int(98)][..]));
        assert_eq!(Term::Int(1).as_text(), None);
        assert_eq!(Term::atom("a").as_elements(), None);
        // One canonical form: a non-empty list of code points is a Str, `""` the empty list.
        assert!(matches!(codes.canonical(), Term::Str(text) if text == "ab"));
        assert!(matches!(Term::from("").canonical(), Term::List(items) if items.is_empty()));
        assert!(matches!(
            Term::tuple([Term::list([Term::Int(1), Term::atom("a")])]).canonical(),
            Term::Tuple(items) if matches!(&items[0], Term::List(l) if l.len() == 2)
        ));
        assert!(matches!(
            Term::map([(Term::list([Term::Int(107)]), Term::from(""))]).canonical(),
            Term::Map(pairs) if matches!(&pairs[0], (Term::Str(k), Term::List(v)) if k == "k" && v.is_empty())
        ));
    }

    #[test]
    fn conversions_into_terms() {
        assert_eq!(Term::from(-3i64), Term::Int(-3));
        assert_eq!(Term::from(-3i32), Term::Int(-3));
        assert_eq!(Term::from(u32::MAX), Term::Int(4_294_967_295));
        assert_eq!(Term::from(2.5), Term::Float(2.5));
        assert_eq!(Term::from(true), Term::atom("true"));
        assert_eq!(Term::from(false), Term::atom("false"));
        assert_eq!(Term::from("s"), Term::Str("s".into()));
        assert_eq!(Term::from(String::from("s")), Term::Str("s".into()));
        assert_eq!(Term::from(vec![1i64, 2]), Term::List(vec![Term::Int(1), Term::Int(2)]));
        assert_eq!(Term::from(()), Term::Tuple(vec![]));
        assert_eq!(Term::from((Term::ok(), 1i64)), Term::Tuple(vec![Term::ok(), Term::Int(1)]));
        assert_eq!(
            Term::from(("a", true, 1u32)),
            Term::Tuple(vec![Term::from("a"), Term::atom("true"), Term::Int(1)])
        );
    }

    #[test]
    fn conversions_out_of_terms() {
        assert_eq!(Term::Int(-9).get::<i64>(), Ok(-9));
        assert_eq!(Term::Int(-9).get::<i32>(), Ok(-9));
        assert_eq!(Term::Int(1 << 40).get::<i64>(), Ok(1 << 40));
        assert!(Term::Int(1 << 40).get::<i32>().is_err());
        assert!(Term::Int(1 << 40).get::<u32>().is_err());
        assert!(Term::Int(-1).get::<u32>().is_err());
        assert!(Term::Int(-1).get::<u64>().is_err());
        assert_eq!(Term::Int(i64::MAX).get::<u64>(), Ok(i64::MAX as u64));
        assert_eq!(Term::Int(7).get::<u32>(), Ok(7));
        assert!(Term::Float(1.0).get::<i64>().is_err());
        assert_eq!(Term::Float(1.25).get::<f64>(), Ok(1.25));
        assert!(Term::Int(1).get::<f64>().is_err());
        assert_eq!(Term::from(true).get::<bool>(), Ok(true));
        assert_eq!(Term::from(false).get::<bool>(), Ok(false));
        assert!(Term::atom("yes").get::<bool>().is_err());
        assert_eq!(Term::from("hey").get::<String>(), Ok("hey".to_owned()));
        assert!(Term::atom("hey").get::<String>().is_err());
        assert_eq!(Term::from(vec![3i64, 4]).get::<Vec<i64>>(), Ok(vec![3, 4]));
        assert!(Term::tuple([Term::Int(3)]).get::<Vec<i64>>().is_err());
        assert!(Term::list([Term::Int(1), Term::ok()]).get::<Vec<i64>>().is_err());
        assert_eq!(Term::from(("x", 2i64)).get::<(String, i64)>(), Ok(("x".to_owned(), 2)));
        assert!(Term::from(("x", 2i64, 3i64)).get::<(String, i64)>().is_err());
        assert_eq!(
            Term::from((1i64, false, "z")).get::<(u32, bool, String)>(),
            Ok((1, false, "z".to_owned()))
        );
        let original = Term::error(Term::from("why"));
        assert_eq!(original.get::<Term>(), Ok(original.clone()));
    }

    #[test]
    fn type_errors_describe_and_truncate() {
        let error = Term::atom("nope").get::<i64>().unwrap_err();
        assert_eq!(error.expected, "integer");
        assert_eq!(error.found, "nope");
        assert_eq!(error.to_string(), "expected integer, found nope");

        let big = Term::List((0..1000).map(|i| Term::Int(-i)).collect());
        let error = big.get::<String>().unwrap_err();
        assert!(error.found.ends_with("..."), "{}", error.found);
        assert_eq!(error.found.chars().count(), FOUND_LIMIT + 3);
        assert!(big.to_string().starts_with(error.found.trim_end_matches("...")));

        // Exactly at the limit nothing is cut.
        let exact = Term::atom("a".repeat(FOUND_LIMIT));
        assert_eq!(TermTypeError::new("x", &exact).found, "a".repeat(FOUND_LIMIT));
    }

    #[test]
    fn encoding_matches_the_documented_format() {
        assert_eq!(Term::Int(0).encode(), [1, TAG_INT, 0]);
        assert_eq!(Term::Int(-1).encode(), [1, TAG_INT, 1]);
        assert_eq!(Term::Int(1).encode(), [1, TAG_INT, 2]);
        assert_eq!(Term::Int(64).encode(), [1, TAG_INT, 0x80, 0x01]);
        assert_eq!(Term::atom("ok").encode(), [1, TAG_ATOM, 2, b'o', b'k']);
        assert_eq!(Term::Float(1.0).encode(), [1, TAG_FLOAT, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
        assert_eq!(
            Term::error(Term::Binary(vec![7])).encode(),
            [1, TAG_TUPLE, 2, TAG_ATOM, 5, b'e', b'r', b'r', b'o', b'r', TAG_BINARY, 1, 7]
        );
        assert_eq!(
            Term::map([(Term::from("k"), Term::list([]))]).encode(),
            [1, TAG_MAP, 1, TAG_STR, 1, b'k', TAG_LIST, 0]
        );
        let mut buffer = vec![0xaa];
        Term::ok().encode_into(&mut buffer);
        assert_eq!(buffer[0], 0xaa);
        assert_eq!(&buffer[1..], Term::ok().encode().as_slice());
    }

    #[test]
    fn extreme_ints_round_trip() {
        for value in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            assert_eq!(Term::decode(&Term::Int(value).encode()), Ok(Term::Int(value)));
        }
    }

    #[test]
    fn decode_rejects_malformed_input() {
        let err = |bytes: &[u8]| Term::decode(bytes).unwrap_err();

        assert_eq!(err(&[]), TermDecodeError::new(0, TermDecodeErrorKind::UnexpectedEnd));
        assert_eq!(err(&[2, TAG_INT, 0]).kind, TermDecodeErrorKind::BadVersion(2));
        assert_eq!(err(&[1, 0]), TermDecodeError::new(1, TermDecodeErrorKind::BadTag(0)));
        assert_eq!(err(&[1, 0x99]).kind, TermDecodeErrorKind::BadTag(0x99));
        assert_eq!(
            err(&[1, TAG_INT, 0, 0]),
            TermDecodeError::new(3, TermDecodeErrorKind::TrailingBytes)
        );
        assert_eq!(
            err(&[1, TAG_STR, 3, b'a', 0xff, b'b']),
            TermDecodeError::new(4, TermDecodeErrorKind::BadUtf8)
        );
        assert_eq!(err(&[1, TAG_ATOM, 1, 0x80]).kind, TermDecodeErrorKind::BadUtf8);
        // Eleven continuation bytes cannot be a 64-bit varint.
        let mut overlong = vec![1, TAG_INT];
        overlong.extend([0xff; 11]);
        assert_eq!(err(&overlong), TermDecodeError::new(2, TermDecodeErrorKind::LengthOverflow));
        // The tenth byte may only carry bit 63.
        let mut too_big = vec![1, TAG_INT];
        too_big.extend([0xff; 9]);
        too_big.push(0x02);
        assert_eq!(err(&too_big).kind, TermDecodeErrorKind::LengthOverflow);
        let mut max = vec![1, TAG_INT];
        max.extend([0xff; 9]);
        max.push(0x01);
        assert_eq!(Term::decode(&max), Ok(Term::Int(i64::MIN)));
        // A padded (non-minimal) varint is still accepted.
        assert_eq!(Term::decode(&[1, TAG_INT, 0x82, 0x00]), Ok(Term::Int(1)));
        assert_eq!(
            err(&[1, TAG_FLOAT, 0, 0, 0]),
            TermDecodeError::new(2, TermDecodeErrorKind::UnexpectedEnd)
        );
        let display = err(&[1, TAG_STR, 1, 0xc0]).to_string();
        assert_eq!(display, "term decode error at byte 3: invalid UTF-8");
    }

    #[test]
    fn decode_checks_claimed_lengths_before_allocating() {
        // A list claiming about four billion elements in a tiny buffer.
        let mut bytes = vec![1, TAG_LIST];
        put_varint(&mut bytes, 4_000_000_000);
        bytes.extend([TAG_INT, 0]);
        assert_eq!(
            Term::decode(&bytes),
            Err(TermDecodeError::new(2, TermDecodeErrorKind::UnexpectedEnd))
        );
        let mut bytes = vec![1, TAG_MAP];
        put_varint(&mut bytes, u64::MAX);
        assert_eq!(decode_kind(&bytes), Some(TermDecodeErrorKind::UnexpectedEnd));
        let mut bytes = vec![1, TAG_BINARY];
        put_varint(&mut bytes, u64::MAX / 2);
        bytes.push(0);
        assert_eq!(decode_kind(&bytes), Some(TermDecodeErrorKind::UnexpectedEnd));
        // A map whose count fits one byte per pair but not two is rejected
        // by the count check already.
        assert_eq!(
            Term::decode(&[1, TAG_MAP, 2, TAG_INT, 0, TAG_INT]),
            Err(TermDecodeError::new(2, TermDecodeErrorKind::UnexpectedEnd))
        );
    }

    #[test]
    fn decode_limits_nesting_depth() {
        let deepest = nested_lists(MAX_DECODE_DEPTH);
        assert_eq!(Term::decode(&deepest.encode()), Ok(deepest));
        let too_deep = nested_lists(MAX_DECODE_DEPTH + 1).encode();
        assert_eq!(
            Term::decode(&too_deep),
            Err(TermDecodeError::new(1 + 2 * MAX_DECODE_DEPTH, TermDecodeErrorKind::TooDeep))
        );
        // A huge claimed nesting made of bare list tags stops at the limit
        // instead of recursing until the stack overflows.
        let mut bytes = vec![1];
        for _ in 0..100_000 {
            bytes.extend([TAG_TUPLE, 1]);
        }
        assert_eq!(decode_kind(&bytes), Some(TermDecodeErrorKind::TooDeep));
    }

    #[test]
    fn carriers_round_trip() {
        let term = Term::tuple([Term::atom("state"), Term::from(vec![1i64, 2, 3])]);
        let owned = RTerm::from_term(&term);
        assert_eq!(owned.bytes(), term.encode().as_slice());
        assert_eq!(owned.decode(), Ok(term.clone()));
        let borrowed = owned.as_ref();
        assert_eq!(borrowed.bytes(), owned.bytes());
        assert_eq!(borrowed.decode(), Ok(term.clone()));
        assert_eq!(RTermRef::from(&owned).decode(), Ok(term.clone()));
        assert_eq!(RTerm::from(&term), owned);

        let encoded = term.encode();
        assert_eq!(RTermRef::new(&encoded).decode(), Ok(term));
        assert_eq!(
            RTermRef::new(&[7]).decode(),
            Err(TermDecodeError::new(0, TermDecodeErrorKind::BadVersion(7)))
        );
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(term in arb_term()) {
            let bytes = term.encode();
            let decoded = Term::decode(&bytes);
            prop_assert!(decoded.is_ok(), "{:?}", decoded);
            if let Ok(decoded) = decoded {
                prop_assert!(same(&term, &decoded), "{:?} != {:?}", term, decoded);
            }
        }

        #[test]
        fn truncated_encodings_are_unexpected_end(term in arb_term(), cut in any::<prop::sample::Index>()) {
            let bytes = term.encode();
            // Encodings are prefix-free, so every strict prefix must fail,
            // and always because the input ran out.
            let len = cut.index(bytes.len());
            prop_assert_eq!(decode_kind(&bytes[..len]), Some(TermDecodeErrorKind::UnexpectedEnd));
        }

        #[test]
        fn mutated_encodings_never_panic(
            term in arb_term(),
            at in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let mut bytes = term.encode();
            let index = at.index(bytes.len());
            bytes[index] = value;
            if let Ok(decoded) = Term::decode(&bytes) {
                // Whatever decodes must itself be a consistent term.
                let again = Term::decode(&decoded.encode());
                prop_assert!(again.is_ok_and(|t| same(&t, &decoded)));
            }
        }

        #[test]
        fn random_bytes_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..256),
            versioned in any::<bool>(),
        ) {
            // Forcing a valid version byte gets the fuzzing past the first
            // check most of the time.
            if versioned && !bytes.is_empty() {
                bytes[0] = TERM_FORMAT_VERSION;
            }
            match Term::decode(&bytes) {
                Ok(decoded) => {
                    let again = Term::decode(&decoded.encode());
                    prop_assert!(again.is_ok_and(|t| same(&t, &decoded)));
                }
                Err(error) => prop_assert!(error.offset <= bytes.len()),
            }
        }

        #[test]
        fn finite_floats_display_as_rereadable_floats(value in any::<f64>()) {
            prop_assume!(value.is_finite());
            let text = Term::Float(value).to_string();
            let mantissa = text.split(['e', 'E']).next().unwrap_or("");
            prop_assert!(mantissa.contains('.'), "{}", text);
            prop_assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(value.to_bits()));
        }

        #[test]
        fn display_never_panics(term in arb_term()) {
            let text = term.to_string();
            prop_assert!(!text.is_empty());
        }
    }
}
