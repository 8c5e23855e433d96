//! Plugin discovery from `cargo metadata`.
//!
//! A plugin is a workspace package whose manifest has
//!
//! ```toml
//! [package.metadata.hotcode]
//! module = "greeter"   # module name; shipped as <module>.so
//! app = "greeter"      # the application it belongs to
//! vsn = "1"            # the application version
//! # fixture = true     # deliberately bad test plugin: built, never released
//! # profile = "plugin-abort"  # built with this Cargo profile instead (fixtures only)
//!
//! [lib]
//! crate-type = ["cdylib"]
//! ```
//!
//! Packages without `metadata.hotcode` are not plugins.

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};

use crate::{cmd, project};

/// The keys understood in `[package.metadata.hotcode]`.
const KNOWN_KEYS: [&str; 5] = ["module", "app", "vsn", "fixture", "profile"];

/// One plugin crate, as declared in its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plugin {
    /// The cargo package name, e.g. `greeter-v1`.
    pub package: String,
    /// The name of the package's cdylib target, e.g. `greeter_v1`.
    pub lib_name: String,
    /// The module name; the shipped file is `<module>.so`.
    pub module: String,
    /// The application the module belongs to.
    pub app: String,
    /// The application version.
    pub vsn: String,
    /// True for deliberately bad test plugins, which never go into a release.
    pub fixture: bool,
    /// A Cargo profile this plugin is always built with (its output lands in
    /// `<target>/<profile>/`), for a fixture that needs settings Cargo only takes per
    /// profile, such as `panic = "abort"`. `None`: the profile of the build.
    pub profile: Option<String>,
    /// The package's `Cargo.toml`.
    pub manifest_path: PathBuf,
}

impl Plugin {
    /// The file cargo produces for the cdylib, e.g. `libgreeter_v1.so`.
    pub fn artifact_file_name(&self) -> String {
        format!("{DLL_PREFIX}{}{DLL_SUFFIX}", self.lib_name.replace('-', "_"))
    }

    /// The shipped file name, `<module>.so`.
    pub fn shipped_file_name(&self) -> String {
        format!("{}{DLL_SUFFIX}", self.module)
    }

    /// The application directory in the library pool, `<app>-<vsn>`.
    pub fn app_dir_name(&self) -> String {
        format!("{}-{}", self.app, self.vsn)
    }
}

/// The outcome of scanning the workspace metadata.
#[derive(Debug, Default)]
pub struct Discovery {
    /// The plugins found, sorted by package name.
    pub plugins: Vec<Plugin>,
    /// Things that look like mistakes but do not stop the build.
    pub warnings: Vec<String>,
}

/// Runs `cargo metadata --format-version 1 --no-deps` for the workspace and
/// returns its plugins, printing any warnings.
pub fn discover() -> Result<Vec<Plugin>> {
    discover_in(&metadata()?)
}

/// Runs `cargo metadata --format-version 1 --no-deps` for the workspace and returns its
/// output.
pub fn metadata() -> Result<Value> {
    let mut cargo = cmd::cargo();
    cargo
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(project::root().join("Cargo.toml"));
    let stdout = cmd::output(&mut cargo)?;
    serde_json::from_slice(&stdout).context("`cargo metadata` printed invalid JSON")
}

/// Returns the plugins of the workspace described by `metadata` (`cargo metadata`
/// output), printing any warnings.
pub fn discover_in(metadata: &Value) -> Result<Vec<Plugin>> {
    let discovery = parse(metadata, &project::root().join("plugins"))?;
    for warning in &discovery.warnings {
        eprintln!("xtask: warning: {warning}");
    }
    Ok(discovery.plugins)
}

/// The version of workspace package `package`, from `cargo metadata` output.
pub fn package_version(metadata: &Value, package: &str) -> Result<String> {
    metadata
        .get("packages")
        .and_then(Value::as_array)
        .and_then(|packages| packages.iter().find(|p| str_field(p, "name") == Some(package)))
        .and_then(|p| str_field(p, "version"))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("`cargo metadata` lists no package `{package}` with a version"))
}

/// Extracts the plugins from `cargo metadata` output. `plugins_dir` is where
/// plugin crates are expected to live: a cdylib there without
/// `metadata.hotcode` earns a warning.
pub fn parse(metadata: &Value, plugins_dir: &Path) -> Result<Discovery> {
    let packages = metadata
        .get("packages")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("`cargo metadata` output has no `packages` array"))?;
    let mut discovery = Discovery::default();
    for package in packages {
        let name = str_field(package, "name")
            .ok_or_else(|| anyhow!("`cargo metadata` lists a package without a name"))?;
        let manifest_path = PathBuf::from(str_field(package, "manifest_path").unwrap_or_default());
        let cdylib = cdylib_target(package);
        match package.get("metadata").and_then(|m| m.get("hotcode")) {
            None | Some(Value::Null) => {
                if cdylib.is_some() && manifest_path.starts_with(plugins_dir) {
                    discovery.warnings.push(format!(
                        "package `{name}` has a cdylib target under plugins/ but no \
                         [package.metadata.hotcode]; it is not treated as a plugin"
                    ));
                }
            }
            Some(hotcode) => {
                let plugin =
                    parse_plugin(name, hotcode, cdylib, manifest_path, &mut discovery.warnings)
                        .with_context(|| {
                            format!("package `{name}`: invalid [package.metadata.hotcode]")
                        })?;
                discovery.plugins.push(plugin);
            }
        }
    }
    discovery.plugins.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(discovery)
}

/// Builds a [`Plugin`] from one package's `metadata.hotcode` table.
fn parse_plugin(
    package: &str,
    hotcode: &Value,
    cdylib: Option<&str>,
    manifest_path: PathBuf,
    warnings: &mut Vec<String>,
) -> Result<Plugin> {
    let table =
        hotcode.as_object().ok_or_else(|| anyhow!("expected a table, found `{hotcode}`"))?;
    for key in table.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            warnings.push(format!(
                "package `{package}`: unknown key `{key}` in [package.metadata.hotcode] \
                 (known: {})",
                KNOWN_KEYS.join(", ")
            ));
        }
    }
    let fixture = match table.get("fixture") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => bail!("`fixture` must be a boolean, found `{other}`"),
    };
    let profile = match table.get("profile") {
        None => None,
        Some(_) if !fixture => bail!("`profile` is only for fixtures (fixture = true)"),
        Some(_) => Some(name_field(table, "profile")?),
    };
    let lib_name = cdylib.ok_or_else(|| {
        anyhow!("the package has no cdylib target (add `[lib] crate-type = [\"cdylib\"]`)")
    })?;
    Ok(Plugin {
        package: package.to_owned(),
        lib_name: lib_name.to_owned(),
        module: name_field(table, "module")?,
        app: name_field(table, "app")?,
        vsn: name_field(table, "vsn")?,
        fixture,
        profile,
        manifest_path,
    })
}

/// Reads a required string key that becomes part of a file name, so it must
/// be non-empty and free of path separators.
fn name_field(table: &Map<String, Value>, key: &str) -> Result<String> {
    let value = match table.get(key) {
        None => bail!("missing `{key}` (e.g. {key} = \"1\")"),
        Some(Value::String(s)) => s,
        Some(other) => {
            bail!("`{key}` must be a string, found `{other}` (write {key} = \"{other}\")")
        }
    };
    let bad = value.is_empty()
        || value == "."
        || value == ".."
        || value.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        bail!("`{key}` = {value:?} cannot be used in a file name");
    }
    Ok(value.clone())
}

/// The name of the package's target whose `kind` contains `cdylib`.
fn cdylib_target(package: &Value) -> Option<&str> {
    package
        .get("targets")?
        .as_array()?
        .iter()
        .find(|target| {
            target
                .get("kind")
                .and_then(Value::as_array)
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
        })
        .and_then(|target| str_field(target, "name"))
}

/// A string field of a JSON object, if present.
fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(name: &str, kinds: &[&str], hotcode: Option<Value>) -> Value {
        json!({
            "name": name,
            "manifest_path": format!("/ws/plugins/{name}/Cargo.toml"),
            "targets": [{ "name": name.replace('-', "_"), "kind": kinds }],
            "metadata": hotcode.map(|h| json!({ "hotcode": h })),
        })
    }

    fn parse_packages(packages: Vec<Value>) -> Result<Discovery> {
        parse(&json!({ "packages": packages }), Path::new("/ws/plugins"))
    }

    #[test]
    fn finds_plugins_and_skips_others() {
        let discovery = parse_packages(vec![
            package("xtask", &["bin"], None),
            package(
                "greeter-v2",
                &["cdylib"],
                Some(json!({ "module": "greeter", "app": "greeter", "vsn": "2" })),
            ),
            package(
                "bad-init",
                &["cdylib", "rlib"],
                Some(json!({ "module": "bad", "app": "bad", "vsn": "1", "fixture": true })),
            ),
        ])
        .unwrap();
        assert!(discovery.warnings.is_empty());
        let names: Vec<_> = discovery.plugins.iter().map(|p| p.package.as_str()).collect();
        assert_eq!(names, ["bad-init", "greeter-v2"]);
        let greeter = &discovery.plugins[1];
        assert_eq!(greeter.lib_name, "greeter_v2");
        assert!(!greeter.fixture);
        assert!(discovery.plugins[0].fixture);
        assert_eq!(greeter.app_dir_name(), "greeter-2");
        assert_eq!(greeter.shipped_file_name(), format!("greeter{DLL_SUFFIX}"));
        assert_eq!(greeter.artifact_file_name(), format!("{DLL_PREFIX}greeter_v2{DLL_SUFFIX}"));
    }

    #[test]
    fn rejects_bad_metadata() {
        let cases = [
            (json!({ "app": "a", "vsn": "1" }), "missing `module`"),
            (json!({ "module": "m", "app": "a", "vsn": 1 }), "must be a string"),
            (json!({ "module": "../m", "app": "a", "vsn": "1" }), "file name"),
            (json!({ "module": "m", "app": "a", "vsn": "1", "fixture": "yes" }), "boolean"),
            (json!("greeter"), "expected a table"),
        ];
        for (hotcode, expected) in cases {
            let err = parse_packages(vec![package("p", &["cdylib"], Some(hotcode))]).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("package `p`"), "{msg}");
            assert!(msg.contains(expected), "{msg} should mention {expected}");
        }
    }

    #[test]
    fn package_version_is_read_from_metadata() {
        let metadata = json!({ "packages": [
            { "name": "xtask", "version": "0.0.1" },
            { "name": "hotcode", "version": "0.1.0" },
        ] });
        assert_eq!(package_version(&metadata, "hotcode").unwrap(), "0.1.0");
        let err = package_version(&metadata, "nope").unwrap_err().to_string();
        assert!(err.contains("no package `nope`"), "{err}");
    }

    #[test]
    fn requires_a_cdylib() {
        let hotcode = json!({ "module": "m", "app": "a", "vsn": "1" });
        let err = parse_packages(vec![package("p", &["lib"], Some(hotcode))]).unwrap_err();
        assert!(format!("{err:#}").contains("no cdylib target"));
    }

    #[test]
    fn warns_about_unmarked_cdylibs_and_unknown_keys() {
        let hotcode = json!({ "module": "m", "app": "a", "vsn": "1", "fixtures": true });
        let discovery = parse_packages(vec![
            package("forgot", &["cdylib"], None),
            package("typo", &["cdylib"], Some(hotcode)),
        ])
        .unwrap();
        assert_eq!(discovery.plugins.len(), 1);
        assert_eq!(discovery.warnings.len(), 2, "{:?}", discovery.warnings);
        assert!(discovery.warnings[0].contains("`forgot`"));
        assert!(discovery.warnings[1].contains("`fixtures`"));
    }
}
