//! Names and versions are words, never paths.
//!
//! Every name a release file gives (application, module, release) and every version (a
//! release's Vsn, an application's AppVsn) ends up in a path: `lib/<app>-<vsn>/<module>.so`,
//! `releases/<vsn>/relup`. A name that holds a `/` or is `..` would walk that path out of the
//! release root, so each one is checked once, where it enters (reading `.rel`, RELEASES,
//! `.app`, relups, appups, integrity records, `ctl` arguments, the entries of a release
//! package), against the grammar below,
//! and the paths are then built only by [`root_path`], which checks every part again.
//!
//! The grammar:
//!
//! - **atoms** (applications and modules): any atom OTP takes, quoted ones like `'C mod'`
//!   included, of at most 255 characters (OTP's atom limit), that is also a word as below.
//!   A module's file is `<module>.so`, so this keeps file names plain.
//! - **words** (release names, Vsn, AppVsn, each component of a path in a release
//!   package): 1 to 255 bytes of UTF-8 with no `/`, no NUL or
//!   other control character, and no leading `.` (so neither `.` nor `..`, nor a hidden
//!   name). Versions like `2-β` or `1.0+build.7` are words.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The longest name or version, in bytes (OTP's atom limit is 255 characters).
pub const MAX_NAME_LEN: usize = 255;

/// What a checked name stands for, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// An application name (an atom).
    App,
    /// A module name (an atom).
    Module,
    /// A release name (a word).
    Release,
    /// A release version or an application version (a word).
    Vsn,
    /// One component of a path inside a release package (a word).
    File,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::App => "application name",
            NameKind::Module => "module name",
            NameKind::Release => "release name",
            NameKind::Vsn => "version",
            NameKind::File => "file name",
        })
    }
}

/// Checks `name` against the grammar for `kind`; the error says what is wrong with it.
pub fn check_name(kind: NameKind, name: &str) -> Result<(), String> {
    let why = match kind {
        NameKind::App | NameKind::Module => atom_problem(name),
        NameKind::Release | NameKind::Vsn | NameKind::File => word_problem(name),
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!("{kind} {name:?} {why}")),
    }
}

fn atom_problem(name: &str) -> Option<&'static str> {
    if name.chars().count() > MAX_NAME_LEN {
        return Some("is longer than 255 characters (OTP's atom limit)");
    }
    word_problem_of(name, usize::MAX)
}

fn word_problem(name: &str) -> Option<&'static str> {
    word_problem_of(name, MAX_NAME_LEN)
}

fn word_problem_of(name: &str, max_bytes: usize) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > max_bytes {
        Some("is longer than 255 bytes")
    } else if name.contains('/') {
        Some("holds a '/': names and versions are words, not paths")
    } else if name.starts_with('.') {
        Some("starts with '.': names and versions are words, not paths")
    } else if name.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
    }
}

/// The library directory name of application `app` at version `vsn`: `<app>-<vsn>`.
pub fn lib_dir_name(app: &str, vsn: &str) -> String {
    format!("{app}-{vsn}")
}

/// The name of the directory that holds host version `host_vsn`'s binaries under a root,
/// `host-<HostVsn>` (OTP's `erts-<Vsn>`).
pub fn host_dir_name(host_vsn: &str) -> String {
    format!("host-{host_vsn}")
}

/// The file name of the host binary in `host-<HostVsn>/bin/`.
pub const HOST_BINARY: &str = "hotcode";

/// `ROOT/host-<HostVsn>/bin/hotcode`: the host binary a release that names `{hotcode,
/// HostVsn}` runs on, as a release root keeps it (OTP's `erts-<Vsn>/bin/`).
pub fn host_binary_path(root: &Path, host_vsn: &str) -> Result<PathBuf, String> {
    root_path(root, &[&host_dir_name(host_vsn), "bin", HOST_BINARY])
}

/// `root` joined with `parts`, each of which must be one plain path component (no `/`, not
/// `.` or `..`, not empty, no NUL): the result is always inside `root`. This is the only
/// way paths are built from names read out of files.
pub fn root_path(root: &Path, parts: &[&str]) -> Result<PathBuf, String> {
    let mut path = root.to_path_buf();
    for part in parts {
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(c)), None)
                if c == std::ffi::OsStr::new(part) && !part.contains('\0') =>
            {
                path.push(part);
            }
            _ => {
                return Err(format!(
                    "{part:?} is not a plain file name: a path built from it would leave {}",
                    root.display()
                ));
            }
        }
    }
    Ok(path)
}

/// Checks that `relative` (a path read from a file, like `lib/app-1/m.so` in an integrity
/// record) is relative and made only of plain components, so that it stays inside the root
/// it is joined to.
pub fn check_relative(relative: &str) -> Result<(), String> {
    let path = Path::new(relative);
    let plain = !relative.is_empty()
        && !relative.contains('\0')
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!("{relative:?} is not a plain relative path inside the root"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_are_atoms_that_are_also_words() {
        for good in ["ch3", "prim_app", "a@b", "C mod", "é", &"m".repeat(255), &"é".repeat(255)] {
            assert_eq!(check_name(NameKind::Module, good), Ok(()), "{good}");
        }
        for bad in ["", "a/b", "..", ".m", "a\0b", "a\nb", &"m".repeat(256)] {
            let error = check_name(NameKind::App, bad).expect_err(bad);
            assert!(error.starts_with("application name"), "{error}");
        }
    }

    #[test]
    fn words_are_not_paths() {
        for good in ["1", "2.0", "2-β", "1.0+build.7", "A", "evil..name"] {
            assert_eq!(check_name(NameKind::Vsn, good), Ok(()), "{good}");
        }
        for bad in
            ["", ".", "..", "../lib/prim_app-1", "/abs", "1/../../x", ".hidden", "a\0b", "a\nb"]
        {
            assert!(check_name(NameKind::Vsn, bad).is_err(), "{bad:?}");
        }
        assert!(check_name(NameKind::Release, &"v".repeat(256)).is_err());
    }

    #[test]
    fn root_paths_stay_under_the_root() {
        let root = Path::new("/srv/root");
        assert_eq!(
            root_path(root, &["lib", "a-1", "m.so"]),
            Ok(PathBuf::from("/srv/root/lib/a-1/m.so"))
        );
        for bad in [&["lib", ".."][..], &["/etc"], &["a/b"], &["."], &[""], &["lib", "x\0"]] {
            assert!(root_path(root, bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_relative("lib/a-1/m.so"), Ok(()));
        for bad in ["", "/lib/a", "lib/../x", "./lib", "lib//../x"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }
}
