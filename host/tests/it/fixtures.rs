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
    "svc_app-v1",
    "svc_sup-v1",
    "svc_handler-v1",
    "svc_app-v2",
    "svc_sup-v2",
    "svc_handler-v2",
    "web_routes-v1",
    "web_routes-v2",
    "fixture-no-symbol",
    "fixture-layout-mismatch",
    "fixture-tls-pin",
    "fixture-ch3-v2",
    "fixture-stubborn",
    "fixture-flaky-sup",
    "fixture-abi-mismatch",
    "fixture-chatty",
    "fixture-napper",
    "fixture-many-app",
    "fixture-many-sup",
    "fixture-many-srv-v1",
    "fixture-many-srv-v2",
];

/// Plugins built with a Cargo profile of their own (`profile` in their
/// `[package.metadata.hotcode]`): `(package, profile)`. Their libraries are in
/// `<target>/<profile>/`, beside the directory of the others.
const OWN_PROFILE: &[(&str, &str)] = &[("fixture-panic-abort", "plugin-abort")];

fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("HOTCODE_PLUGIN_DIR") {
            return PathBuf::from(dir);
        }
        let root = root();
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
        for (package, profile) in OWN_PROFILE {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(root)
                .args(["build", "--profile", profile, "-p", package, "--target-dir"])
                .arg(&target)
                .status()
                .expect("run cargo build for a fixture with its own profile");
            assert!(status.success(), "building {package} failed: {status}");
        }
        target.join("debug")
    })
}

/// The built `.so` of plugin package `package`.
pub fn plugin(package: &str) -> PathBuf {
    let file = format!("lib{}.so", package.replace('-', "_"));
    let path = match OWN_PROFILE.iter().find(|(p, _)| *p == package) {
        Some((_, profile)) => {
            plugin_dir().parent().expect("a target directory").join(profile).join(file)
        }
        None => {
            assert!(PLUGINS.contains(&package), "{package} is not a known fixture");
            plugin_dir().join(file)
        }
    };
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

/// The `napper` fixture: an async interface ([`plugin_api::interfaces::Napper`]).
pub fn napper() -> PathBuf {
    plugin("fixture-napper")
}

/// The host crate's directory in the checkout under test, as cargo says when it runs the
/// tests (`CARGO_MANIFEST_DIR` is set for the test process as for the compiler). The value
/// compiled in is only the fallback for a test binary run by hand: cargo does not rebuild
/// a test binary because its checkout moved, so in a checkout copied with its `target/`
/// the compiled-in path names the original, whose files the tests would read and whose
/// `target/` they would build into.
pub fn host_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
    })
}

/// The workspace root of the checkout under test (see [`host_dir`]).
pub fn root() -> &'static Path {
    host_dir().parent().expect("the host crate lives in the workspace root")
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

/// One application version of an example release: `(app, vsn, modules)`.
type AppVersion = (&'static str, &'static str, &'static [&'static str]);

const PRIM_1: AppVersion = ("prim_app", "1", &["prim_app", "prim_sup"]);
const PRIM_2: AppVersion = ("prim_app", "2", &["prim_app", "prim_sup"]);
const CH_1: AppVersion = ("ch_app", "1", &["ch_app", "ch_sup", "ch3"]);

const SVC_1: AppVersion = ("svc", "1", &["svc_app", "svc_sup", "svc_handler"]);
const SVC_2: AppVersion = ("svc", "2", &["svc_app", "svc_sup", "svc_handler"]);

/// A release root of the included-application example, as `cargo xtask dist` lays it out
/// (SPEC §6), made from the test build: release A (prim_app 1) permanent, release B
/// (prim_app 2, ch_app 1) unpacked with `relups/<script>.relup` as its relup.
pub fn release_root(script: &str) -> tempfile::TempDir {
    build_root("prim", &[("A", &[PRIM_1]), ("B", &[PRIM_2, CH_1])], script)
}

/// The service example's root: release 1 (svc 1) permanent, release 2 (svc 2) unpacked
/// with `relups/service.relup`.
pub fn service_root() -> tempfile::TempDir {
    build_root("svc", &[("1", &[SVC_1]), ("2", &[SVC_2])], "service")
}

/// Lays out a root with `releases` (the first permanent, the others unpacked; the last one
/// gets `relups/<script>.relup` as its relup).
fn build_root(name: &str, releases: &[(&str, &[AppVersion])], script: &str) -> tempfile::TempDir {
    let root = tempfile::Builder::new().prefix("hotcode-root-").tempdir().expect("temp root");
    let r = root.path();
    for (_, apps) in releases {
        for (app, vsn, modules) in apps.iter() {
            let app_vsn = format!("{app}-{vsn}");
            let dir = r.join("lib").join(&app_vsn);
            if dir.exists() {
                continue;
            }
            std::fs::create_dir_all(&dir).expect("lib dir");
            std::fs::copy(app_file(&app_vsn), dir.join(format!("{app}.app"))).expect(".app");
            for m in modules.iter() {
                std::fs::copy(module_lib(&app_vsn, m), dir.join(format!("{m}.so"))).expect(".so");
            }
        }
    }
    let host = env!("CARGO_PKG_VERSION");
    let mut entries = Vec::new();
    for (i, (vsn, apps)) in releases.iter().enumerate() {
        let rel_apps: Vec<String> =
            apps.iter().map(|(a, v, _)| format!("{{{a}, \"{v}\"}}")).collect();
        let dir = r.join("releases").join(vsn);
        std::fs::create_dir_all(&dir).expect("release dir");
        let rel = format!(
            "{{release, {{\"{name}\", \"{vsn}\"}}, {{hotcode, \"{host}\"}}, [{}]}}.\n",
            rel_apps.join(", ")
        );
        std::fs::write(dir.join(format!("{name}.rel")), rel).expect(".rel");
        let lib_apps: Vec<String> =
            apps.iter().map(|(a, v, _)| format!("{{{a}, \"{v}\", \"lib/{a}-{v}\"}}")).collect();
        let status = if i == 0 { "permanent" } else { "unpacked" };
        entries.push(format!(
            "{{release, \"{name}\", \"{vsn}\", \"{host}\", [{}], {status}}}",
            lib_apps.join(", ")
        ));
    }
    // Each release records the SHA-256 of every module file it ships, as dist does.
    for (vsn, apps) in releases {
        let mut record = hotcode::release::hashes::ModuleHashes::new();
        for (app, v, modules) in apps.iter() {
            for m in modules.iter() {
                let rel = format!("lib/{app}-{v}/{m}.so");
                let digest = hotcode::code::loader::sha256_file(&r.join(&rel)).expect("sha256");
                record.insert(rel, digest);
            }
        }
        let text = hotcode::release::hashes::render_hashes(&record);
        std::fs::write(r.join("releases").join(vsn).join("modules.sha256"), text).expect("record");
    }
    let (last, _) = releases.last().expect("a release");
    std::fs::copy(root_dir_relup(script), r.join("releases").join(last).join("relup"))
        .expect("relup");
    std::fs::write(r.join("releases/RELEASES"), format!("[{}].\n", entries.join(",\n ")))
        .expect("RELEASES");
    std::fs::create_dir_all(r.join("run")).expect("run dir");
    // The node's private directory: its own, mode 0700, or the node refuses it.
    std::fs::set_permissions(r.join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("run dir mode");
    root
}

/// `relups/<name>.relup`, one of the project's seed scripts.
pub fn root_dir_relup(name: &str) -> PathBuf {
    root().join("relups").join(format!("{name}.relup"))
}

/// Rewrites release `vsn`'s integrity record for `files` (root-relative), as a rebuild of
/// the release would after its module files changed.
pub fn record_release(root: &Path, vsn: &str, files: &[&str]) {
    let mut record = hotcode::release::hashes::ModuleHashes::new();
    for rel in files {
        record.insert(
            (*rel).to_owned(),
            hotcode::code::loader::sha256_file(&root.join(rel)).expect("sha256"),
        );
    }
    let text = hotcode::release::hashes::render_hashes(&record);
    std::fs::write(root.join("releases").join(vsn).join("modules.sha256"), text).expect("record");
}

/// Adds release C to a [`release_root`] root: prim_app 2 and ch_app 2, whose ch3 is
/// `fixture-ch3-v2` (ch_app and ch_sup as in ch_app 1), unpacked, with `relup` as its
/// relup and its integrity record.
pub fn add_ch3_v2_release(r: &Path, relup: &str) {
    let lib = r.join("lib/ch_app-2");
    std::fs::create_dir_all(&lib).expect("lib dir");
    std::fs::write(
        lib.join("ch_app.app"),
        "{application, ch_app, [{vsn, \"2\"}, {modules, [ch_app, ch_sup, ch3]}, {mod, {ch_app, []}}]}.\n",
    )
    .expect(".app");
    for m in ["ch_app", "ch_sup"] {
        std::fs::copy(r.join(format!("lib/ch_app-1/{m}.so")), lib.join(format!("{m}.so")))
            .expect(".so");
    }
    std::fs::copy(plugin("fixture-ch3-v2"), lib.join("ch3.so")).expect("ch3.so");
    let host = env!("CARGO_PKG_VERSION");
    std::fs::create_dir_all(r.join("releases/C")).expect("release dir");
    std::fs::write(
        r.join("releases/C/prim.rel"),
        format!("{{release, {{\"prim\", \"C\"}}, {{hotcode, \"{host}\"}}, [{{prim_app, \"2\"}}, {{ch_app, \"2\"}}]}}.\n"),
    )
    .expect(".rel");
    std::fs::write(r.join("releases/C/relup"), relup).expect("relup");
    let releases = std::fs::read_to_string(r.join("releases/RELEASES")).expect("RELEASES");
    let c = format!(
        " {{release, \"prim\", \"C\", \"{host}\", [{{prim_app, \"2\", \"lib/prim_app-2\"}}, {{ch_app, \"2\", \"lib/ch_app-2\"}}], unpacked}}]."
    );
    std::fs::write(
        r.join("releases/RELEASES"),
        releases.trim_end().trim_end_matches("].").to_owned() + ",\n" + &c + "\n",
    )
    .expect("RELEASES");
    record_release(
        r,
        "C",
        &["lib/ch_app-2/ch_app.so", "lib/ch_app-2/ch_sup.so", "lib/ch_app-2/ch3.so"],
    );
}
