//! `cargo xtask build [--release]`: builds every plugin crate (fixtures
//! included) with a single `cargo build -p <pkg> -p <pkg> ...` invocation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::plugins::{self, Plugin};
use crate::project::{self, Profile};
use crate::{UsageError, cmd};

/// A built plugin: its declaration and the library cargo produced.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The plugin's package and `[package.metadata.hotcode]` data.
    pub plugin: Plugin,
    /// The absolute path of the built library, e.g.
    /// `<target>/debug/libgreeter_v1.so`.
    pub path: PathBuf,
}

/// Entry point of the `build` subcommand.
pub fn run(args: &[String]) -> Result<ExitCode> {
    if crate::wants_help(args) {
        print!("{}", crate::USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    let profile = match args {
        [] => Profile::Debug,
        [flag] if flag == "--release" => Profile::Release,
        _ => {
            let msg = format!("`build` accepts only `--release` (got `{}`)", args.join(" "));
            return Err(UsageError(msg).into());
        }
    };
    build(profile)?;
    Ok(ExitCode::SUCCESS)
}

/// Discovers the plugins and builds them all in `profile`.
pub fn build(profile: Profile) -> Result<Vec<Artifact>> {
    let plugins = plugins::discover()?;
    build_plugins(&plugins, profile)
}

/// Builds `plugins` in `profile` with one `cargo build` and returns their
/// artifacts (in the same order), checking each library exists. With no
/// plugins this prints so and returns an empty list.
pub fn build_plugins(plugins: &[Plugin], profile: Profile) -> Result<Vec<Artifact>> {
    let label = profile.dir_name();
    if plugins.is_empty() {
        eprintln!(
            "xtask: no plugins found (no workspace package has [package.metadata.hotcode]); \
             nothing to build"
        );
        return Ok(Vec::new());
    }
    let names: Vec<&str> = plugins.iter().map(|p| p.package.as_str()).collect();
    eprintln!("xtask: building {} ({label}): {}", count(plugins.len(), "plugin"), names.join(", "));

    let start = Instant::now();
    // One `cargo build` for the build's profile, and one per profile a fixture asks for.
    let mut profiles: Vec<Option<&str>> = vec![None];
    for p in plugins.iter().filter_map(|p| p.profile.as_deref()) {
        if !profiles.contains(&Some(p)) {
            profiles.push(Some(p));
        }
    }
    for own in profiles {
        let members: Vec<&str> = plugins
            .iter()
            .filter(|p| p.profile.as_deref() == own)
            .map(|p| p.package.as_str())
            .collect();
        if members.is_empty() {
            continue;
        }
        let mut cargo = cmd::cargo();
        cargo.arg("build");
        match own {
            Some(name) => {
                cargo.args(["--profile", name]);
            }
            None if profile == Profile::Release => {
                cargo.arg("--release");
            }
            None => {}
        }
        for name in &members {
            cargo.args(["-p", name]);
        }
        cmd::run(&mut cargo)?;
    }

    let mut artifacts = Vec::with_capacity(plugins.len());
    for plugin in plugins {
        let out_dir = match &plugin.profile {
            Some(own) => project::target_dir().join(own),
            None => profile.out_dir(),
        };
        let path = out_dir.join(plugin.artifact_file_name());
        if !path.is_file() {
            bail!(
                "`cargo build` succeeded but {} is missing (package `{}`)",
                path.display(),
                plugin.package
            );
        }
        let fixture = if plugin.fixture { ", fixture" } else { "" };
        eprintln!(
            "xtask:   {} -> {} (module {}, app {}-{}{fixture})",
            plugin.package,
            project::display(&path),
            plugin.module,
            plugin.app,
            plugin.vsn,
        );
        artifacts.push(Artifact { plugin: plugin.clone(), path });
    }
    eprintln!(
        "xtask: built {} in {:.1}s",
        count(artifacts.len(), "plugin"),
        start.elapsed().as_secs_f64()
    );
    Ok(artifacts)
}

/// `count(2, "plugin")` is "2 plugins"; `count(1, "plugin")` is "1 plugin".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("{n} {noun}") } else { format!("{n} {noun}s") }
}
