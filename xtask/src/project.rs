//! Workspace layout: the project root, the target directory and the
//! per-profile output directories.

use std::env;
use std::path::{Path, PathBuf};

/// The workspace root: the parent of this crate's manifest directory.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent (the workspace root)")
}

/// The cargo target directory, always absolute: `$CARGO_TARGET_DIR` if set
/// and non-empty (a relative value is taken relative to the current
/// directory, as cargo does), else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                env::current_dir().map(|cwd| cwd.join(&dir)).unwrap_or(dir)
            }
        }
        _ => root().join("target"),
    }
}

/// A cargo build profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The default `dev` profile; output in `target/debug`.
    Debug,
    /// The `release` profile (`--release`); output in `target/release`.
    Release,
}

impl Profile {
    /// The name of the profile's output directory (and how it is shown).
    pub fn dir_name(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }

    /// The absolute output directory of this profile, e.g. `<target>/debug`.
    pub fn out_dir(self) -> PathBuf {
        target_dir().join(self.dir_name())
    }
}

/// Shows `path` relative to the workspace root when it lies inside it.
pub fn display(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}
