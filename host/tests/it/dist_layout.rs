//! The example release roots that `cargo xtask dist` assembles are read by the host's own
//! parsers exactly as written (SPEC §6, §7).
//!
//! xtask makes the roots with this crate's assembler (`hotcode::release::assemble`, the
//! code behind `hotcode release new | add`); this test checks what it made, as a node will
//! read it. `dist` is not part of the test command: when its output is not there, the test
//! says so and passes without building anything.

use std::path::{Path, PathBuf};

use hotcode::release::{AppSpec, Direction, RelSpec, ReleaseStatus, read_relup};

/// The roots whose layout is checked, and the relup each gives release B.
const ROOTS: [(&str, &str); 2] = [
    ("included-app-restart", "included-app-restart.relup"),
    ("included-app-supervisor", "included-app-supervisor.relup"),
];

/// Where `cargo xtask dist` puts its output: `<target>/dist`.
fn dist_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("dist"),
        _ => crate::fixtures::root().join("target").join("dist"),
    }
}

#[test]
fn example_roots_read_back_with_the_host_parsers() {
    for (name, seed) in ROOTS {
        let root = dist_dir().join(name);
        let releases_file = root.join("releases").join("RELEASES");
        if !releases_file.exists() {
            eprintln!(
                "note: {} is missing; run `cargo xtask dist` to check the example roots",
                releases_file.display()
            );
            continue;
        }
        check_root(&root, &crate::fixtures::root().join("relups").join(seed));
    }
}

fn check_root(root: &Path, seed: &Path) {
    let releases_file = root.join("releases").join("RELEASES");
    let entries = hotcode::release::read_releases(&releases_file)
        .unwrap_or_else(|e| panic!("the host refuses {}: {e}", releases_file.display()));
    let statuses: Vec<(&str, ReleaseStatus)> =
        entries.iter().map(|e| (e.vsn.as_str(), e.status)).collect();
    assert_eq!(statuses, [("A", ReleaseStatus::Permanent), ("B", ReleaseStatus::Unpacked)]);
    // xtask writes RELEASES exactly as the host would rewrite it.
    let text = std::fs::read_to_string(&releases_file).expect("read RELEASES");
    assert_eq!(text, hotcode::release::render_releases(&entries), "{}", releases_file.display());

    for entry in &entries {
        assert_eq!(entry.name, "prim");
        assert_eq!(entry.host_vsn, env!("CARGO_PKG_VERSION"), "the hotcode version");
        let rel_file = root.join("releases").join(&entry.vsn).join(format!("{}.rel", entry.name));
        let rel = RelSpec::read(&rel_file)
            .unwrap_or_else(|e| panic!("the host refuses {}: {e}", rel_file.display()));
        assert_eq!(
            (rel.name.as_str(), rel.vsn.as_str()),
            (entry.name.as_str(), entry.vsn.as_str())
        );
        assert_eq!(rel.host_vsn, entry.host_vsn);
        let rel_apps: Vec<(&str, &str)> =
            rel.apps.iter().map(|a| (a.name.as_str(), a.vsn.as_str())).collect();
        let entry_apps: Vec<(&str, &str)> =
            entry.apps.iter().map(|a| (a.name.as_str(), a.vsn.as_str())).collect();
        assert_eq!(rel_apps, entry_apps, "{}", rel_file.display());

        for app in &entry.apps {
            // Relative to the root, so that a root can be moved.
            assert!(Path::new(&app.lib_dir).is_relative(), "{}", app.lib_dir);
            let lib_dir = root.join(&app.lib_dir);
            let app_file = lib_dir.join(format!("{}.app", app.name));
            let spec = AppSpec::read(&app_file)
                .unwrap_or_else(|e| panic!("the host refuses {}: {e}", app_file.display()));
            assert_eq!(spec.vsn, app.vsn, "{}", app_file.display());
            for module in &spec.modules {
                let lib = lib_dir.join(format!("{module}.so"));
                hotcode::code::elf::inspect_plugin(&lib)
                    .unwrap_or_else(|e| panic!("{} is not a plugin: {e}", lib.display()));
            }
        }
    }

    let relup_file = root.join("releases").join("B").join("relup");
    assert_eq!(
        std::fs::read(&relup_file).expect("read relup"),
        std::fs::read(seed).expect("read seed relup"),
        "{} must be a byte-for-byte copy of {}",
        relup_file.display(),
        seed.display()
    );
    let relup = read_relup(&relup_file)
        .unwrap_or_else(|e| panic!("the host refuses {}: {e}", relup_file.display()));
    assert_eq!(relup.vsn, "B");
    assert!(relup.entry_for("A", Direction::Up).is_some(), "no upgrade from A");
    assert!(relup.entry_for("A", Direction::Down).is_some(), "no downgrade to A");
    assert!(root.join("run").is_dir(), "{} has no run/", root.display());
}
