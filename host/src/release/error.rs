//! The one error type of the release-file layer.
//!
//! Every problem with a release file, from an unreadable file through a stray character to a
//! relup script that loads a module nobody staged, is reported the same way: the file, the
//! line and column of the offending term, and what was expected there. `hotcode check` prints
//! these errors as they are (`path:line:col: message`, SPEC §7), so the position and the
//! message are the whole user interface of this layer and are kept precise.
//!
//! The kinds are typed so that callers (the release handler, tests) can tell a syntax error
//! from a script that is well-formed but unsafe to run, without matching on message text.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::terms::Pos;

/// A release file could not be read, parsed or accepted.
///
/// It displays as `path:line:col: message` when the problem has a place in the file, and as
/// `path: message` when it has none (the file could not be read, or it holds no term at all
/// and is empty).
#[derive(Debug)]
pub struct ParseError {
    /// The file, as the caller named it.
    pub path: PathBuf,
    /// Where in the file the problem is: the start of the offending term or token.
    pub pos: Option<Pos>,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// An error at `pos` in the file at `path`.
    pub fn at(path: &Path, pos: Pos, kind: ParseErrorKind) -> ParseError {
        ParseError { path: path.to_path_buf(), pos: Some(pos), kind }
    }

    /// An error about the file at `path` as a whole.
    pub fn whole_file(path: &Path, kind: ParseErrorKind) -> ParseError {
        ParseError { path: path.to_path_buf(), pos: None, kind }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(pos) => write!(f, "{}:{pos}: {}", self.path.display(), self.kind),
            None => write!(f, "{}: {}", self.path.display(), self.kind),
        }
    }
}

// The I/O error of `ParseErrorKind::Io` is part of the message rather than a `source`, so
// that printing the error with `{}` (as `hotcode check` does) already says what failed, and
// printing the whole chain does not say it twice.
impl std::error::Error for ParseError {}

/// What was wrong with a release file.
///
/// The messages are written to follow `path:line:col: ` and read as one sentence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The file could not be read.
    #[error("cannot read the file ({0})")]
    Io(io::Error),
    /// The text is not a sequence of terms, each ending with `.`: a bad token, an unclosed
    /// bracket, a missing `.`, a variable or expression where a literal term must be.
    #[error("{0}")]
    Syntax(String),
    /// A term does not have the shape this file or instruction requires.
    #[error("expected {expected}, found {found}{}", detail_suffix(.detail))]
    Shape {
        /// The required shape, in the notation of the SPEC (`{load, {Module, PrePurge,
        /// PostPurge}}`).
        expected: String,
        /// The term that was found, in term syntax (long terms are cut short).
        found: String,
        /// When only a part is wrong (`found` is that part): the form it is part of, as
        /// `in {purge, [Module]}`.
        detail: Option<String>,
    },
    /// A relup instruction that SPEC §5 does not define.
    #[error("unknown instruction {0}")]
    UnknownInstruction(String),
    /// A purge method other than `soft_purge` or `brutal_purge`.
    #[error("purge method must be soft_purge or brutal_purge, found {0}")]
    PurgeMethod(String),
    /// A suspend timeout other than a positive integer, `default` or `infinity`.
    #[error("timeout must be a positive integer (milliseconds), default or infinity, found {0}")]
    Timeout(String),
    /// A term of the right shape whose value is not acceptable: a duplicate key or entry, a
    /// missing required key, an unknown release status.
    #[error("{0}")]
    Invalid(String),
    /// A relup `load` of a module that no earlier `load_object_code` staged (or whose staged
    /// code an earlier `load` already used).
    #[error("load of module {module}, but {reason}")]
    LoadWithoutObjectCode {
        /// The module.
        module: String,
        /// Why no staged code is there for it.
        reason: String,
    },
    /// A relup `load_object_code` after `point_of_no_return`.
    #[error(
        "load_object_code after point_of_no_return (at {point}): object code must be loaded \
         before the point of no return, so that a failure can still roll back"
    )]
    ObjectCodeAfterPointOfNoReturn {
        /// Where the point of no return is.
        point: Pos,
    },
    /// A relup script with `load_object_code` but no `point_of_no_return`.
    #[error(
        "load_object_code without point_of_no_return: a script that loads object code must \
         mark the point after which it cannot roll back"
    )]
    MissingPointOfNoReturn,
    /// A second `point_of_no_return` in one script.
    #[error("a second point_of_no_return (the first is at {first}); there may be only one")]
    DuplicatePointOfNoReturn {
        /// Where the first one is.
        first: Pos,
    },
    /// `restart_new_emulator` anywhere but first (OTP: it restarts the node on the new host
    /// with the old release's applications, and the rest of the script runs after that).
    #[error(
        "restart_new_emulator must be the first instruction (the first is at {first}): the \
         node restarts on the new host before anything else of the script runs"
    )]
    RestartNewEmulatorNotFirst {
        /// Where the script's first instruction is.
        first: Pos,
    },
    /// A second `restart_new_emulator` in one script.
    #[error("a second restart_new_emulator (the first is at {first}); there may be only one")]
    DuplicateRestartNewEmulator {
        /// Where the first one is.
        first: Pos,
    },
    /// `restart_emulator` anywhere but last (OTP: the node restarts once the script ran).
    #[error(
        "restart_emulator must be the last instruction (the last is at {last}): the node \
         restarts into the new release once the rest of the script has run"
    )]
    RestartEmulatorNotLast {
        /// Where the script's last instruction is.
        last: Pos,
    },
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(detail) => format!(", {detail}"),
        None => String::new(),
    }
}
