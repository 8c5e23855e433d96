//! Reading OTP term files: the syntax that relup, `.app`, `.rel` and RELEASES share.
//!
//! OTP keeps release metadata as Erlang terms, each ended by a `.`, read with
//! `file:consult`. hotcode keeps that format byte for byte (SPEC §5, §6), so that a relup
//! written for OTP, or by someone used to OTP, reads the same here. This module is the first
//! of two parsing stages: it turns text into a *raw* tree ([`RawTerm`]) in which every term
//! remembers where it starts ([`Spanned`], [`Pos`]). The modules for each kind of file
//! ([`super::relup`], [`super::files`]) are the second stage: they check shapes against that
//! tree, so every error, however deep, can point at the offending term.
//!
//! # What is accepted
//!
//! Literal terms, as `file:consult` reads them in OTP 25 and 26: atoms (bare, or
//! `'quoted'` with escapes; at most 255 characters; `maybe` and `else` are atoms there),
//! strings (with escapes; adjacent strings are joined, `"a""b"` and `"""ab"""` included),
//! integers (`-3`, `+3`, `-(3)`, `16#FF`, `$c`), floats, tuples, lists (`[H | T]` with a
//! proper tail is the list `[H, ...T]`), maps `#{K => V}` (a key given twice keeps its last
//! value), binaries with their segment syntax (`<<"text", 1:16/little, "é"/utf8, 1.5/float>>`;
//! an integer keeps its low bits, so `<<256>>` is `<<0>>`), terms in parentheses, and `%`
//! comments. A file is UTF-8 unless a comment on one of its first two lines says `coding:
//! latin-1`, as `epp` reads it.
//!
//! Strings are lists, as in Erlang: `"ab"`, `[97, 98]` and `[$a | "b"]` are one term. A
//! [`RawTerm`] keeps what was written (for positions and messages); [`RawTerm::as_text`]
//! reads a string in either form, and [`RawTerm::to_term`] gives the one canonical
//! [`Term`] ([`Term::canonical`]).
//!
//! Refused, with a message saying so: variables, reserved words used as bare atoms,
//! sigils and expressions (`file:consult` fails on them too); and valid Erlang that a
//! [`Term`] cannot hold: improper lists `[a | b]`, integers beyond 64 bits, funs
//! (`fun m:f/1`), bitstrings whose bits do not make whole bytes (`<<1:1>>`), and 16-bit
//! floats in binaries. Reading something else instead would be worse. `$\^?` is 127 (DEL),
//! as OTP 26 and later read it (OTP 25 reads 31).
//!
//! # Tokens and positions
//!
//! The tokens come from the `erl_tokenize` crate, which follows OTP's `erl_scan` token for
//! token (escapes, radix integers, character literals, floats), so this module only has to
//! know the grammar of terms; a string is handed to it only up to its closing quote, so that
//! it reads `"a""b"` and `"""ab"""` as OTP 25 and 26 do (OTP 27 refuses the first and reads
//! the second as a triple-quoted string). `erl_tokenize` counts columns in
//! bytes; [`Pos`] counts them in characters, as `erl_scan` does and as editors show them, so
//! positions on a line with non-ASCII text still point at the right character.
//!
//! The parser keeps open brackets on a heap stack instead of recursing, and nesting is
//! limited to [`MAX_DEPTH`] levels, so that a file of ten thousand `[` is an error, not a
//! stack overflow, here or in the (recursive) conversions and drops of the tree. The parser
//! never panics on any input.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::{self, Write as _};
use std::path::Path;

use erl_tokenize::{Keyword, Position, Symbol, TokenValue};
use plugin_api::Term;

use super::error::{ParseError, ParseErrorKind};

/// The deepest nesting of tuples, lists, maps and binaries that the parser accepts.
///
/// Release files nest a handful of levels; the limit only exists so that hostile or
/// corrupted input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 256;

/// How many characters of a term an error message shows before cutting it short.
const FOUND_LIMIT: usize = 120;

/// A place in a file: 1-based line and column, the column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// The line, starting at 1. Only `\n` ends a line.
    pub line: u32,
    /// The column, starting at 1, in characters (a tab counts as one).
    pub column: u32,
}

impl Pos {
    /// The position `line:column`.
    pub fn new(line: u32, column: u32) -> Pos {
        Pos { line, column }
    }
}

impl fmt::Display for Pos {
    /// Writes `line:column`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A value together with the place in the file where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where its text starts.
    pub pos: Pos,
}

impl<T> Spanned<T> {
    /// Pairs `value` with `pos`.
    pub fn new(value: T, pos: Pos) -> Spanned<T> {
        Spanned { value, pos }
    }
}

/// A term as written in a file, each part with its position: the first parsing stage.
///
/// Unlike [`Term`], a raw term keeps where each of its parts was written, so the second
/// stage can report a bad part at its own line and column. [`RawTerm::to_term`] drops the
/// positions for values that are passed on as they are (`apply` arguments, `Extra`, `env`).
#[derive(Debug, Clone, PartialEq)]
pub enum RawTerm {
    /// An atom, bare or quoted, with escapes resolved.
    Atom(String),
    /// A string literal (adjacent literals joined), with escapes resolved.
    Str(String),
    /// An integer: decimal, `Base#Digits`, or a `$c` character literal (its code point).
    Int(i64),
    /// A float.
    Float(f64),
    /// A binary `<<...>>`.
    Binary(Vec<u8>),
    /// A tuple `{...}`.
    Tuple(Vec<Spanned<RawTerm>>),
    /// A proper list `[...]`.
    List(Vec<Spanned<RawTerm>>),
    /// A map `#{K => V, ...}`, in the order written.
    Map(Vec<(Spanned<RawTerm>, Spanned<RawTerm>)>),
}

impl RawTerm {
    /// The name, if this is an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            RawTerm::Atom(name) => Some(name),
            _ => None,
        }
    }

    /// Whether this is the atom `name`.
    pub fn is_atom(&self, name: &str) -> bool {
        self.as_atom() == Some(name)
    }

    /// The text, if this is a string literal.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RawTerm::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The text of a string, however it is written: a string literal, or a list whose
    /// elements are all integers that are Unicode code points (`[$a, 98]` is `"ab"`, `[]`
    /// is `""`), since Erlang strings are lists.
    pub fn as_text(&self) -> Option<String> {
        match self {
            RawTerm::Str(text) => Some(text.clone()),
            RawTerm::List(items) => items
                .iter()
                .map(|item| {
                    item.value
                        .as_int()
                        .and_then(|value| u32::try_from(value).ok())
                        .and_then(char::from_u32)
                })
                .collect(),
            _ => None,
        }
    }

    /// The elements of a list, however it is written: a string literal is the list of its
    /// code points, each at the string's position.
    pub fn as_elements(&self, pos: Pos) -> Option<Cow<'_, [Spanned<RawTerm>]>> {
        match self {
            RawTerm::List(items) => Some(Cow::Borrowed(items)),
            RawTerm::Str(text) => Some(Cow::Owned(
                text.chars()
                    .map(|c| Spanned::new(RawTerm::Int(i64::from(u32::from(c))), pos))
                    .collect(),
            )),
            _ => None,
        }
    }

    /// The value, if this is an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            RawTerm::Int(value) => Some(*value),
            _ => None,
        }
    }

    /// The elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Spanned<RawTerm>]> {
        match self {
            RawTerm::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The elements, if this is a list.
    pub fn as_list(&self) -> Option<&[Spanned<RawTerm>]> {
        match self {
            RawTerm::List(items) => Some(items),
            _ => None,
        }
    }

    /// The same value without positions, in [`Term::canonical`]'s form: however a string
    /// is written (`"ab"`, `[97, 98]`, `[$a | "b"]`), it becomes the one term
    /// `Term::Str("ab")`, and `""` the empty list, so the code it is handed to (a
    /// `code_change`'s `Extra`, an `apply`'s arguments) sees one value.
    pub fn to_term(&self) -> Term {
        match self {
            RawTerm::Str(text) if text.is_empty() => Term::List(Vec::new()),
            RawTerm::Str(text) => Term::Str(text.clone()),
            RawTerm::List(items) if !items.is_empty() => match self.as_text() {
                Some(text) => Term::Str(text),
                None => Term::List(items.iter().map(|i| i.value.to_term()).collect()),
            },
            RawTerm::Atom(name) => Term::Atom(name.clone()),
            RawTerm::Int(value) => Term::Int(*value),
            RawTerm::Float(value) => Term::Float(*value),
            RawTerm::Binary(bytes) => Term::Binary(bytes.clone()),
            RawTerm::Tuple(items) => Term::Tuple(items.iter().map(|i| i.value.to_term()).collect()),
            RawTerm::List(items) => Term::List(items.iter().map(|i| i.value.to_term()).collect()),
            RawTerm::Map(pairs) => Term::Map(
                pairs.iter().map(|(k, v)| (k.value.to_term(), v.value.to_term())).collect(),
            ),
        }
    }

    /// The term in term syntax, cut short with `...` after about a line, for error messages.
    pub fn describe(&self) -> String {
        let mut sink = Bounded { out: String::new(), left: FOUND_LIMIT, cut: false };
        // The only error this can produce is the sink's own signal that it is full, which
        // `cut` already records.
        let _ = write!(sink, "{self}");
        if sink.cut {
            sink.out.push_str("...");
        }
        sink.out
    }
}

impl fmt::Display for RawTerm {
    /// Writes the term in term syntax, elements separated by `, `; it parses back to the
    /// same term.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Spanned<RawTerm>]) -> fmt::Result {
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}", item.value)?;
            }
            Ok(())
        }
        match self {
            RawTerm::Atom(name) => write_atom(f, name),
            RawTerm::Str(text) => write_quoted(f, text, '"'),
            RawTerm::Int(value) => write!(f, "{value}"),
            // `Term` already knows how to write a float that reads back as a float.
            RawTerm::Float(value) => write!(f, "{}", Term::Float(*value)),
            RawTerm::Binary(bytes) => {
                f.write_str("<<")?;
                if !bytes.is_empty() && bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
                    // Printable ASCII reads better as text, and each byte is its own char.
                    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
                    write_quoted(f, &text, '"')?;
                    return f.write_str(">>");
                }
                for (index, byte) in bytes.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{byte}")?;
                }
                f.write_str(">>")
            }
            RawTerm::Tuple(items) => {
                f.write_char('{')?;
                seq(f, items)?;
                f.write_char('}')
            }
            RawTerm::List(items) => {
                f.write_char('[')?;
                seq(f, items)?;
                f.write_char(']')
            }
            RawTerm::Map(pairs) => {
                f.write_str("#{")?;
                for (index, (key, value)) in pairs.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} => {}", key.value, value.value)?;
                }
                f.write_char('}')
            }
        }
    }
}

/// A `fmt::Write` sink that keeps `left` more characters and then stops the formatting, so
/// describing a huge term costs only what is kept.
struct Bounded {
    out: String,
    left: usize,
    cut: bool,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.left == 0 {
                self.cut = true;
                return Err(fmt::Error);
            }
            self.out.push(c);
            self.left -= 1;
        }
        Ok(())
    }
}

/// Whether an atom can be written without quotes and read back as the same atom.
pub(crate) fn atom_is_bare(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
        && Keyword::from_text(name).is_none()
}

/// Writes an atom, quoted when it must be.
pub(crate) fn write_atom(out: &mut impl fmt::Write, name: &str) -> fmt::Result {
    if atom_is_bare(name) { out.write_str(name) } else { write_quoted(out, name, '\'') }
}

/// Writes `text` between `quote`s with the escapes that make it read back unchanged.
pub(crate) fn write_quoted(out: &mut impl fmt::Write, text: &str, quote: char) -> fmt::Result {
    out.write_char(quote)?;
    for c in text.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\t' => out.write_str("\\t")?,
            '\r' => out.write_str("\\r")?,
            c if c == quote => write!(out, "\\{c}")?,
            c if c.is_control() => write!(out, "\\x{{{:x}}}", u32::from(c))?,
            c => out.write_char(c)?,
        }
    }
    out.write_char(quote)
}

/// Parses every term in `text`, the contents of the file at `path` (named in errors).
///
/// Each term must end with a `.` followed by white space, a comment or the end of the text.
pub fn parse_terms(path: &Path, text: &str) -> Result<Vec<Spanned<RawTerm>>, ParseError> {
    let mut parser = Parser::new(path, text);
    let mut terms = Vec::new();
    loop {
        let token = parser.next()?;
        if token.lexeme == Lexeme::Eof {
            return Ok(terms);
        }
        let term = parser.term(token)?;
        parser.end_of_term()?;
        terms.push(term);
    }
}

/// Reads the file at `path` and parses every term in it, as [`parse_terms`] does.
pub fn read_terms(path: &Path) -> Result<Vec<Spanned<RawTerm>>, ParseError> {
    parse_terms(path, &read_text(path)?)
}

/// Parses `text`, which must hold exactly one term, as relup, `.app`, `.rel` and RELEASES
/// files do.
pub fn parse_single_term(path: &Path, text: &str) -> Result<Spanned<RawTerm>, ParseError> {
    let mut parser = Parser::new(path, text);
    let token = parser.next()?;
    if token.lexeme == Lexeme::Eof {
        return Err(ParseError::at(
            path,
            token.pos,
            ParseErrorKind::Syntax(
                "the file holds no term (it is empty or only comments); expected one term \
                 ending with '.'"
                    .to_owned(),
            ),
        ));
    }
    let term = parser.term(token)?;
    parser.end_of_term()?;
    let extra = parser.next()?;
    if extra.lexeme != Lexeme::Eof {
        return Err(parser.syntax(
            extra.pos,
            format!("the file must hold one term, but a second one starts here ({})", extra),
        ));
    }
    Ok(term)
}

/// Reads the file at `path`, which must hold exactly one term, as [`parse_single_term`]
/// does.
pub fn read_single_term(path: &Path) -> Result<Spanned<RawTerm>, ParseError> {
    parse_single_term(path, &read_text(path)?)
}

/// The largest release file (relup, `.app`, `.rel`, RELEASES, integrity record) read, in
/// bytes. Real ones are kilobytes; a bigger one is refused before it is read, so a crafted
/// file cannot make the node allocate without bound.
pub const MAX_TERM_FILE: u64 = 16 * 1024 * 1024;

/// Reads a whole release file as UTF-8 text; failures are errors about the file. Only a
/// regular file of at most [`MAX_TERM_FILE`] bytes is read: a FIFO, a device or a directory
/// is refused without blocking, and the size is checked on the open file.
pub(crate) fn read_text(path: &Path) -> Result<String, ParseError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |error| ParseError::whole_file(path, ParseErrorKind::Io(error));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.file_type().is_file() {
        return Err(ParseError::whole_file(
            path,
            ParseErrorKind::Invalid(
                "not a regular file (a FIFO, device or directory is never read)".into(),
            ),
        ));
    }
    if meta.len() > MAX_TERM_FILE {
        return Err(ParseError::whole_file(
            path,
            ParseErrorKind::Invalid(format!(
                "{} bytes, more than the {MAX_TERM_FILE} a release file may have",
                meta.len()
            )),
        ));
    }
    let mut bytes = Vec::new();
    // `take` bounds the read even if the file grows after the check.
    file.take(MAX_TERM_FILE + 1).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 > MAX_TERM_FILE {
        return Err(ParseError::whole_file(
            path,
            ParseErrorKind::Invalid(format!("grew past {MAX_TERM_FILE} bytes while read")),
        ));
    }
    decode_text(bytes).map_err(|error| {
        // Point at the first byte that is not UTF-8.
        let valid = error.as_bytes().get(..error.utf8_error().valid_up_to()).unwrap_or(&[]);
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        ParseError::at(
            path,
            Pos::new(saturate(line), saturate(column)),
            ParseErrorKind::Invalid(
                "the file is not UTF-8 text; a file in Latin-1 says so in a comment on one of \
                 its first two lines: %% coding: latin-1"
                    .to_owned(),
            ),
        )
    })
}

/// The characters of a term file's bytes: UTF-8, unless a comment in the first two lines
/// says `coding: latin-1` (as `epp` reads `%% -*- coding: latin-1 -*-`, `%% coding:
/// latin-1`, `% vim: fileencoding=latin1`), in which case each byte is one character.
pub fn decode_text(bytes: Vec<u8>) -> Result<String, std::string::FromUtf8Error> {
    if declares_latin1(&bytes) {
        return Ok(bytes.iter().map(|&b| char::from(b)).collect());
    }
    String::from_utf8(bytes)
}

/// Whether one of the first two lines of `bytes` has a comment naming the `latin-1`
/// (`latin1`) encoding after `coding:` or `coding=`, as `epp:read_encoding` looks for it.
fn declares_latin1(bytes: &[u8]) -> bool {
    bytes.split(|&b| b == b'\n').take(2).any(|line| {
        let Some(comment) = line.iter().position(|&b| b == b'%') else {
            return false;
        };
        let comment = String::from_utf8_lossy(&line[comment..]).to_ascii_lowercase();
        comment.match_indices("coding").any(|(at, word)| {
            let rest = comment[at + word.len()..].trim_start();
            let Some(rest) = rest.strip_prefix([':', '=']) else {
                return false;
            };
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            name == "latin-1" || name == "latin1"
        })
    })
}

/// The most characters an atom may have, as in Erlang.
pub const MAX_ATOM_CHARS: usize = 255;

/// If `text` starts with a `"..."` string, the length in bytes up to and including its
/// closing quote (a backslash escapes the character after it).
fn string_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => return Some(at + 1),
            _ => {}
        }
    }
    None
}

/// One token, reduced to what the term grammar needs.
#[derive(Debug, Clone, PartialEq)]
enum Lexeme {
    Atom(String),
    Str(String),
    /// An integer literal; `None` when it does not fit in 64 bits.
    Int(Option<u64>),
    Float(f64),
    Char(char),
    Punct(Symbol),
    /// The `.` that ends a term: followed by white space, a comment or the end of the text.
    End,
    /// A variable name, which has no value in a term file.
    Variable(String),
    /// A reserved word (`end`, `fun`, ...), which is not an atom unless quoted.
    Keyword(&'static str),
    /// A sigil string (`~"..."`), which `file:consult` does not read as a plain string.
    Sigil,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    lexeme: Lexeme,
    pos: Pos,
    /// Where the token's text ends (exclusive): where a missing `.` should have been.
    end: Pos,
}

impl fmt::Display for Token {
    /// Names the token for "found ..." in messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lexeme {
            Lexeme::Atom(name) => {
                f.write_str("atom ")?;
                write_atom(f, name)
            }
            Lexeme::Str(text) => {
                f.write_str("string ")?;
                write_quoted(f, text, '"')
            }
            Lexeme::Int(Some(value)) => write!(f, "integer {value}"),
            Lexeme::Int(None) => f.write_str("an integer"),
            Lexeme::Float(value) => write!(f, "float {}", Term::Float(*value)),
            Lexeme::Char(c) => write!(f, "character ${c}"),
            Lexeme::Punct(symbol) => write!(f, "'{}'", symbol.as_str()),
            Lexeme::End => f.write_str("'.'"),
            Lexeme::Variable(name) => write!(f, "variable {name}"),
            Lexeme::Keyword(word) => write!(f, "reserved word {word}"),
            Lexeme::Sigil => f.write_str("a sigil string"),
            Lexeme::Eof => f.write_str("end of file"),
        }
    }
}

/// Converts `erl_tokenize`'s positions (columns in bytes) to [`Pos`] (columns in
/// characters).
///
/// Tokens arrive in order, so it counts characters only from the previous position on the
/// same line, which keeps a long one-line file linear.
struct Columns<'a> {
    text: &'a str,
    line: usize,
    offset: usize,
    column: u32,
}

impl<'a> Columns<'a> {
    fn new(text: &'a str) -> Self {
        Columns { text, line: 1, offset: 0, column: 1 }
    }

    fn pos(&mut self, at: Position) -> Pos {
        let (line, offset) = (at.line().get(), at.offset());
        if line != self.line || offset < self.offset {
            // Start counting from the beginning of `at`'s line, which is `column - 1` bytes
            // before it.
            self.line = line;
            self.offset = offset.saturating_sub(at.column().get() - 1);
            self.column = 1;
        }
        let chars = self.text.get(self.offset..offset).map_or(0, |s| s.chars().count());
        self.column = self.column.saturating_add(saturate(chars));
        self.offset = offset;
        Pos { line: saturate(line), column: self.column }
    }
}

fn saturate(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// What kind of container is open, for "... is not closed" messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Tuple,
    List,
    Map,
    Binary,
    /// `( Term )`: parentheses around one term, which they leave as it is.
    Paren,
}

impl Container {
    fn name(self) -> &'static str {
        match self {
            Container::Tuple => "tuple",
            Container::List => "list",
            Container::Map => "map",
            Container::Binary => "binary",
            Container::Paren => "parenthesis",
        }
    }

    fn close(self) -> Symbol {
        match self {
            Container::Tuple | Container::Map => Symbol::CloseBrace,
            Container::List => Symbol::CloseSquare,
            Container::Binary => Symbol::DoubleRightAngle,
            Container::Paren => Symbol::CloseParen,
        }
    }
}

/// A tuple, list or map being parsed: the parser keeps these on an explicit stack rather
/// than recursing, because a recursive descent in a debug build needs kilobytes of stack
/// per level and the parser must not overflow a small thread stack on deep input.
struct Open {
    container: Container,
    pos: Pos,
    /// The elements so far; for a map its keys and values alternating, so an odd count
    /// means a key is waiting for its value.
    items: Vec<Spanned<RawTerm>>,
    /// For a list: where its `|` is, once one was read; the next element is the tail.
    tail: Option<Pos>,
}

impl Open {
    fn new(container: Container, pos: Pos) -> Open {
        Open { container, pos, items: Vec::new(), tail: None }
    }

    fn finish(self) -> Spanned<RawTerm> {
        let value = match self.container {
            Container::Tuple => RawTerm::Tuple(self.items),
            Container::List => RawTerm::List(self.items),
            // The parser closes a parenthesis only around exactly one term.
            Container::Paren => match self.items.into_iter().next() {
                Some(inner) => return Spanned { value: inner.value, pos: self.pos },
                None => RawTerm::List(Vec::new()),
            },
            Container::Map | Container::Binary => {
                let mut pairs: Vec<(Spanned<RawTerm>, Spanned<RawTerm>)> =
                    Vec::with_capacity(self.items.len() / 2);
                // A key written twice keeps its last value, as `file:consult` reads
                // `#{a => 1, a => 2}` (keys compare as terms: `"a"` is `[97]`).
                let mut index: HashMap<String, usize> = HashMap::new();
                let mut items = self.items.into_iter();
                while let (Some(key), Some(value)) = (items.next(), items.next()) {
                    match index.entry(key.value.to_term().to_string()) {
                        Entry::Occupied(at) => pairs[*at.get()] = (key, value),
                        Entry::Vacant(slot) => {
                            slot.insert(pairs.len());
                            pairs.push((key, value));
                        }
                    }
                }
                RawTerm::Map(pairs)
            }
        };
        Spanned { value, pos: self.pos }
    }
}

/// How a term starts: a whole value, or an opening bracket whose elements follow.
enum Start {
    Value(Spanned<RawTerm>),
    Open(Container, Pos),
}

/// A parser over tokens scanned on demand, so the first error in the text is the one
/// reported.
struct Parser<'a> {
    path: &'a Path,
    text: &'a str,
    at: Position,
    columns: Columns<'a>,
    peeked: Option<Token>,
    /// The containers open around the current token, innermost last.
    open: Vec<Open>,
    /// Where the last token taken ended.
    last_end: Pos,
}

impl<'a> Parser<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Parser {
            path,
            text,
            at: Position::new(),
            columns: Columns::new(text),
            peeked: None,
            open: Vec::new(),
            last_end: Pos::new(1, 1),
        }
    }

    fn syntax(&self, pos: Pos, message: String) -> ParseError {
        ParseError::at(self.path, pos, ParseErrorKind::Syntax(message))
    }

    /// Takes the next token.
    fn next(&mut self) -> Result<Token, ParseError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.scan()?,
        };
        self.last_end = token.end;
        Ok(token)
    }

    /// Looks at the next token without taking it.
    fn peek(&mut self) -> Result<&Token, ParseError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.scan()?,
        };
        Ok(self.peeked.insert(token))
    }

    /// Scans the next token that is not white space or a comment.
    fn scan(&mut self) -> Result<Token, ParseError> {
        loop {
            // A string is scanned on the text up to its closing quote, so that the
            // tokenizer sees neither a string right after it nor a `"""` opener: OTP 25 and
            // 26 read `"a""b"` as "ab" and `"""ab"""` as three adjacent strings (later
            // releases reject the first and read the second as a triple-quoted string).
            let rest = self.text.get(self.at.offset()..).unwrap_or("");
            let visible = match string_end(rest) {
                Some(len) => self.text.get(..self.at.offset() + len).unwrap_or(self.text),
                None => self.text,
            };
            let token = match erl_tokenize::scan_token(visible, self.at) {
                Ok(Some(token)) => token,
                Ok(None) => {
                    let pos = self.columns.pos(self.at);
                    return Ok(Token { lexeme: Lexeme::Eof, pos, end: pos });
                }
                Err(error) => {
                    let pos = self.columns.pos(error.position);
                    return Err(self.syntax(pos, error.kind.message().to_owned()));
                }
            };
            self.at = token.end();
            if token.kind().is_hidden() {
                continue;
            }
            let lexeme = match token.value(self.text) {
                TokenValue::Atom(name) if name.chars().count() > MAX_ATOM_CHARS => {
                    let pos = self.columns.pos(token.start());
                    return Err(self.syntax(
                        pos,
                        format!(
                            "an atom of {} characters: atoms have at most {MAX_ATOM_CHARS} \
                             (erl_scan refuses longer ones)",
                            name.chars().count()
                        ),
                    ));
                }
                TokenValue::Atom(name) => Lexeme::Atom(name.into_owned()),
                TokenValue::String(text) => Lexeme::Str(text.into_owned()),
                TokenValue::Integer(value) => Lexeme::Int(value),
                TokenValue::Float(value) => Lexeme::Float(value),
                TokenValue::Char(c) => Lexeme::Char(c),
                TokenValue::Symbol(Symbol::Dot) => {
                    let rest = self.text.get(token.end().offset()..).unwrap_or("");
                    match rest.chars().next() {
                        None | Some('%') => Lexeme::End,
                        Some(c) if c.is_whitespace() => Lexeme::End,
                        Some(_) => Lexeme::Punct(Symbol::Dot),
                    }
                }
                TokenValue::Symbol(symbol) => Lexeme::Punct(symbol),
                // `maybe` and `else` are atoms in OTP 25 and 26, where the maybe
                // expression is an experimental feature that is off by default.
                TokenValue::Keyword(word @ (Keyword::Maybe | Keyword::Else)) => {
                    Lexeme::Atom(word.as_str().to_owned())
                }
                TokenValue::Keyword(word) => Lexeme::Keyword(word.as_str()),
                TokenValue::Variable(name) => Lexeme::Variable(name.to_owned()),
                TokenValue::SigilString { .. } => Lexeme::Sigil,
                TokenValue::Comment(_) | TokenValue::Whitespace(_) => continue,
            };
            let pos = self.columns.pos(token.start());
            let end = self.columns.pos(token.end());
            return Ok(Token { lexeme, pos, end });
        }
    }

    /// The error for meeting the end of the text where `wanted` was needed: it points at the
    /// innermost open container, which is what needs closing.
    fn unexpected_eof(&self, token: &Token, wanted: &str) -> ParseError {
        match self.open.last() {
            Some(open) => self.syntax(
                open.pos,
                format!(
                    "{} is not closed: the file ends where {wanted} or '{}' should follow",
                    open.container.name(),
                    open.container.close().as_str()
                ),
            ),
            None => self.syntax(token.pos, format!("expected {wanted}, found end of file")),
        }
    }

    /// Takes the `.` that must end a top-level term.
    fn end_of_term(&mut self) -> Result<(), ParseError> {
        let term_end = self.last_end;
        let after = self.next()?;
        match after.lexeme {
            Lexeme::End => Ok(()),
            Lexeme::Eof => Err(self.syntax(
                term_end,
                "expected '.' after the term, found end of file (every term ends with '.')"
                    .to_owned(),
            )),
            Lexeme::Punct(Symbol::Dot) => Err(self.syntax(
                after.pos,
                "the '.' that ends a term must be followed by white space, a comment or the \
                 end of the file"
                    .to_owned(),
            )),
            _ => Err(self.syntax(after.pos, format!("expected '.' after the term, found {after}"))),
        }
    }

    /// Parses the whole term that starts with `token`.
    fn term(&mut self, mut token: Token) -> Result<Spanned<RawTerm>, ParseError> {
        self.open.clear();
        loop {
            // Read one element: a complete value, or the start of a container.
            let mut done = match self.start(token)? {
                Start::Value(value) => value,
                Start::Open(container, pos) => {
                    if self.open.len() >= MAX_DEPTH {
                        return Err(self.syntax(
                            pos,
                            format!("terms are nested more than {MAX_DEPTH} levels deep"),
                        ));
                    }
                    self.open.push(Open::new(container, pos));
                    let first = self.next()?;
                    if first.lexeme != Lexeme::Punct(container.close()) {
                        token = first;
                        continue;
                    }
                    if container == Container::Paren {
                        return Err(self.syntax(first.pos, "expected a term, found ')'".to_owned()));
                    }
                    match self.open.pop() {
                        Some(open) => open.finish(),
                        None => return Err(self.syntax(pos, "internal parser error".to_owned())),
                    }
                }
            };
            // Attach it to its container, then take separators and closing brackets until
            // the next element starts or the outermost term is complete.
            loop {
                let Some(open) = self.open.last_mut() else {
                    return Ok(done);
                };
                let container = open.container;
                let opened = open.pos;
                if let Some(bar) = open.tail {
                    // `[H1, H2 | Tail]` with a proper tail is the list [H1, H2, ...Tail].
                    match done.value {
                        RawTerm::List(items) => open.items.extend(items),
                        RawTerm::Str(text) => open.items.extend(text.chars().map(|c| {
                            Spanned::new(RawTerm::Int(i64::from(u32::from(c))), done.pos)
                        })),
                        other => {
                            return Err(self.syntax(
                                bar,
                                format!(
                                    "an improper list (its tail is {}, not a list) is valid \
                                     Erlang, but not a term hotcode carries; write a proper \
                                     list",
                                    other.describe()
                                ),
                            ));
                        }
                    }
                    let close = self.next()?;
                    if close.lexeme != Lexeme::Punct(Symbol::CloseSquare) {
                        return Err(match close.lexeme {
                            Lexeme::Eof => self.unexpected_eof(&close, "']'"),
                            _ => self.syntax(
                                close.pos,
                                format!(
                                    "expected ']' after the tail of the list opened at \
                                     {opened}, found {close}"
                                ),
                            ),
                        });
                    }
                    match self.open.pop() {
                        Some(open) => done = open.finish(),
                        None => {
                            return Err(self.syntax(opened, "internal parser error".to_owned()));
                        }
                    }
                    continue;
                }
                open.items.push(done);
                let after_key = container == Container::Map && open.items.len() % 2 == 1;
                let separator = self.next()?;
                match separator.lexeme {
                    Lexeme::Punct(Symbol::DoubleRightArrow) if after_key => {
                        token = self.next()?;
                        break;
                    }
                    _ if after_key => {
                        return Err(match separator.lexeme {
                            Lexeme::Eof => self.unexpected_eof(&separator, "'=>'"),
                            _ => self.syntax(
                                separator.pos,
                                format!("expected '=>' after a map key, found {separator}"),
                            ),
                        });
                    }
                    Lexeme::Punct(symbol) if symbol == container.close() => match self.open.pop() {
                        Some(open) => done = open.finish(),
                        None => {
                            return Err(self.syntax(opened, "internal parser error".to_owned()));
                        }
                    },
                    _ if container == Container::Paren => {
                        return Err(match separator.lexeme {
                            Lexeme::Eof => self.unexpected_eof(&separator, "')'"),
                            _ => self.syntax(
                                separator.pos,
                                format!(
                                    "expected ')' to close the parenthesis opened at {opened}, \
                                     found {separator}"
                                ),
                            ),
                        });
                    }
                    Lexeme::Punct(Symbol::Comma) => {
                        token = self.next()?;
                        break;
                    }
                    Lexeme::Punct(Symbol::VerticalBar) if container == Container::List => {
                        if let Some(open) = self.open.last_mut() {
                            open.tail = Some(separator.pos);
                        }
                        token = self.next()?;
                        break;
                    }
                    Lexeme::Eof => return Err(self.unexpected_eof(&separator, "','")),
                    _ => {
                        return Err(self.syntax(
                            separator.pos,
                            format!(
                                "expected ',' or '{}' in the {} opened at {opened}, found \
                                 {separator}",
                                container.close().as_str(),
                                container.name()
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Reads the start of a term: a whole value if it has no elements to parse, or the
    /// opening bracket of a tuple, list, map or parenthesis.
    fn start(&mut self, token: Token) -> Result<Start, ParseError> {
        let pos = token.pos;
        let value = match token.lexeme {
            Lexeme::Atom(name) => RawTerm::Atom(name),
            Lexeme::Str(text) => RawTerm::Str(self.adjacent_strings(text)?),
            Lexeme::Int(_) | Lexeme::Float(_) | Lexeme::Char(_) => self.number(&token, false)?,
            Lexeme::Punct(Symbol::Hyphen | Symbol::Plus) => match self.signed(token)? {
                Literal::Int(value) => RawTerm::Int(value),
                Literal::Float(value) => RawTerm::Float(value),
            },
            Lexeme::Punct(Symbol::OpenBrace) => return Ok(Start::Open(Container::Tuple, pos)),
            Lexeme::Punct(Symbol::OpenSquare) => return Ok(Start::Open(Container::List, pos)),
            Lexeme::Punct(Symbol::OpenParen) => return Ok(Start::Open(Container::Paren, pos)),
            Lexeme::Punct(Symbol::Sharp) => {
                let brace = self.next()?;
                if brace.lexeme != Lexeme::Punct(Symbol::OpenBrace) {
                    return Err(self.syntax(
                        brace.pos,
                        format!("expected '{{' after '#' to start a map, found {brace}"),
                    ));
                }
                return Ok(Start::Open(Container::Map, pos));
            }
            Lexeme::Punct(Symbol::DoubleLeftAngle) => RawTerm::Binary(self.binary(pos)?),
            Lexeme::Variable(name) => {
                return Err(self.syntax(
                    pos,
                    format!(
                        "variable {name} has no value in a term file; an atom that starts \
                         with a capital letter is written quoted: '{name}'"
                    ),
                ));
            }
            Lexeme::Keyword("fun") => {
                return Err(self.syntax(
                    pos,
                    "a fun (fun M:F/A) is valid Erlang, but not a term hotcode carries: plugins \
                     exchange data, not code"
                        .to_owned(),
                ));
            }
            Lexeme::Keyword(word) => {
                return Err(self.syntax(
                    pos,
                    format!("{word} is a reserved word; as an atom it is written quoted: '{word}'"),
                ));
            }
            Lexeme::Sigil => {
                return Err(self.syntax(
                    pos,
                    "sigil strings are not read in term files; write a plain \"string\"".to_owned(),
                ));
            }
            Lexeme::Eof => return Err(self.unexpected_eof(&token, "a term")),
            Lexeme::Punct(_) | Lexeme::End => {
                return Err(self.syntax(pos, format!("expected a term, found {token}")));
            }
        };
        Ok(Start::Value(Spanned { value, pos }))
    }

    /// `text` and the string literals that follow it: adjacent strings are one string.
    fn adjacent_strings(&mut self, mut text: String) -> Result<String, ParseError> {
        while let Lexeme::Str(more) = &self.peek()?.lexeme {
            text.push_str(more);
            self.next()?;
        }
        Ok(text)
    }

    /// The number after a unary `+` or `-` (`token`), as `erl_parse` reads a term: a number
    /// literal, possibly in parentheses (`-(3)`), but not another sign (`-(-3)` is refused
    /// by `file:consult` too).
    fn signed(&mut self, token: Token) -> Result<Literal, ParseError> {
        let negative = token.lexeme == Lexeme::Punct(Symbol::Hyphen);
        let mut number = self.next()?;
        let mut parens = Vec::new();
        while number.lexeme == Lexeme::Punct(Symbol::OpenParen) {
            parens.push(number.pos);
            number = self.next()?;
        }
        let value = match number.lexeme {
            Lexeme::Int(_) | Lexeme::Float(_) | Lexeme::Char(_) => {
                self.literal_number(&number, negative)?
            }
            Lexeme::Eof => return Err(self.unexpected_eof(&number, "a number")),
            _ => {
                return Err(self.syntax(
                    number.pos,
                    format!("expected a number after '{}', found {number}", token_text(&token)),
                ));
            }
        };
        self.close_parens(&parens)?;
        Ok(value)
    }

    /// Takes one `)` for each `(` opened at `parens`.
    fn close_parens(&mut self, parens: &[Pos]) -> Result<(), ParseError> {
        for opened in parens.iter().rev() {
            let close = self.next()?;
            if close.lexeme != Lexeme::Punct(Symbol::CloseParen) {
                return Err(match close.lexeme {
                    Lexeme::Eof => self.unexpected_eof(&close, "')'"),
                    _ => self.syntax(
                        close.pos,
                        format!(
                            "expected ')' to close the parenthesis opened at {opened}, found \
                             {close}"
                        ),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Converts a number token, negated if a `-` came before it.
    fn number(&self, token: &Token, negative: bool) -> Result<RawTerm, ParseError> {
        Ok(match self.literal_number(token, negative)? {
            Literal::Int(value) => RawTerm::Int(value),
            Literal::Float(value) => RawTerm::Float(value),
        })
    }

    /// Converts a number token (an integer, a float or a `$c` character), negated if a `-`
    /// came before it.
    fn literal_number(&self, token: &Token, negative: bool) -> Result<Literal, ParseError> {
        let magnitude = match token.lexeme {
            Lexeme::Float(value) => {
                return Ok(Literal::Float(if negative { -value } else { value }));
            }
            Lexeme::Char(c) => u64::from(u32::from(c)),
            Lexeme::Int(Some(value)) => value,
            _ => u64::MAX,
        };
        let value = if negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        };
        match value {
            Some(value) => Ok(Literal::Int(value)),
            None => Err(self.syntax(
                token.pos,
                "an integer that does not fit in 64 bits is valid Erlang, but not a term \
                 hotcode carries (its integers are 64-bit)"
                    .to_owned(),
            )),
        }
    }

    /// Parses the segments of a binary up to its `>>`; `<<` at `open` is taken.
    ///
    /// A segment is `Value`, `Value:Size`, `Value/Types` or `Value:Size/Types`, as in
    /// Erlang: the value an integer, a float, a character or a string (each of its
    /// characters one segment), possibly signed and in parentheses; the types any of
    /// `integer`, `float`, `utf8`, `utf16`, `utf32`, `signed`, `unsigned`, `big`, `little`,
    /// `native` and `unit:N`, joined by `-`. An integer keeps its low `Size` bits (`<<256>>`
    /// is `<<0>>`). A binary whose bits do not make whole bytes is a bitstring, which no
    /// term holds.
    fn binary(&mut self, open: Pos) -> Result<Vec<u8>, ParseError> {
        self.open.push(Open::new(Container::Binary, open));
        let mut bits = Bits::default();
        let mut token = self.next()?;
        if token.lexeme == Lexeme::Punct(Symbol::DoubleRightAngle) {
            self.open.pop();
            return Ok(bits.bytes);
        }
        loop {
            let segment = token.pos;
            let value = self.segment_value(token)?;
            let mut separator = self.next()?;
            let mut size = None;
            if separator.lexeme == Lexeme::Punct(Symbol::Colon) {
                let size_token = self.next()?;
                size = Some(match size_token.lexeme {
                    Lexeme::Int(Some(n)) if n <= MAX_SEGMENT_BITS => n,
                    Lexeme::Eof => return Err(self.unexpected_eof(&size_token, "a size")),
                    _ => {
                        return Err(self.syntax(
                            size_token.pos,
                            format!(
                                "expected a segment size (an integer up to {MAX_SEGMENT_BITS}), \
                                 found {size_token}"
                            ),
                        ));
                    }
                });
                separator = self.next()?;
            }
            let mut types = SegmentTypes::default();
            if separator.lexeme == Lexeme::Punct(Symbol::Slash) {
                loop {
                    let word = self.next()?;
                    types.add(self, &word)?;
                    separator = self.next()?;
                    if separator.lexeme != Lexeme::Punct(Symbol::Hyphen) {
                        break;
                    }
                }
            }
            bits.segment(self, segment, &value, size, &types)?;
            match separator.lexeme {
                Lexeme::Punct(Symbol::Comma) => token = self.next()?,
                Lexeme::Punct(Symbol::DoubleRightAngle) => break,
                Lexeme::Eof => return Err(self.unexpected_eof(&separator, "','")),
                _ => {
                    return Err(self.syntax(
                        separator.pos,
                        format!(
                            "expected ',' or '>>' in the binary opened at {open}, found \
                             {separator}"
                        ),
                    ));
                }
            }
        }
        self.open.pop();
        if bits.len % 8 != 0 {
            return Err(self.syntax(
                open,
                format!(
                    "a bitstring of {} bits is valid Erlang, but not a term hotcode carries: a \
                     binary must make whole bytes",
                    bits.len
                ),
            ));
        }
        Ok(bits.bytes)
    }

    /// The value of a binary segment: a string or a number, possibly signed and in
    /// parentheses.
    fn segment_value(&mut self, mut token: Token) -> Result<SegmentValue, ParseError> {
        let mut parens = Vec::new();
        while token.lexeme == Lexeme::Punct(Symbol::OpenParen) {
            parens.push(token.pos);
            token = self.next()?;
        }
        let value = match token.lexeme {
            Lexeme::Str(text) => SegmentValue::Str(self.adjacent_strings(text)?),
            Lexeme::Int(_) | Lexeme::Float(_) | Lexeme::Char(_) => {
                SegmentValue::Number(self.literal_number(&token, false)?)
            }
            Lexeme::Punct(Symbol::Hyphen | Symbol::Plus) => {
                SegmentValue::Number(self.signed(token)?)
            }
            Lexeme::Eof => return Err(self.unexpected_eof(&token, "a segment")),
            _ => {
                return Err(self.syntax(
                    token.pos,
                    format!("expected a string or a number in a binary, found {token}"),
                ));
            }
        };
        self.close_parens(&parens)?;
        Ok(value)
    }
}

/// The largest segment of a binary, in bits: a term file is at most [`MAX_TERM_FILE`]
/// bytes, and no segment needs to be bigger than the file.
const MAX_SEGMENT_BITS: u64 = MAX_TERM_FILE * 8;

/// A number literal.
#[derive(Debug, Clone, Copy)]
enum Literal {
    Int(i64),
    Float(f64),
}

/// The value of a binary segment.
enum SegmentValue {
    Number(Literal),
    /// Each character is a segment of its own, with the same size and types.
    Str(String),
}

/// The type of a binary segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum SegmentKind {
    #[default]
    Integer,
    Float,
    Utf8,
    Utf16,
    Utf32,
}

/// A segment's `/Types`.
#[derive(Debug, Default)]
struct SegmentTypes {
    kind: SegmentKind,
    little: bool,
    unit: Option<u64>,
}

impl SegmentTypes {
    /// Adds the type named by `word` (a `unit` takes its `:N` from the parser).
    fn add(&mut self, parser: &mut Parser<'_>, word: &Token) -> Result<(), ParseError> {
        let name = match &word.lexeme {
            Lexeme::Atom(name) => name.as_str(),
            Lexeme::Eof => return Err(parser.unexpected_eof(word, "a segment type")),
            _ => "",
        };
        match name {
            "integer" => self.kind = SegmentKind::Integer,
            "float" => self.kind = SegmentKind::Float,
            "utf8" => self.kind = SegmentKind::Utf8,
            "utf16" => self.kind = SegmentKind::Utf16,
            "utf32" => self.kind = SegmentKind::Utf32,
            // Signedness only matters when reading a binary, not when writing one.
            "signed" | "unsigned" => {}
            "big" => self.little = false,
            // Every target hotcode runs on (x86_64, aarch64) is little-endian.
            "little" | "native" => self.little = true,
            "unit" => {
                let colon = parser.next()?;
                let unit = parser.next()?;
                match (colon.lexeme, &unit.lexeme) {
                    (Lexeme::Punct(Symbol::Colon), Lexeme::Int(Some(n @ 1..=256))) => {
                        self.unit = Some(*n);
                    }
                    _ => {
                        return Err(parser
                            .syntax(unit.pos, "expected unit:N with N from 1 to 256".to_owned()));
                    }
                }
            }
            "binary" | "bytes" | "bitstring" | "bits" => {
                return Err(parser.syntax(
                    word.pos,
                    format!(
                        "a {name} segment needs a binary value, which a term file cannot \
                         write inside a binary; write its bytes"
                    ),
                ));
            }
            _ => {
                return Err(parser.syntax(
                    word.pos,
                    format!(
                        "expected a segment type (integer, float, utf8, utf16, utf32, signed, \
                         unsigned, big, little, native or unit:N), found {word}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A binary being built, bit by bit.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    /// How many bits of `bytes` are used (the rest of the last byte is zero).
    len: u64,
}

impl Bits {
    fn push_bit(&mut self, bit: bool) {
        if self.len.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if bit && let Some(last) = self.bytes.last_mut() {
            *last |= 0x80 >> (self.len % 8);
        }
        self.len += 1;
    }

    /// The low `size` bits of `value`, most significant first, sign-extended past 64.
    fn push_int(&mut self, value: i64, size: u64, little: bool) {
        let bit = |index: u64| -> bool {
            if index >= 63 { value < 0 } else { (value >> index) & 1 == 1 }
        };
        if little && size.is_multiple_of(8) {
            for byte in 0..size / 8 {
                for index in (byte * 8..byte * 8 + 8).rev() {
                    self.push_bit(bit(index));
                }
            }
        } else {
            for index in (0..size).rev() {
                self.push_bit(bit(index));
            }
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.push_int(i64::from(*byte), 8, false);
        }
    }

    /// Adds one segment, `value` with `size` and `types` (for a string, one per character).
    fn segment(
        &mut self,
        parser: &Parser<'_>,
        pos: Pos,
        value: &SegmentValue,
        size: Option<u64>,
        types: &SegmentTypes,
    ) -> Result<(), ParseError> {
        let fail = |message: String| Err(parser.syntax(pos, message));
        let utf = matches!(types.kind, SegmentKind::Utf8 | SegmentKind::Utf16 | SegmentKind::Utf32);
        if utf && (size.is_some() || types.unit.is_some()) {
            return fail("a utf8, utf16 or utf32 segment takes no size or unit".to_owned());
        }
        let numbers: Vec<Literal> = match value {
            SegmentValue::Number(number) => vec![*number],
            SegmentValue::Str(text) => {
                text.chars().map(|c| Literal::Int(i64::from(u32::from(c)))).collect()
            }
        };
        let default_size = if types.kind == SegmentKind::Float { 64 } else { 8 };
        let bits = size.unwrap_or(default_size).saturating_mul(types.unit.unwrap_or(1));
        if bits > MAX_SEGMENT_BITS {
            return fail(format!("a segment of {bits} bits is more than a term file needs"));
        }
        for number in numbers {
            match (types.kind, number) {
                (SegmentKind::Integer, Literal::Int(value)) => {
                    self.push_int(value, bits, types.little);
                }
                (SegmentKind::Integer, Literal::Float(_)) => {
                    return fail("a float segment needs the type /float".to_owned());
                }
                (SegmentKind::Float, number) => {
                    let value = match number {
                        Literal::Float(value) => value,
                        // Integers up to 2^53 are exact; a term file writes no bigger ones here.
                        Literal::Int(value) => value as f64,
                    };
                    let mut bytes = match bits {
                        64 => value.to_be_bytes().to_vec(),
                        // The float is rounded to the nearest 32-bit float, as Erlang does.
                        32 => (value as f32).to_be_bytes().to_vec(),
                        _ => {
                            return fail(format!(
                                "a float segment of {bits} bits: hotcode writes 32- and 64-bit \
                                 floats"
                            ));
                        }
                    };
                    if types.little {
                        bytes.reverse();
                    }
                    self.push_bytes(&bytes);
                }
                (kind, Literal::Int(value)) => {
                    let Some(c) = u32::try_from(value).ok().and_then(char::from_u32) else {
                        return fail(format!("{value} is not a Unicode code point"));
                    };
                    let bytes: Vec<u8> = match kind {
                        SegmentKind::Utf8 => c.to_string().into_bytes(),
                        SegmentKind::Utf16 => {
                            let mut units = [0u16; 2];
                            c.encode_utf16(&mut units)
                                .iter()
                                .flat_map(|unit| {
                                    if types.little {
                                        unit.to_le_bytes()
                                    } else {
                                        unit.to_be_bytes()
                                    }
                                })
                                .collect()
                        }
                        _ => {
                            let code = u32::from(c);
                            if types.little { code.to_le_bytes() } else { code.to_be_bytes() }
                                .to_vec()
                        }
                    };
                    self.push_bytes(&bytes);
                }
                (_, Literal::Float(_)) => {
                    return fail("a float cannot be a utf8, utf16 or utf32 segment".to_owned());
                }
            }
        }
        Ok(())
    }
}

/// The text of a sign token, for messages.
fn token_text(token: &Token) -> &'static str {
    match token.lexeme {
        Lexeme::Punct(Symbol::Plus) => "+",
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Vec<Spanned<RawTerm>>, ParseError> {
        parse_terms(Path::new("t.config"), text)
    }

    fn terms(text: &str) -> Vec<Term> {
        match parse(text) {
            Ok(terms) => terms.iter().map(|t| t.value.to_term()).collect(),
            Err(error) => panic!("{text:?} should parse, but: {error}"),
        }
    }

    fn atom(name: &str) -> Term {
        Term::atom(name)
    }

    #[test]
    fn values_parse_to_the_terms_they_write() {
        let cases: Vec<(&str, Term)> = vec![
            ("foo.", atom("foo")),
            ("fooBar_1@x.", atom("fooBar_1@x")),
            ("'Hello world'.", atom("Hello world")),
            (r"'it\'s\n'.", atom("it's\n")),
            ("'end'.", atom("end")),
            (r#""a\"b\tc\x{41}\101"."#, Term::Str("a\"b\tcAA".into())),
            (r#""ab" "cd"."#, Term::Str("abcd".into())),
            ("\"\".", Term::Str(String::new())),
            ("42.", Term::Int(42)),
            ("-42.", Term::Int(-42)),
            ("- 7.", Term::Int(-7)),
            ("16#FF.", Term::Int(255)),
            ("-2#101.", Term::Int(-5)),
            ("1_000.", Term::Int(1000)),
            ("$a.", Term::Int(97)),
            (r"$\n.", Term::Int(10)),
            ("9223372036854775807.", Term::Int(i64::MAX)),
            ("-9223372036854775808.", Term::Int(i64::MIN)),
            ("1.5.", Term::Float(1.5)),
            ("-2.5e3.", Term::Float(-2500.0)),
            ("{}.", Term::tuple([])),
            (
                "{a, \"1\", [b, c]}.",
                Term::tuple([atom("a"), "1".into(), Term::list([atom("b"), atom("c")])]),
            ),
            ("[].", Term::list([])),
            ("#{}.", Term::map([])),
            (
                "#{a => 1, \"k\" => [x]}.",
                Term::map([(atom("a"), Term::Int(1)), ("k".into(), Term::list([atom("x")]))]),
            ),
            ("<<>>.", Term::Binary(vec![])),
            ("<<\"ab\", 0, 255, $c>>.", Term::Binary(vec![b'a', b'b', 0, 255, b'c'])),
            ("%% a comment\n  {x} % trailing\n.\n", Term::tuple([atom("x")])),
            ("'\\x{7f}'.", atom("\u{7f}")),
        ];
        for (text, expected) in cases {
            assert_eq!(terms(text), vec![expected], "{text:?}");
        }
    }

    #[test]
    fn several_terms_each_end_with_a_dot() {
        assert_eq!(
            terms("a. b.\n{c}.%x\n[d].\t"),
            vec![atom("a"), atom("b"), Term::tuple([atom("c")]), Term::list([atom("d")])]
        );
        assert_eq!(terms(""), vec![]);
        assert_eq!(terms("  % nothing but a comment"), vec![]);
    }

    #[test]
    fn positions_are_line_and_character_column() {
        let parsed = parse("%% c\n{ab,\n  \"é\", x}.").unwrap_or_default();
        let tuple = parsed[0].value.as_tuple().unwrap_or_default();
        let positions: Vec<String> = std::iter::once(parsed[0].pos)
            .chain(tuple.iter().map(|t| t.pos))
            .map(|p| p.to_string())
            .collect();
        // `x` is the 8th character of its line, although `é` takes two bytes.
        assert_eq!(positions, ["2:1", "2:2", "3:3", "3:8"]);
        let parsed = parse("'é' 'é' x").map(|_| ()).unwrap_err();
        assert_eq!(parsed.to_string(), "t.config:1:5: expected '.' after the term, found atom 'é'");
    }

    #[test]
    fn errors_name_the_file_position_and_problem() {
        // (text, expected "line:col: message" substring)
        let cases = [
            ("{a, b", "1:1: tuple is not closed"),
            ("[a, {b, c}", "1:1: list is not closed"),
            ("{a, [b", "1:5: list is not closed"),
            ("{a, b}", "1:7: expected '.' after the term, found end of file"),
            ("{a, b}\n\n", "1:7: expected '.' after the term"),
            ("{a b}.", "1:4: expected ',' or '}' in the tuple opened at 1:1, found atom b"),
            ("[a | b].", "1:4: an improper list (its tail is b, not a list) is valid Erlang"),
            ("{a, X}.", "1:5: variable X has no value"),
            ("{a, end}.", "1:5: end is a reserved word"),
            ("'abc.", "1:1: no closing quotation"),
            ("\"abc", "1:1: no closing quotation"),
            ("{a}.b.", "1:4: the '.' that ends a term must be followed"),
            ("{a} b.", "1:5: expected '.' after the term, found atom b"),
            ("{a,}.", "1:4: expected a term, found '}'"),
            ("99999999999999999999.", "1:1: an integer that does not fit in 64 bits is valid"),
            ("9223372036854775808.", "1:1: an integer that does not fit in 64 bits"),
            ("- a.", "1:3: expected a number after '-', found atom a"),
            ("#[a].", "1:2: expected '{' after '#'"),
            ("#{a := 1}.", "1:5: expected '=>' after a map key, found ':='"),
            ("#{a => 1", "1:1: map is not closed"),
            ("<<1:4>>.", "1:1: a bitstring of 4 bits is valid Erlang, but not a term hotcode"),
            ("<<\"ab\"/binary>>.", "1:8: a binary segment needs a binary value"),
            ("<<1.5>>.", "1:3: a float segment needs the type /float"),
            ("<<a>>.", "1:3: expected a string or a number in a binary, found atom a"),
            ("<<1:8/utf8>>.", "1:3: a utf8, utf16 or utf32 segment takes no size"),
            ("<<1/big-endian>>.", "1:9: expected a segment type"),
            ("<<1:a>>.", "1:5: expected a segment size"),
            ("<<1 2>>.", "1:5: expected ',' or '>>' in the binary opened at 1:1"),
            ("-(-3).", "1:3: expected a number after '-', found '-'"),
            ("- - 3.", "1:3: expected a number after '-', found '-'"),
            ("-(3.", "1:4: expected ')' to close the parenthesis opened at 1:2"),
            ("(a, b).", "1:3: expected ')' to close the parenthesis opened at 1:1, found ','"),
            ("().", "1:2: expected a term, found ')'"),
            ("[a | [b], c].", "1:9: expected ']' after the tail of the list opened at 1:1"),
            ("fun m:f/1.", "1:1: a fun (fun M:F/A) is valid Erlang, but not a term hotcode"),
            ("~\"x\".", "1:1: sigil strings are not read"),
            ("\n  \u{2603}.", "2:3: "),
        ];
        for (text, expected) in cases {
            match parse(text) {
                Ok(terms) => panic!("{text:?} should fail, parsed {terms:?}"),
                Err(error) => {
                    let shown = error.to_string();
                    assert!(
                        shown.starts_with("t.config:") && shown.contains(expected),
                        "{text:?}: {shown:?} does not contain {expected:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn nesting_is_limited_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        let error = parse(&deep).map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("nested more than 256 levels"), "{error}");
        // The deepest accepted term parses, converts and prints in a quarter of the stack a
        // spawned thread gets by default, even in a debug build.
        let fine = format!("{}{}.", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let small_stack = std::thread::Builder::new().stack_size(512 * 1024);
        let worker = small_stack.spawn(move || {
            let parsed = parse(&fine).expect("MAX_DEPTH levels are accepted");
            let shown = parsed[0].value.describe();
            (parsed[0].value.to_term(), shown)
        });
        let (term, shown) = worker.expect("spawn").join().expect("no stack overflow");
        assert!(matches!(term, Term::List(_)) && shown.starts_with("[[[["));
    }

    #[test]
    fn single_term_files_hold_exactly_one_term() {
        let path = Path::new("f");
        assert!(parse_single_term(path, "{a}.\n").is_ok());
        let empty = parse_single_term(path, "%% nothing\n").map(|_| ()).unwrap_err();
        // Where the term should have been: the end of the file.
        assert_eq!(empty.pos, Some(Pos::new(2, 1)));
        assert!(empty.to_string().starts_with("f:2:1: the file holds no term"), "{empty}");
        let two = parse_single_term(path, "a.\nb.\n").map(|_| ()).unwrap_err();
        assert!(two.to_string().starts_with("f:2:1: the file must hold one term"), "{two}");
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let error = read_terms(Path::new("/nonexistent/dir/x.app")).map(|_| ()).unwrap_err();
        assert!(matches!(error.kind, ParseErrorKind::Io(_)));
        assert!(error.to_string().starts_with("/nonexistent/dir/x.app: cannot read the file"));
    }

    #[test]
    fn display_writes_term_syntax_that_parses_back() {
        let text =
            r#"{load, {'Ch sup', "a\"b\n", [1, -2, 3.5, <<1, 2>>, <<"ok">>, #{k => 'end'}]}}."#;
        let parsed = parse(text).unwrap_or_default();
        let shown = format!("{}.", parsed[0].value);
        assert_eq!(shown, text);
        let long = RawTerm::List(
            (0..100).map(|i| Spanned::new(RawTerm::Int(i), Pos::new(1, 1))).collect(),
        );
        assert!(long.describe().ends_with("...") && long.describe().len() < 130);
    }

    /// Arbitrary terms as the parser produces them (positions aside).
    fn arb_term() -> impl Strategy<Value = Term> {
        let leaf = prop_oneof![
            "[a-z][a-zA-Z0-9_@]{0,8}".prop_map(Term::Atom),
            any::<String>().prop_map(Term::Atom),
            any::<String>().prop_map(Term::Str),
            any::<i64>().prop_map(Term::Int),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Term::Float),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Term::Binary),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Term::List),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Term::Tuple),
                // A map's keys are distinct (the parser keeps a repeated key's last value).
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(|pairs| {
                    let mut unique: Vec<(Term, Term)> = Vec::with_capacity(pairs.len());
                    for (key, value) in pairs {
                        let text = key.to_string();
                        match unique.iter_mut().find(|(k, _)| k.to_string() == text) {
                            Some(pair) => *pair = (key, value),
                            None => unique.push((key, value)),
                        }
                    }
                    Term::Map(unique)
                }),
            ]
        })
    }

    /// Writes a term as the raw tree would, so it goes through [`RawTerm`]'s `Display`.
    fn to_raw(term: &Term) -> RawTerm {
        let spanned = |t: &Term| Spanned::new(to_raw(t), Pos::new(1, 1));
        match term {
            Term::Atom(name) => RawTerm::Atom(name.clone()),
            Term::Int(value) => RawTerm::Int(*value),
            Term::Float(value) => RawTerm::Float(*value),
            Term::Str(text) => RawTerm::Str(text.clone()),
            Term::Binary(bytes) => RawTerm::Binary(bytes.clone()),
            Term::List(items) => RawTerm::List(items.iter().map(spanned).collect()),
            Term::Tuple(items) => RawTerm::Tuple(items.iter().map(spanned).collect()),
            Term::Map(pairs) => {
                RawTerm::Map(pairs.iter().map(|(k, v)| (spanned(k), spanned(v))).collect())
            }
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn parser_never_panics_on_term_like_text(
            text in "[-a-zA-Z0-9_ .,{}\\[\\]|#<>=:$'\"\\\\%~\n]{0,40}"
        ) {
            let _ = parse(&text);
        }

        #[test]
        fn written_terms_parse_back(term in arb_term()) {
            let text = format!("{}.\n", to_raw(&term));
            let parsed = parse(&text);
            prop_assert!(parsed.is_ok(), "{text:?}: {:?}", parsed.map(|_| ()));
            let back: Vec<Term> =
                parsed.unwrap_or_default().iter().map(|t| t.value.to_term()).collect();
            prop_assert_eq!(back, vec![term]);
        }
    }
}
