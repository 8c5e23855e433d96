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
//! Literal terms only, as `file:consult` reads them: atoms (bare, or `'quoted'` with
//! escapes), strings (with escapes; adjacent strings are joined, as in Erlang), integers
//! (`-3`, `16#FF`, `$c`), floats, tuples, proper lists, maps `#{K => V}`, binaries
//! `<<"text", 1, 2>>`, and `%` comments. Variables, reserved words used as bare atoms,
//! improper lists `[H|T]`, sigils and expressions are rejected with a message saying so:
//! `file:consult` would fail on them too, and silently reading something else would be
//! worse.
//!
//! # Tokens and positions
//!
//! The tokens come from the `erl_tokenize` crate, which follows OTP's `erl_scan` token for
//! token (escapes, radix integers, character literals, floats, triple-quoted strings), so
//! this module only has to know the grammar of terms. `erl_tokenize` counts columns in
//! bytes; [`Pos`] counts them in characters, as `erl_scan` does and as editors show them, so
//! positions on a line with non-ASCII text still point at the right character.
//!
//! The parser keeps open brackets on a heap stack instead of recursing, and nesting is
//! limited to [`MAX_DEPTH`] levels, so that a file of ten thousand `[` is an error, not a
//! stack overflow, here or in the (recursive) conversions and drops of the tree. The parser
//! never panics on any input.

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

    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RawTerm::Str(text) => Some(text),
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

    /// The same value without positions.
    pub fn to_term(&self) -> Term {
        match self {
            RawTerm::Atom(name) => Term::Atom(name.clone()),
            RawTerm::Str(text) => Term::Str(text.clone()),
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
        return Err(ParseError::whole_file(
            path,
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
    let mut text = String::new();
    // `take` bounds the read even if the file grows after the check.
    file.take(MAX_TERM_FILE + 1).read_to_string(&mut text).map_err(fail)?;
    if text.len() as u64 > MAX_TERM_FILE {
        return Err(ParseError::whole_file(
            path,
            ParseErrorKind::Invalid(format!("grew past {MAX_TERM_FILE} bytes while read")),
        ));
    }
    Ok(text)
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
}

impl Container {
    fn name(self) -> &'static str {
        match self {
            Container::Tuple => "tuple",
            Container::List => "list",
            Container::Map => "map",
            Container::Binary => "binary",
        }
    }

    fn close(self) -> Symbol {
        match self {
            Container::Tuple | Container::Map => Symbol::CloseBrace,
            Container::List => Symbol::CloseSquare,
            Container::Binary => Symbol::DoubleRightAngle,
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
}

impl Open {
    fn finish(self) -> Spanned<RawTerm> {
        let value = match self.container {
            Container::Tuple => RawTerm::Tuple(self.items),
            Container::List => RawTerm::List(self.items),
            _ => {
                let mut pairs = Vec::with_capacity(self.items.len() / 2);
                let mut items = self.items.into_iter();
                while let (Some(key), Some(value)) = (items.next(), items.next()) {
                    pairs.push((key, value));
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
            let token = match erl_tokenize::scan_token(self.text, self.at) {
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
                    self.open.push(Open { container, pos, items: Vec::new() });
                    let first = self.next()?;
                    if first.lexeme != Lexeme::Punct(container.close()) {
                        token = first;
                        continue;
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
                    Lexeme::Punct(Symbol::Comma) => {
                        token = self.next()?;
                        break;
                    }
                    Lexeme::Punct(symbol) if symbol == container.close() => match self.open.pop() {
                        Some(open) => done = open.finish(),
                        None => {
                            return Err(self.syntax(opened, "internal parser error".to_owned()));
                        }
                    },
                    Lexeme::Punct(Symbol::VerticalBar) if container == Container::List => {
                        return Err(self.syntax(
                            separator.pos,
                            "improper lists [Head | Tail] are not supported in term files; \
                             write the whole list [A, B, C]"
                                .to_owned(),
                        ));
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
    /// opening bracket of a tuple, list or map.
    fn start(&mut self, token: Token) -> Result<Start, ParseError> {
        let pos = token.pos;
        let value = match token.lexeme {
            Lexeme::Atom(name) => RawTerm::Atom(name),
            Lexeme::Str(mut text) => {
                // Adjacent string literals are one string, as in Erlang.
                while let Lexeme::Str(more) = &self.peek()?.lexeme {
                    text.push_str(more);
                    self.next()?;
                }
                RawTerm::Str(text)
            }
            Lexeme::Int(_) | Lexeme::Float(_) | Lexeme::Char(_) => self.number(&token, false)?,
            Lexeme::Punct(Symbol::Hyphen) => {
                let number = self.next()?;
                match number.lexeme {
                    Lexeme::Int(_) | Lexeme::Float(_) | Lexeme::Char(_) => {
                        self.number(&number, true)?
                    }
                    Lexeme::Eof => return Err(self.unexpected_eof(&number, "a number")),
                    _ => {
                        return Err(self.syntax(
                            number.pos,
                            format!("expected a number after '-', found {number}"),
                        ));
                    }
                }
            }
            Lexeme::Punct(Symbol::OpenBrace) => return Ok(Start::Open(Container::Tuple, pos)),
            Lexeme::Punct(Symbol::OpenSquare) => return Ok(Start::Open(Container::List, pos)),
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

    /// Converts a number token, negated if a `-` came before it.
    fn number(&self, token: &Token, negative: bool) -> Result<RawTerm, ParseError> {
        let magnitude = match token.lexeme {
            Lexeme::Float(value) => {
                return Ok(RawTerm::Float(if negative { -value } else { value }));
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
            Some(value) => Ok(RawTerm::Int(value)),
            None => Err(self.syntax(
                token.pos,
                "integer does not fit in 64 bits (a release file needs no bigger ones)".to_owned(),
            )),
        }
    }

    /// Parses the segments of a binary up to its `>>`; `<<` at `open` is taken. A segment is
    /// a string (each character one byte) or an integer 0..=255.
    fn binary(&mut self, open: Pos) -> Result<Vec<u8>, ParseError> {
        self.open.push(Open { container: Container::Binary, pos: open, items: Vec::new() });
        let mut bytes = Vec::new();
        let mut token = self.next()?;
        if token.lexeme == Lexeme::Punct(Symbol::DoubleRightAngle) {
            self.open.pop();
            return Ok(bytes);
        }
        loop {
            match &token.lexeme {
                Lexeme::Str(text) => {
                    for c in text.chars() {
                        let byte = u8::try_from(u32::from(c)).map_err(|_| {
                            self.syntax(
                                token.pos,
                                format!(
                                    "character {c:?} in a binary string does not fit in one \
                                     byte; write its bytes as integers"
                                ),
                            )
                        })?;
                        bytes.push(byte);
                    }
                }
                Lexeme::Int(Some(value)) if *value <= 255 => bytes.push(*value as u8),
                Lexeme::Char(c) if u32::from(*c) <= 255 => bytes.push(u32::from(*c) as u8),
                Lexeme::Eof => return Err(self.unexpected_eof(&token, "a segment")),
                _ => {
                    return Err(self.syntax(
                        token.pos,
                        format!(
                            "expected a string or an integer 0..255 in a binary, found {token}"
                        ),
                    ));
                }
            }
            let separator = self.next()?;
            match separator.lexeme {
                Lexeme::Punct(Symbol::Comma) => token = self.next()?,
                Lexeme::Punct(Symbol::DoubleRightAngle) => break,
                Lexeme::Eof => return Err(self.unexpected_eof(&separator, "','")),
                _ => {
                    return Err(self.syntax(
                        separator.pos,
                        format!(
                            "expected ',' or '>>' in the binary opened at {open}, found \
                             {separator} (segment types such as /utf8 are not supported)"
                        ),
                    ));
                }
            }
        }
        self.open.pop();
        Ok(bytes)
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
            ("[a | b].", "1:4: improper lists"),
            ("{a, X}.", "1:5: variable X has no value"),
            ("{a, end}.", "1:5: end is a reserved word"),
            ("'abc.", "1:1: no closing quotation"),
            ("\"abc", "1:1: no closing quotation"),
            ("{a}.b.", "1:4: the '.' that ends a term must be followed"),
            ("{a} b.", "1:5: expected '.' after the term, found atom b"),
            ("{a,}.", "1:4: expected a term, found '}'"),
            ("99999999999999999999.", "1:1: integer does not fit in 64 bits"),
            ("9223372036854775808.", "1:1: integer does not fit in 64 bits"),
            ("- a.", "1:3: expected a number after '-', found atom a"),
            ("#[a].", "1:2: expected '{' after '#'"),
            ("#{a := 1}.", "1:5: expected '=>' after a map key, found ':='"),
            ("#{a => 1", "1:1: map is not closed"),
            ("<<\"\u{2603}\">>.", "1:3: character '\u{2603}' in a binary string does not fit"),
            ("<<256>>.", "1:3: expected a string or an integer 0..255"),
            ("<<\"a\"/utf8>>.", "1:6: expected ',' or '>>'"),
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
        assert_eq!(empty.pos, None);
        assert!(empty.to_string().starts_with("f: the file holds no term"), "{empty}");
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
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Term::Map),
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
