//! Checking raw terms against the shape a file requires: the tools of the second stage.
//!
//! Every reader of a release file does the same few things: this must be a tuple of three,
//! that an atom, this a list of atoms. Doing them through one [`Form`] keeps the error
//! messages uniform: a term whose structure is wrong is reported at its own position as
//! `expected <form>, found <term>`, and a single wrong value inside a well-formed term is
//! reported at the value, saying what it should be and in which form.

use std::borrow::Cow;
use std::path::Path;

use super::error::{ParseError, ParseErrorKind};
use super::names::{NameKind, check_name};
use super::terms::{RawTerm, Spanned};

/// A term and the form it must have, written as in the SPEC (`{load, {Module, PrePurge,
/// PostPurge}}`).
pub(crate) struct Form<'a> {
    path: &'a Path,
    whole: &'a Spanned<RawTerm>,
    expected: &'a str,
}

impl<'a> Form<'a> {
    /// Starts checking `whole`, from the file at `path`, against `expected`.
    pub(crate) fn new(path: &'a Path, whole: &'a Spanned<RawTerm>, expected: &'a str) -> Self {
        Form { path, whole, expected }
    }

    /// The term as a whole does not have the form.
    pub(crate) fn mismatch(&self) -> ParseError {
        ParseError::at(
            self.path,
            self.whole.pos,
            ParseErrorKind::Shape {
                expected: self.expected.to_owned(),
                found: self.whole.value.describe(),
                detail: None,
            },
        )
    }

    /// One part of the term, `part`, is not what `wanted` says (for example "an atom for
    /// Module").
    pub(crate) fn bad_part(&self, part: &Spanned<RawTerm>, wanted: &str) -> ParseError {
        ParseError::at(
            self.path,
            part.pos,
            ParseErrorKind::Shape {
                expected: wanted.to_owned(),
                found: part.value.describe(),
                detail: Some(format!("in {}", self.expected)),
            },
        )
    }

    /// An error of another kind at `part`.
    pub(crate) fn error_at(&self, part: &Spanned<RawTerm>, kind: ParseErrorKind) -> ParseError {
        ParseError::at(self.path, part.pos, kind)
    }

    /// The elements of `term`, which must be a tuple of `arity` elements for the form to hold.
    pub(crate) fn tuple(
        &self,
        term: &'a Spanned<RawTerm>,
        arity: usize,
    ) -> Result<&'a [Spanned<RawTerm>], ParseError> {
        match term.value.as_tuple() {
            Some(items) if items.len() == arity => Ok(items),
            _ => Err(self.mismatch()),
        }
    }

    /// The elements of `term`, which must be a list for the form to hold. A string is a
    /// list (of its code points, as in Erlang), so `""` is an empty one.
    pub(crate) fn list(
        &self,
        term: &'a Spanned<RawTerm>,
    ) -> Result<Cow<'a, [Spanned<RawTerm>]>, ParseError> {
        term.value.as_elements(term.pos).ok_or_else(|| self.mismatch())
    }

    /// The name of `term`, which must be an atom; `name` says what it stands for.
    pub(crate) fn atom(&self, term: &Spanned<RawTerm>, name: &str) -> Result<String, ParseError> {
        match term.value.as_atom() {
            Some(atom) => Ok(atom.to_owned()),
            None => Err(self.bad_part(term, &format!("an atom for {name}"))),
        }
    }

    /// The text of `term`, which must be a string, written as a string literal or as the
    /// list of its code points (`"2"`, `[50]` and `[$2]` are one string, as in Erlang);
    /// `name` says what it stands for.
    pub(crate) fn string(&self, term: &Spanned<RawTerm>, name: &str) -> Result<String, ParseError> {
        match term.value.as_text() {
            Some(text) => Ok(text),
            None => Err(self.bad_part(term, &format!("a string for {name}"))),
        }
    }

    /// The names in `term`, which must be a list of atoms; `name` says what each stands for.
    pub(crate) fn atoms(
        &self,
        term: &'a Spanned<RawTerm>,
        name: &str,
    ) -> Result<Vec<String>, ParseError> {
        self.list(term)?.iter().map(|item| self.atom(item, name)).collect()
    }

    /// A name or version in `term`, checked against its grammar ([`super::names`]): an
    /// atom for applications and modules, a string for release names and versions; `name`
    /// says what it stands for.
    pub(crate) fn name(
        &self,
        term: &Spanned<RawTerm>,
        kind: NameKind,
        name: &str,
    ) -> Result<String, ParseError> {
        let text = match kind {
            NameKind::App | NameKind::Module => self.atom(term, name)?,
            NameKind::Release | NameKind::Vsn | NameKind::File => self.string(term, name)?,
        };
        check_name(kind, &text).map_err(|why| self.error_at(term, ParseErrorKind::Invalid(why)))?;
        Ok(text)
    }

    /// The names in `term`, a list of atoms, each checked as [`name`](Self::name) does.
    pub(crate) fn names(
        &self,
        term: &'a Spanned<RawTerm>,
        kind: NameKind,
        name: &str,
    ) -> Result<Vec<String>, ParseError> {
        self.list(term)?.iter().map(|item| self.name(item, kind, name)).collect()
    }
}
