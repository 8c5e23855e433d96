//! Release files: reading OTP's relup, `.appup`, `.app`, `.rel` and RELEASES files, writing
//! RELEASES, and making a relup from appups.
//!
//! OTP describes releases and the way between them in plain term files, and hotcode keeps
//! those files as they are (SPEC §5, §6) so that what people know from OTP carries over.
//! This module only reads and writes them ([`make_relup()`] writes relups from appups the way
//! OTP's `systools` does, [`assemble`] makes release roots and packages from built
//! libraries, [`package`] writes and safely reads release packages); it loads nothing and
//! evaluates nothing.
//!
//! Parsing has two stages. [`terms`] turns text into raw terms that remember their line and
//! column; [`relup`] and [`files`] check those against each file's shape and return typed
//! values ([`Relup`] with its [`Instruction`]s, [`AppSpec`], [`RelSpec`],
//! [`ReleaseEntry`]). Every failure is a [`ParseError`] that names the file and, where it
//! has one, the position: `path:line:col: message`, as `hotcode check` prints it.
//!
//! **Invariant:** this layer knows nothing of libraries, the code server or processes: a
//! relup is read and checked the same whether or not its release is on disk or running.

pub mod appup;
pub mod assemble;
pub mod error;
pub mod files;
pub mod hashes;
pub mod make_relup;
pub mod names;
pub mod package;
pub mod relup;
mod shape;
pub mod terms;

pub use appup::{Appup, AppupEntry, AppupInstruction, AppupItem};
pub use error::{ParseError, ParseErrorKind};
pub use files::{
    AppSpec, RelApp, RelSpec, ReleaseApp, ReleaseEntry, ReleaseStatus, parse_releases,
    read_releases, render_releases, write_atomically, write_releases_atomically,
};
pub use make_relup::{MakeRelupError, MakeRelupErrorKind, make_relup, write_relup};
pub use relup::{
    Direction, Instruction, Relup, RelupEntry, SyncTargets, Timeout, check_script, parse_relup,
    read_relup, script_problems,
};
pub use terms::{Pos, RawTerm, Spanned, parse_terms, read_terms};

/// The host crate's directory, for tests that read the project's own files: cargo's value
/// when it runs the tests, the compiled-in one only for a test binary run by hand (cargo
/// does not rebuild a test binary whose checkout was copied, `target/` and all, so the
/// compiled-in path may name another checkout).
#[cfg(test)]
pub(crate) fn test_crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from)
}
