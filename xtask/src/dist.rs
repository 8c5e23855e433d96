//! `cargo xtask dist`: release-builds the plugins, assembles the shared
//! library pool `target/dist/lib/<app>-<vsn>/` (each application version's
//! `.app` and `<module>.so` files, from every non-fixture plugin), and then the
//! example release roots `target/dist/<root>/` listed in `relups/examples.txt`
//! (see [`examples`](crate::examples)), each ready for `hotcode boot` (SPEC §7).
//!
//! `target/dist/lib` and each root are removed and recreated on every run so
//! stale files never linger; files are copied, not symlinked, so that each
//! root is self-contained.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::build::{self, count};
use crate::cmd;
use crate::examples;
use crate::plugins::{self, Plugin};
use crate::project::{self, Profile};

/// Entry point of the `dist` subcommand.
pub fn run(args: &[String]) -> Result<ExitCode> {
    if crate::wants_help(args) {
        print!("{}", crate::USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    crate::no_args("dist", args)?;
    dist()?;
    Ok(ExitCode::SUCCESS)
}

/// Builds the plugins in release mode and assembles the library pool and the
/// example release roots. Returns the absolute path of the dist directory
/// (`<target>/dist`).
pub fn dist() -> Result<PathBuf> {
    let metadata = plugins::metadata()?;
    let plugins = plugins::discover_in(&metadata)?;
    let hotcode_vsn = plugins::package_version(&metadata, "hotcode")?;
    let manifest = project::root().join(examples::MANIFEST);
    // Check for clashes and slips in the release data before spending time on a
    // release build.
    check_conflicts(&plugins)?;
    examples::check(&manifest)?;
    let artifacts = build::build_plugins(&plugins, Profile::Release)?;
    let hosts = build_hosts(&examples::host_versions(&manifest, &hotcode_vsn)?, &hotcode_vsn)?;

    let dist_dir = project::target_dir().join("dist");
    let lib_dir = dist_dir.join("lib");
    if lib_dir.exists() {
        fs::remove_dir_all(&lib_dir)
            .with_context(|| format!("failed to remove {}", lib_dir.display()))?;
    }
    fs::create_dir_all(&lib_dir)
        .with_context(|| format!("failed to create {}", lib_dir.display()))?;

    let mut apps = BTreeSet::new();
    let mut placed = 0;
    let mut fixtures = 0;
    for artifact in &artifacts {
        let plugin = &artifact.plugin;
        if plugin.fixture {
            fixtures += 1;
            continue;
        }
        let app_dir = lib_dir.join(plugin.app_dir_name());
        fs::create_dir_all(&app_dir)
            .with_context(|| format!("failed to create {}", app_dir.display()))?;
        let dest = app_dir.join(plugin.shipped_file_name());
        copy(&artifact.path, &dest)?;
        eprintln!("xtask: placed {} (from {})", project::display(&dest), plugin.package);
        if apps.insert(plugin.app_dir_name()) {
            place_app_file(plugin, &app_dir)?;
        }
        placed += 1;
    }
    let skipped = match fixtures {
        0 => String::new(),
        n => format!("; {} skipped", count(n, "fixture")),
    };
    eprintln!(
        "xtask: dist: {} in {} placed in {}{skipped}",
        count(placed, "module"),
        count(apps.len(), "application version"),
        lib_dir.display(),
    );

    // Every module library of a root is inspected as a plugin, as `hotcode release` does.
    let plugin = |path: &Path| {
        hotcode::code::elf::inspect_plugin(path).map(drop).map_err(|kind| kind.to_string())
    };
    let roots = examples::assemble(&manifest, &dist_dir, &hotcode_vsn, &hosts, &plugin)?;
    eprintln!(
        "xtask: dist: {} assembled in {} (from {})",
        count(roots.len(), "example root"),
        dist_dir.display(),
        examples::MANIFEST,
    );
    Ok(dist_dir)
}

/// Release-builds the `hotcode` binary of each host version in `versions`, for the roots
/// that keep host binaries: the package's own version in `target/release/`, any other from
/// the same source with `HOTCODE_HOST_VSN` set, in a target directory of its own
/// (`target/hosts/<vsn>/`, so that the main build is not rebuilt back and forth). Returns
/// each binary by version.
fn build_hosts(
    versions: &BTreeSet<String>,
    hotcode_vsn: &str,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut built = BTreeMap::new();
    for vsn in versions {
        let mut cargo = cmd::cargo();
        cargo.args(["build", "--release", "--quiet", "-p", "hotcode", "--bin", "hotcode"]);
        let dir = if vsn == hotcode_vsn {
            Profile::Release.out_dir()
        } else {
            check_word(vsn)?;
            let target = project::target_dir().join("hosts").join(vsn);
            cargo.arg("--target-dir").arg(&target).env("HOTCODE_HOST_VSN", vsn);
            target.join("release")
        };
        cmd::run(&mut cargo)?;
        let binary = dir.join("hotcode");
        eprintln!("xtask: host {vsn}: {}", project::display(&binary));
        built.insert(vsn.clone(), binary);
    }
    Ok(built)
}

/// Fails unless the host version can name a directory.
fn check_word(vsn: &str) -> Result<()> {
    hotcode::release::names::check_name(hotcode::release::names::NameKind::Vsn, vsn)
        .map_err(|why| anyhow::anyhow!("host version {vsn:?}: {why}"))
}

/// Places the application's `.app` file, which lives beside the application's module
/// crates (`plugins/<app>-<vsn>/<app>.app`), in the application's library directory, and its
/// `.appup` beside it when the application version has one (as OTP keeps both in `ebin`), so
/// that `hotcode make-relup` finds it in the release roots.
fn place_app_file(plugin: &Plugin, app_dir: &Path) -> Result<()> {
    let name = format!("{}.app", plugin.app);
    let crate_dir = plugin.manifest_path.parent().unwrap_or(Path::new("."));
    let source = crate_dir.parent().unwrap_or(crate_dir).join(&name);
    if !source.exists() {
        anyhow::bail!(
            "application {} {} has no {} beside its module crates (expected {})",
            plugin.app,
            plugin.vsn,
            name,
            source.display()
        );
    }
    let dest = app_dir.join(&name);
    copy(&source, &dest)?;
    eprintln!("xtask: placed {}", project::display(&dest));
    // The appup is optional: a first version, or one that is never upgraded to, has none.
    let appup = source.with_extension("appup");
    if appup.exists() {
        let dest = dest.with_extension("appup");
        copy(&appup, &dest)?;
        eprintln!("xtask: placed {}", project::display(&dest));
    }
    Ok(())
}

/// Copies a built library into the pool (a real copy, never a symlink).
fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("failed to copy {} to {}", from.display(), to.display()))
}

/// Fails if two non-fixture plugins would be placed at the same
/// `<app>-<vsn>/<module>.so`, naming both packages.
fn check_conflicts(plugins: &[Plugin]) -> Result<()> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for plugin in plugins.iter().filter(|p| !p.fixture) {
        let slot = format!("{}/{}", plugin.app_dir_name(), plugin.shipped_file_name());
        if let Some(first) = seen.insert(slot.clone(), &plugin.package) {
            bail!(
                "packages `{first}` and `{}` both claim lib/{slot} \
                 (same app, vsn and module in [package.metadata.hotcode])",
                plugin.package
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(package: &str, app: &str, vsn: &str, module: &str, fixture: bool) -> Plugin {
        Plugin {
            package: package.into(),
            lib_name: package.replace('-', "_"),
            module: module.into(),
            app: app.into(),
            vsn: vsn.into(),
            fixture,
            profile: None,
            manifest_path: PathBuf::new(),
        }
    }

    #[test]
    fn distinct_slots_are_fine() {
        let plugins = [
            plugin("greeter-v1", "greeter", "1", "greeter", false),
            plugin("greeter-v2", "greeter", "2", "greeter", false),
            plugin("counter", "greeter", "2", "counter", false),
            // Fixtures never reach the pool, so they cannot clash.
            plugin("bad-greeter", "greeter", "1", "greeter", true),
        ];
        check_conflicts(&plugins).unwrap();
    }

    #[test]
    fn clash_names_both_packages() {
        let plugins = [
            plugin("greeter-v1", "greeter", "1", "greeter", false),
            plugin("greeter-copy", "greeter", "1", "greeter", false),
        ];
        let msg = check_conflicts(&plugins).unwrap_err().to_string();
        assert!(msg.contains("`greeter-v1`"), "{msg}");
        assert!(msg.contains("`greeter-copy`"), "{msg}");
        assert!(msg.contains("greeter-1/greeter"), "{msg}");
    }
}
