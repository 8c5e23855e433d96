//! A small reader and writer for the Erlang terms of release files.
//!
//! `dist` must read the example `.rel` files (to know which application directories a root
//! needs) and write RELEASES, in the syntax the host reads. xtask does not depend on the host
//! crate (it builds the host's plugins, and a broken host must not break the build tool), so
//! it carries this reader for the little it needs: atoms, strings, integers, tuples and
//! lists, `%` comments, and a term ending with `.`. Anything else is a clear error naming
//! the file, line and column, never a guess.

use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};

/// A parsed term, with the position where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned {
    /// The term.
    pub term: Term,
    /// Its 1-based line.
    pub line: u32,
    /// Its 1-based column (in characters).
    pub col: u32,
}

/// The terms this reader knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// An atom, bare or quoted, with escapes resolved.
    Atom(String),
    /// A string literal, with escapes resolved.
    Str(String),
    /// A decimal integer.
    Int(i64),
    /// `{...}`.
    Tuple(Vec<Spanned>),
    /// `[...]`.
    List(Vec<Spanned>),
}

impl Term {
    /// A short description for messages, e.g. "the atom erts" or "a list".
    pub fn describe(&self) -> String {
        match self {
            Term::Atom(a) => format!("the atom {a}"),
            Term::Str(s) => format!("the string {s:?}"),
            Term::Int(i) => format!("the integer {i}"),
            Term::Tuple(items) => format!("a tuple of {}", items.len()),
            Term::List(_) => "a list".to_owned(),
        }
    }
}

/// Parses `text`, the contents of `file` (named in errors), which must hold exactly one term
/// followed by `.`.
pub fn parse_single(file: &str, text: &str) -> Result<Spanned> {
    let mut lexer = Lexer::new(file, text);
    let first = lexer.next_token()?;
    let term = parse_term(&mut lexer, first)?;
    let end = lexer.next_token()?;
    if end.tok != Tok::Dot {
        return Err(lexer.error_at(&end, format!("expected `.` after the term, found {}", end.tok)));
    }
    let rest = lexer.next_token()?;
    if rest.tok != Tok::Eof {
        return Err(lexer.error_at(&rest, "expected one term only, found more after the `.`"));
    }
    Ok(term)
}

/// Reads the version a relup script is for: the string `Vsn` that opens
/// `{Vsn, UpFrom, DownTo}.` Only the first two tokens are read, so the rest of the script
/// may use terms this reader does not know.
pub fn relup_vsn(file: &str, text: &str) -> Result<String> {
    let mut lexer = Lexer::new(file, text);
    let open = lexer.next_token()?;
    if open.tok != Tok::Open('{') {
        return Err(
            lexer.error_at(&open, format!("expected a relup `{{Vsn, ...}}`, found {}", open.tok))
        );
    }
    let vsn = lexer.next_token()?;
    match &vsn.tok {
        Tok::Str(s) => Ok(s.clone()),
        other => {
            Err(lexer.error_at(&vsn, format!("expected the release version string, found {other}")))
        }
    }
}

/// Writes `text` as an Erlang string literal.
pub fn write_string(out: &mut String, text: &str) {
    write_quoted(out, text, '"');
}

/// Writes `name` as an atom: bare when Erlang would read it back as the same atom, quoted
/// otherwise.
pub fn write_atom(out: &mut String, name: &str) {
    let mut chars = name.chars();
    let bare = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
        && !RESERVED.contains(&name);
    if bare {
        out.push_str(name);
    } else {
        write_quoted(out, name, '\'');
    }
}

/// Erlang's reserved words: an atom spelled like one must be quoted.
const RESERVED: [&str; 29] = [
    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
    "catch", "cond", "div", "else", "end", "fun", "if", "let", "maybe", "not", "of", "or",
    "orelse", "receive", "rem", "try", "when", "xor",
];

fn write_quoted(out: &mut String, text: &str, quote: char) {
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                // Writing to a `String` cannot fail.
                let _ = write!(out, "\\x{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

fn parse_term(lexer: &mut Lexer<'_>, token: Token) -> Result<Spanned> {
    let (line, col) = (token.line, token.col);
    let term = match token.tok {
        Tok::Atom(a) => Term::Atom(a),
        Tok::Str(s) => Term::Str(s),
        Tok::Int(i) => Term::Int(i),
        Tok::Open(open) => {
            let close = if open == '{' { '}' } else { ']' };
            let mut items = Vec::new();
            let mut next = lexer.next_token()?;
            if next.tok != Tok::Close(close) {
                loop {
                    items.push(parse_term(lexer, next)?);
                    let sep = lexer.next_token()?;
                    match &sep.tok {
                        Tok::Comma => next = lexer.next_token()?,
                        Tok::Close(c) if *c == close => break,
                        other => {
                            return Err(lexer.error_at(
                                &sep,
                                format!("expected `,` or `{close}`, found {other}"),
                            ));
                        }
                    }
                }
            }
            if open == '{' { Term::Tuple(items) } else { Term::List(items) }
        }
        other => return Err(lexer.error(line, col, format!("expected a term, found {other}"))),
    };
    Ok(Spanned { term, line, col })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Atom(String),
    Str(String),
    Int(i64),
    Open(char),
    Close(char),
    Comma,
    Dot,
    Eof,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Atom(a) => write!(f, "the atom {a}"),
            Tok::Str(s) => write!(f, "the string {s:?}"),
            Tok::Int(i) => write!(f, "the integer {i}"),
            Tok::Open(c) | Tok::Close(c) => write!(f, "`{c}`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Dot => f.write_str("`.`"),
            Tok::Eof => f.write_str("the end of the file"),
        }
    }
}

struct Token {
    tok: Tok,
    line: u32,
    col: u32,
}

struct Lexer<'a> {
    file: &'a str,
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: u32,
    col: u32,
}

impl<'a> Lexer<'a> {
    fn new(file: &'a str, text: &'a str) -> Self {
        Lexer { file, chars: text.chars().peekable(), line: 1, col: 1 }
    }

    fn error_at(&self, token: &Token, message: impl std::fmt::Display) -> anyhow::Error {
        self.error(token.line, token.col, message)
    }

    fn error(&self, line: u32, col: u32, message: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}:{line}:{col}: {message}", self.file)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn next_token(&mut self) -> Result<Token> {
        // Skip white space and comments.
        loop {
            match self.chars.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('%') => {
                    while self.chars.peek().is_some_and(|&c| c != '\n') {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
        let (line, col) = (self.line, self.col);
        let at = |tok| Ok(Token { tok, line, col });
        let Some(c) = self.bump() else { return at(Tok::Eof) };
        match c {
            '{' | '[' => at(Tok::Open(c)),
            '}' | ']' => at(Tok::Close(c)),
            ',' => at(Tok::Comma),
            '.' => match self.chars.peek() {
                None | Some('%') => at(Tok::Dot),
                Some(c) if c.is_whitespace() => at(Tok::Dot),
                Some(_) => {
                    bail!("{}:{line}:{col}: a `.` must be followed by white space", self.file)
                }
            },
            '"' => {
                let text = self.quoted('"', line, col)?;
                at(Tok::Str(text))
            }
            '\'' => {
                let text = self.quoted('\'', line, col)?;
                at(Tok::Atom(text))
            }
            c if c.is_ascii_lowercase() => {
                let mut name = String::from(c);
                while let Some(&c) = self.chars.peek() {
                    if !(c.is_ascii_alphanumeric() || c == '_' || c == '@') {
                        break;
                    }
                    name.push(c);
                    self.bump();
                }
                at(Tok::Atom(name))
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut digits = String::from(c);
                while let Some(&c) = self.chars.peek() {
                    if !c.is_ascii_digit() {
                        break;
                    }
                    digits.push(c);
                    self.bump();
                }
                match digits.parse() {
                    Ok(n) => at(Tok::Int(n)),
                    Err(_) => bail!(
                        "{}:{line}:{col}: `{digits}` is not a decimal integer this reader can take",
                        self.file
                    ),
                }
            }
            c => bail!(
                "{}:{line}:{col}: unexpected `{c}` (this reader knows atoms, strings, integers, \
                 tuples and lists)",
                self.file
            ),
        }
    }

    /// Reads a quoted string or atom after its opening `quote`.
    fn quoted(&mut self, quote: char, line: u32, col: u32) -> Result<String> {
        let mut text = String::new();
        loop {
            let Some(c) = self.bump() else {
                bail!("{}:{line}:{col}: this {quote} is never closed", self.file);
            };
            match c {
                c if c == quote => return Ok(text),
                '\\' => {
                    let escaped = match self.bump() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some(c @ ('\\' | '"' | '\'')) => c,
                        Some(other) => bail!(
                            "{}:{}:{}: unsupported escape `\\{other}`",
                            self.file,
                            self.line,
                            self.col.saturating_sub(2)
                        ),
                        None => bail!("{}:{line}:{col}: this {quote} is never closed", self.file),
                    };
                    text.push(escaped);
                }
                c => text.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spanned> {
        parse_single("t.rel", text)
    }

    fn atom(a: &str) -> Term {
        Term::Atom(a.into())
    }

    #[test]
    fn reads_nested_terms_with_comments_and_positions() {
        let term = parse("%% a comment\n{release, 'Quoted atom', [\"s\\\"q\", -12]}.\n").unwrap();
        assert_eq!((term.line, term.col), (2, 1));
        let Term::Tuple(items) = term.term else { panic!("not a tuple") };
        assert_eq!(items[0].term, atom("release"));
        assert_eq!(items[1].term, atom("Quoted atom"));
        assert_eq!((items[2].line, items[2].col), (2, 26));
        let Term::List(list) = &items[2].term else { panic!("not a list") };
        assert_eq!(list[0].term, Term::Str("s\"q".into()));
        assert_eq!(list[1].term, Term::Int(-12));
        assert_eq!(parse("[].").unwrap().term, Term::List(vec![]));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let cases = [
            ("{a, b}", "t.rel:1:7: expected `.` after the term, found the end of the file"),
            ("{a b}.", "t.rel:1:4: expected `,` or `}`, found the atom b"),
            ("{a,\n 1.5}.", "t.rel:2:3: a `.` must be followed by white space"),
            ("{a}. {b}.", "t.rel:1:6: expected one term only"),
            ("\n  <<\"bin\">>.", "t.rel:2:3: unexpected `<`"),
            ("{\"open}.", "t.rel:1:2: this \" is never closed"),
            ("[a, ].", "t.rel:1:5: expected a term, found `]`"),
        ];
        for (text, expected) in cases {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.starts_with(expected), "{text:?}: {msg}");
        }
    }

    #[test]
    fn relup_vsn_reads_only_the_opening() {
        let text = "%% a seed\n{\"B\",\n[{\"A\", [], [{apply, {m, f, [<<\"x\">>, 1.5]}}]}], []}.\n";
        assert_eq!(relup_vsn("r.relup", text).unwrap(), "B");
        let msg = relup_vsn("r.relup", "{'B', [], []}.").unwrap_err().to_string();
        assert!(msg.starts_with("r.relup:1:2: expected the release version string"), "{msg}");
        let msg = relup_vsn("r.relup", "[].").unwrap_err().to_string();
        assert!(msg.starts_with("r.relup:1:1: expected a relup"), "{msg}");
    }

    #[test]
    fn writes_atoms_and_strings_that_read_back() {
        let mut out = String::new();
        for name in ["prim_app", "Prim", "end", "a-b", "x@y"] {
            write_atom(&mut out, name);
            out.push(' ');
        }
        write_string(&mut out, "lib/\"q\"\\\n");
        assert_eq!(out, "prim_app 'Prim' 'end' 'a-b' x@y \"lib/\\\"q\\\"\\\\\\n\"");
    }
}
