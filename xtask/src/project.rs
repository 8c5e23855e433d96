//! Workspace layout: the project root, the target directory and the
//! per-profile output directories.
//!
//! The root is found when xtask runs, never baked in when it is built. Cargo
//! does not rebuild a binary because its checkout moved (the path is not part
//! of what it fingerprints), so a checkout copied together with its `target/`
//! runs the xtask binary built in the original: with a compile-time root
//! (`env!("CARGO_MANIFEST_DIR")`), `cargo xtask demo` in the copy would build,
//! assemble and run everything in the original checkout.

use std::env;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Finds the workspace root of the checkout xtask runs in (see [`find_root`])
/// and remembers it for [`root`]. `main` calls this before any subcommand.
pub fn init() -> Result<&'static Path> {
    if let Some(root) = ROOT.get() {
        return Ok(root);
    }
    let cwd = env::current_dir().context("cannot read the current directory")?;
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let found = find_root(manifest_dir.as_deref(), &cwd)?;
    Ok(ROOT.get_or_init(|| found))
}

/// The workspace root that [`init`] found.
///
/// # Panics
///
/// If [`init`] has not succeeded yet: `main` calls it before dispatching, so
/// this is a bug in xtask, not a property of its input.
pub fn root() -> &'static Path {
    ROOT.get().map(PathBuf::as_path).expect("project::init runs before any subcommand")
}

/// The root of the workspace xtask runs in:
///
/// 1. the parent of `manifest_dir`, the run-time `CARGO_MANIFEST_DIR` that
///    `cargo run` (and so the `cargo xtask` alias) sets to the xtask package
///    of the workspace it ran: the very checkout the user asked for;
/// 2. else (xtask run by hand) the nearest directory at or above `cwd` that
///    is this project's workspace root.
///
/// A directory is this project's workspace root if its `Cargo.toml` has a
/// `[workspace]` table and it holds `xtask/Cargo.toml`.
pub fn find_root(manifest_dir: Option<&Path>, cwd: &Path) -> Result<PathBuf> {
    if let Some(dir) = manifest_dir
        && dir.file_name().is_some_and(|name| name == "xtask")
        && let Some(parent) = dir.parent()
        && is_workspace_root(parent)
    {
        return Ok(parent.to_owned());
    }
    if let Some(found) = cwd.ancestors().find(|dir| is_workspace_root(dir)) {
        return Ok(found.to_owned());
    }
    bail!(
        "cannot find the hotcode workspace: no directory at or above {} has a Cargo.toml with \
         [workspace] and an xtask/ package; run `cargo xtask` from inside the checkout",
        cwd.display()
    )
}

/// Whether `dir` is this project's workspace root (see [`find_root`]).
fn is_workspace_root(dir: &Path) -> bool {
    let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
        return false;
    };
    manifest.lines().any(|line| line.trim() == "[workspace]")
        && dir.join("xtask").join("Cargo.toml").is_file()
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

/// Shows `path` relative to the workspace root when it lies inside it (as it
/// is, before [`init`] found the root).
pub fn display(path: &Path) -> String {
    let relative = ROOT.get().and_then(|root| path.strip_prefix(root).ok());
    relative.unwrap_or(path).display().to_string()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// A checkout at `<tmp>/<name>`: a workspace manifest, an xtask package and a
    /// member crate (whose own `Cargo.toml` has no `[workspace]`).
    fn checkout(tmp: &Path, name: &str) -> PathBuf {
        let root = tmp.join(name);
        fs::create_dir_all(root.join("xtask")).unwrap();
        fs::create_dir_all(root.join("plugins/greeter-1/greeter/src")).unwrap();
        fs::write(root.join("Cargo.toml"), "[workspace]\nmembers = [\"xtask\"]\n").unwrap();
        fs::write(root.join("xtask/Cargo.toml"), "[package]\nname = \"xtask\"\n").unwrap();
        fs::write(root.join("plugins/greeter-1/greeter/Cargo.toml"), "[package]\n").unwrap();
        root
    }

    #[test]
    fn cargo_run_names_the_checkout_it_ran() {
        let tmp = tempfile::tempdir().unwrap();
        let original = checkout(tmp.path(), "original");
        let copy = checkout(tmp.path(), "copy");
        // `cargo xtask` in the copy, whatever the current directory inside it.
        let found = find_root(Some(&copy.join("xtask")), &copy.join("plugins")).unwrap();
        assert_eq!(found, copy);
        // Nothing of the original leaks in, even from the original's directory.
        assert_eq!(find_root(Some(&copy.join("xtask")), &original).unwrap(), copy);
    }

    #[test]
    fn without_cargo_the_nearest_workspace_above_the_current_directory_is_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = checkout(tmp.path(), "copy");
        let member = copy.join("plugins/greeter-1/greeter/src");
        assert_eq!(find_root(None, &member).unwrap(), copy, "a member's Cargo.toml is skipped");
        assert_eq!(find_root(None, &copy).unwrap(), copy);
    }

    #[test]
    fn a_manifest_dir_that_is_not_this_projects_xtask_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = checkout(tmp.path(), "copy");
        let elsewhere = tmp.path().join("elsewhere/xtask");
        fs::create_dir_all(&elsewhere).unwrap();
        assert_eq!(find_root(Some(&elsewhere), &copy).unwrap(), copy);
        assert_eq!(find_root(Some(&copy.join("plugins")), &copy).unwrap(), copy);
    }

    #[test]
    fn outside_any_checkout_is_an_error_naming_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        // A workspace without an xtask package is some other project.
        fs::write(tmp.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        let err = find_root(None, tmp.path()).unwrap_err().to_string();
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
        assert!(err.contains("run `cargo xtask` from inside the checkout"), "{err}");
    }
}
