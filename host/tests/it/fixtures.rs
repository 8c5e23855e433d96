//! Real plugin `.so` files for the tests, built once per test run.
//!
//! `cargo xtask test` builds every plugin first and points `HOTCODE_PLUGIN_DIR` at them.
//! Without it (plain `cargo test`), the first test that needs a plugin builds them all with
//! one `cargo build` into `target/fixtures`: a separate target directory, because the
//! `cargo test` that runs us still holds the lock on the normal one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every plugin package the tests load.
const PLUGINS: &[&str] = &[
    "greeter-v1",
    "greeter-v2",
    "ch_app-v1",
    "ch_sup-v1",
    "ch3-v1",
    "prim_app-v1",
    "prim_sup-v1",
    "prim_app-v2",
    "prim_sup-v2",
    "fixture-no-symbol",
    "fixture-layout-mismatch",
    "fixture-tls-pin",
    "fixture-ch3-v2",
    "fixture-stubborn",
    "fixture-flaky-sup",
];

fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("HOTCODE_PLUGIN_DIR") {
            return PathBuf::from(dir);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let target = root.join("target").join("fixtures");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("fixtures: building {} plugins into {}", PLUGINS.len(), target.display());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root).arg("build").arg("--target-dir").arg(&target);
        for p in PLUGINS {
            cmd.args(["-p", p]);
        }
        let status = cmd.status().expect("run cargo build for the plugin fixtures");
        assert!(status.success(), "building the plugin fixtures failed: {status}");
        target.join("debug")
    })
}

/// The built `.so` of plugin package `package`.
pub fn plugin(package: &str) -> PathBuf {
    assert!(PLUGINS.contains(&package), "{package} is not a known fixture");
    let path = plugin_dir().join(format!("lib{}.so", package.replace('-', "_")));
    assert!(path.exists(), "missing plugin {}; run `cargo xtask build`", path.display());
    path
}

/// greeter version 1.
pub fn greeter_v1() -> PathBuf {
    plugin("greeter-v1")
}

/// greeter version 2.
pub fn greeter_v2() -> PathBuf {
    plugin("greeter-v2")
}

/// The workspace root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root")
}

/// The `.app` file of application version `app_vsn` (e.g. `prim_app-1`), from the source tree.
pub fn app_file(app_vsn: &str) -> PathBuf {
    let app = app_vsn.rsplit_once('-').map_or(app_vsn, |(a, _)| a);
    root().join("plugins").join(app_vsn).join(format!("{app}.app"))
}

/// The built library of `module` in application version `app_vsn` (package `<module>-v<vsn>`).
pub fn module_lib(app_vsn: &str, module: &str) -> PathBuf {
    let vsn = app_vsn.rsplit_once('-').map_or("", |(_, v)| v);
    plugin(&format!("{module}-v{vsn}"))
}
