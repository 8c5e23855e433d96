//! `cargo xtask watch PLUGIN`: rebuilds a plugin crate whenever one of its source files
//! changes, the "build" half of the developer loop (`hotcode watch` is the "reload" half).
//!
//! The crate's `src/` directory is watched recursively. Editors save a file in several
//! steps (a temporary file, a rename, a metadata change) and often save several files at
//! once, so a build starts only after the sources have been quiet for [`QUIET`]. Changes
//! made while a build runs are queued and bring one more build after it. A failing build
//! is reported and the watch goes on: the next save tries again, and the library in
//! `target/debug` keeps the last good build, which is what a watching node keeps serving.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::plugins::{self, Plugin};
use crate::project::{self, Profile};
use crate::{UsageError, cmd};

/// How long the sources must go without a change before a build starts.
const QUIET: Duration = Duration::from_millis(200);

/// Entry point of the `watch` subcommand.
pub fn run(args: &[String]) -> Result<ExitCode> {
    if crate::wants_help(args) {
        print!("{}", crate::USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    let [package] = args else {
        let msg = "`watch` takes one plugin package name (e.g. `cargo xtask watch greeter-v1`)";
        return Err(UsageError(msg.to_owned()).into());
    };
    let plugins = plugins::discover()?;
    let Some(plugin) = plugins.iter().find(|p| &p.package == package) else {
        let names: Vec<&str> = plugins.iter().map(|p| p.package.as_str()).collect();
        bail!("no plugin package `{package}`; the plugins are: {}", names.join(", "));
    };
    let src = plugin
        .manifest_path
        .parent()
        .map(|dir| dir.join("src"))
        .ok_or_else(|| anyhow!("{}: no parent directory", plugin.manifest_path.display()))?;

    // The watch is in place before the first build, so a save during it is not missed.
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver lives as long as this function: a failed send cannot happen.
        let _ = tx.send(event);
    })
    .context("cannot start watching files")?;
    watcher
        .watch(&src, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", src.display()))?;
    eprintln!(
        "xtask: watching {} for package {} (module {}); Ctrl-C to stop",
        project::display(&src),
        plugin.package,
        plugin.module
    );
    build(plugin);
    loop {
        let mut changed = Vec::new();
        // Wait for the first change, then for the sources to go quiet.
        let first = rx.recv().map_err(|_| anyhow!("the file watch stopped"))?;
        note(first, &mut changed);
        loop {
            match rx.recv_timeout(QUIET) {
                Ok(event) => note(event, &mut changed),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the file watch stopped"),
            }
        }
        if changed.is_empty() {
            continue;
        }
        changed.sort();
        changed.dedup();
        let shown: Vec<String> = changed.iter().take(3).map(|p| project::display(p)).collect();
        let more = changed.len().saturating_sub(shown.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        eprintln!("xtask: changed: {}{more}", shown.join(", "));
        build(plugin);
    }
}

/// Adds the source files an event names to `changed`, leaving out what only reads them
/// and what editors write beside them (swap, backup and hidden files).
fn note(event: notify::Result<notify::Event>, changed: &mut Vec<PathBuf>) {
    match event {
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) => changed.extend(event.paths.into_iter().filter(|p| is_source(p))),
        Err(e) => eprintln!("xtask: warning: file watch error: {e}"),
    }
}

/// Whether `path` may be a source file rather than an editor's scratch file.
fn is_source(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    let scratch = name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name == "4913";
    !scratch
}

/// Builds `plugin` (debug) and reports the outcome; a failure is reported, not returned,
/// so that the watch goes on.
fn build(plugin: &Plugin) {
    let start = Instant::now();
    let mut cargo = cmd::cargo();
    cargo.args(["build", "-p", &plugin.package]);
    match cmd::status(&mut cargo) {
        Ok(status) if status.success() => {
            let artifact = Profile::Debug.out_dir().join(plugin.artifact_file_name());
            eprintln!(
                "xtask: built {} in {:.1}s: {}",
                plugin.package,
                start.elapsed().as_secs_f64(),
                project::display(&artifact)
            );
        }
        Ok(status) => eprintln!(
            "xtask: build of {} failed ({status}); still watching, save to try again",
            plugin.package
        ),
        Err(e) => eprintln!("xtask: {e:#}; still watching"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_scratch_files_are_not_sources() {
        assert!(is_source(Path::new("src/lib.rs")));
        assert!(is_source(Path::new("src/nested/mod.rs")));
        for scratch in ["src/.lib.rs.swp", "src/lib.rs~", "src/4913", "src/.#lib.rs"] {
            assert!(!is_source(Path::new(scratch)), "{scratch}");
        }
    }
}
