//! A checkout copied with its `target/` runs the xtask binary built in the original (cargo
//! does not rebuild it: a checkout's path is not part of its fingerprint). That binary must
//! work on the copy, never on the checkout it was built in.
//!
//! The copy here is lean: the source tree and, where a kept `target/` would have it, this
//! build's xtask binary. Cargo is a stand-in (`$CARGO`, which xtask uses for every cargo
//! command) that logs where it runs and what it is asked, refuses to run outside the copy,
//! passes `metadata` to the real cargo and "builds" a plugin by copying the library this
//! run's tests use (`$HOTCODE_PLUGIN_DIR`, set by `cargo xtask test`, else the original's
//! `target/debug`) where cargo would put it: `dist` then checks and assembles the example
//! roots in the copy exactly as it would after a real build, in seconds.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The stand-in for cargo (see the module docs).
const FAKE_CARGO: &str = r#"#!/bin/sh
here=$(pwd -P)
printf '%s\t%s\n' "$here" "$*" >> "$FAKE_CARGO_LOG"
case "$here/" in
  "$FAKE_CARGO_COPY"/*) ;;
  *) echo "fake cargo: asked to run in $here, outside the copy $FAKE_CARGO_COPY" >&2; exit 97 ;;
esac
case "$1" in
  metadata) exec "$REAL_CARGO" "$@" ;;
  build)
    shift
    profile=debug
    packages=""
    bins=""
    target="$here/target"
    while [ $# -gt 0 ]; do
      case "$1" in
        --release) profile=release ;;
        --profile) shift; profile="$1" ;;
        --target-dir) shift; target="$1" ;;
        --bin) shift; bins="$bins $1" ;;
        -p) shift; packages="$packages $1" ;;
      esac
      shift
    done
    case "$target/" in
      "$FAKE_CARGO_COPY"/*) ;;
      *) echo "fake cargo: asked to build into $target, outside the copy" >&2; exit 96 ;;
    esac
    out="$target/$profile"
    mkdir -p "$out"
    if [ -n "$bins" ]; then
      for b in $bins; do
        printf 'placeholder for %s\n' "$b" > "$out/$b"
      done
      exit 0
    fi
    for p in $packages; do
      lib="lib$(printf %s "$p" | tr - _).so"
      if [ -f "$FAKE_CARGO_PLUGINS/$lib" ]; then
        cp "$FAKE_CARGO_PLUGINS/$lib" "$out/$lib"
      else
        printf 'placeholder for %s (no %s/%s: run cargo xtask build)\n' "$p" "$FAKE_CARGO_PLUGINS" "$lib" > "$out/$lib"
      fi
    done ;;
  *) echo "fake cargo: unexpected command: $*" >&2; exit 98 ;;
esac
"#;

/// The checkout this test was built and run in: cargo sets `CARGO_MANIFEST_DIR` when it
/// runs a test, too.
fn original() -> PathBuf {
    let xtask = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    xtask.parent().expect("xtask lives in the workspace root").to_owned()
}

/// Copies the source tree `from` to `to`: everything but `target/` and `.git`.
fn copy_sources(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the copy");
    for entry in fs::read_dir(from).expect("read the checkout") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        copy_tree(&entry.path(), &to.join(name));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let kind = fs::symlink_metadata(from).expect("stat").file_type();
    if kind.is_dir() {
        fs::create_dir_all(to).expect("mkdir");
        for entry in fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("a directory entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else if kind.is_file() {
        fs::copy(from, to).expect("copy a file");
    }
}

/// Every file under `dir` with its length and mtime: what "untouched" is checked against.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = fs::read_dir(&at) else { continue };
        for entry in entries {
            let entry = entry.expect("a directory entry");
            let meta = entry.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files.insert(entry.path(), (meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    files
}

/// Runs the copied xtask binary's `dist` in `cwd` (inside the copy) and checks that every
/// cargo command ran in the copy and the example roots were assembled there.
fn dist_in_copy(tmp: &Path, copy: &Path, cwd: &Path, as_cargo_run_would: bool) {
    let log = tmp.join(format!("cargo-{as_cargo_run_would}.log"));
    let real_cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut xtask = Command::new(copy.join("target/debug/xtask"));
    xtask
        .arg("dist")
        .current_dir(cwd)
        .env("CARGO", tmp.join("fake-cargo"))
        .env("REAL_CARGO", real_cargo)
        .env("FAKE_CARGO_LOG", &log)
        .env("FAKE_CARGO_COPY", copy)
        .env(
            "FAKE_CARGO_PLUGINS",
            std::env::var_os("HOTCODE_PLUGIN_DIR")
                .map_or_else(|| original().join("target").join("debug"), PathBuf::from),
        )
        .env_remove("CARGO_TARGET_DIR");
    if as_cargo_run_would {
        // What `cargo xtask` (`cargo run -p xtask`) sets for the binary it runs.
        xtask.env("CARGO_MANIFEST_DIR", copy.join("xtask"));
    } else {
        xtask.env_remove("CARGO_MANIFEST_DIR");
    }
    let out = xtask.output().expect("run the copied xtask");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "xtask dist in the copy failed ({}):\n{stderr}", out.status);

    let log = fs::read_to_string(&log).expect("the stand-in cargo ran");
    let commands: Vec<(&str, &str)> =
        log.lines().map(|l| l.split_once('\t').expect("cwd<TAB>args")).collect();
    assert!(commands.iter().any(|(_, args)| args.starts_with("metadata ")), "{log}");
    assert!(commands.iter().any(|(_, args)| args.starts_with("build --release ")), "{log}");
    let original = original().display().to_string();
    for (cwd, args) in &commands {
        assert_eq!(Path::new(cwd), copy, "cargo ran outside the copy:\n{log}");
        assert!(!args.contains(&original), "cargo was pointed at the original:\n{log}");
    }
    for root in ["included-app-restart", "included-app-supervisor", "service"] {
        let releases = copy.join("target/dist").join(root).join("releases/RELEASES");
        assert!(releases.is_file(), "{} missing:\n{stderr}", releases.display());
    }
    // The copy's own build output was placed: the file the stand-in put in the copy's
    // target/release, byte for byte.
    let placed = fs::read(copy.join("target/dist/lib/greeter-1/greeter.so")).expect("placed lib");
    let built = fs::read(copy.join("target/release/libgreeter_v1.so")).expect("built lib");
    assert_eq!(placed, built, "the copy's own build output was placed");
}

#[test]
fn a_copied_checkout_with_its_target_builds_and_assembles_only_in_the_copy() {
    let original = original();
    let before = snapshot(&original.join("target/dist"));
    let tmp = tempfile::tempdir().expect("temp dir");
    let tmp = tmp.path().canonicalize().expect("canonical temp dir");
    let copy = tmp.join("copy");
    copy_sources(&original, &copy);
    // The kept target/: the xtask binary built in the original, where cargo would run it.
    let built = std::env::var_os("CARGO_BIN_EXE_xtask")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_xtask")), PathBuf::from);
    fs::create_dir_all(copy.join("target/debug")).expect("target/debug");
    fs::copy(&built, copy.join("target/debug/xtask")).expect("copy the xtask binary");
    let fake = tmp.join("fake-cargo");
    fs::write(&fake, FAKE_CARGO).expect("write the stand-in cargo");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");

    // `cargo xtask dist` in the copy.
    dist_in_copy(&tmp, &copy, &copy, true);
    // The binary run by hand from a directory inside the copy.
    fs::remove_dir_all(copy.join("target/dist")).expect("remove the first dist");
    dist_in_copy(&tmp, &copy, &copy.join("plugins/greeter-1"), false);

    assert_eq!(snapshot(&original.join("target/dist")), before, "the original's dist changed");
}
