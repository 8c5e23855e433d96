//! `hotcode release new | add | tar` on the real example plugins, end to end: a root made
//! from built libraries boots, a release added to it with a relup made from its appup
//! installs, a package of it unpacks onto a running node and installs there, and hostile
//! packages are refused with an error naming the entry, changing nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hotcode::release::package::{PackageError, PackageErrorKind};
use hotcode::release::{ReleaseStatus, read_releases};
use hotcode::release_handler::{ErrorAction, ReleaseError, ReleaseHandler};

use crate::cli::{self, Node, ctl, ctl_ok, hotcode};
use crate::fixtures;

/// `--module` arguments naming each module's built library of application version
/// `app_vsn` (the example crates are called `<module>-v<vsn>`, so the search would not find
/// them).
fn module_args(app_vsn: &str) -> Vec<String> {
    let spec = hotcode::release::AppSpec::read(&fixtures::app_file(app_vsn)).expect(".app");
    spec.modules
        .iter()
        .flat_map(|m| {
            let lib = fixtures::module_lib(app_vsn, m);
            ["--module".to_owned(), format!("{m}={}", lib.display())]
        })
        .collect()
}

/// Runs `hotcode ARGS`, which must succeed; returns its stdout.
fn hotcode_ok(args: &[String]) -> String {
    let out = hotcode(args);
    assert_eq!(out.code, Some(0), "hotcode {args:?} failed: {out:?}");
    out.stdout
}

fn s(text: &str) -> String {
    text.to_owned()
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// `hotcode release new ROOT` with release A of the included-application example
/// (prim_app 1), its libraries found through `--lib-dir`: a directory of copies named as
/// cargo names the library of a crate called after its module (`libprim_app.so`).
fn new_root_a(root: &Path, scratch: &Path) {
    let libs = scratch.join("target-release");
    fs::create_dir_all(&libs).expect("lib dir");
    for module in ["prim_app", "prim_sup"] {
        fs::copy(fixtures::module_lib("prim_app-1", module), libs.join(format!("lib{module}.so")))
            .expect("copy a library");
    }
    let out = hotcode_ok(&[
        s("release"),
        s("new"),
        path_arg(root),
        s("--name"),
        s("prim"),
        s("--vsn"),
        s("A"),
        s("--app"),
        path_arg(&fixtures::app_file("prim_app-1")),
        s("--lib-dir"),
        path_arg(&libs),
    ]);
    assert!(out.starts_with("ok: made release root"), "{out}");
}

/// `hotcode release add ROOT` of release B (prim_app 2 including ch_app 1), its relup made
/// from prim_app 2's appup.
fn add_release_b(root: &Path) -> String {
    let mut args = vec![
        s("release"),
        s("add"),
        path_arg(root),
        s("--vsn"),
        s("B"),
        s("--app"),
        path_arg(&fixtures::app_file("prim_app-2")),
        s("--app"),
        path_arg(&fixtures::app_file("ch_app-1")),
    ];
    args.extend(module_args("prim_app-2"));
    args.extend(module_args("ch_app-1"));
    hotcode_ok(&args)
}

/// Every file and directory under `root` (and `root`), with its mode and owner.
fn modes(root: &Path) -> Vec<(PathBuf, u32, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("metadata");
        assert!(!meta.file_type().is_symlink(), "{} is a link", path.display());
        if meta.is_dir() {
            for item in fs::read_dir(&path).expect("read dir") {
                stack.push(item.expect("entry").path());
            }
        }
        out.push((path, meta.permissions().mode() & 0o7777, meta.uid()));
    }
    out.sort();
    out
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for item in fs::read_dir(&d).expect("read dir") {
            let path = item.expect("entry").path();
            if path.is_dir() {
                stack.push(path.clone());
                out.push((path, Vec::new()));
            } else {
                let bytes = fs::read(&path).expect("read");
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_root_made_from_built_plugins_boots_and_an_added_release_installs() {
    let scratch = cli::scratch();
    let root = scratch.path().join("prim");
    new_root_a(&root, scratch.path());

    // The layout and the rules the node holds a root to.
    let own = fs::metadata(scratch.path()).expect("scratch").uid();
    for (path, mode, uid) in modes(&root) {
        assert_eq!(uid, own, "{} is not the user's", path.display());
        assert_eq!(mode & 0o022, 0, "{} has mode {mode:o}: others can write it", path.display());
    }
    let run = fs::metadata(root.join("run")).expect("run/").permissions().mode() & 0o777;
    assert_eq!(run, 0o700, "run/ is the node's private directory");
    for file in [
        "lib/prim_app-1/prim_app.app",
        "lib/prim_app-1/prim_app.so",
        "lib/prim_app-1/prim_sup.so",
        "releases/A/prim.rel",
    ] {
        assert!(root.join(file).is_file(), "{file} is missing");
    }
    let entries = read_releases(&root.join("releases/RELEASES")).expect("RELEASES");
    let listed: Vec<(&str, ReleaseStatus)> =
        entries.iter().map(|e| (e.vsn.as_str(), e.status)).collect();
    assert_eq!(listed, [("A", ReleaseStatus::Permanent)]);
    // The record lists the module files, as sha256sum would check them.
    let record = fs::read_to_string(root.join("releases/A/modules.sha256")).expect("record");
    let digest =
        hotcode::code::loader::sha256_file(&root.join("lib/prim_app-1/prim_sup.so")).expect("sha");
    let line = format!("{}  lib/prim_app-1/prim_sup.so", hotcode::code::loader::hex(&digest));
    assert!(record.lines().any(|l| l == line), "{record}");

    let out = add_release_b(&root);
    assert!(out.contains("ok: added release prim B"), "{out}");
    assert!(!out.contains("reused"), "nothing to reuse: {out}");
    let relup = hotcode::release::read_relup(&root.join("releases/B/relup")).expect("relup");
    assert_eq!(relup.vsn, "B");
    assert!(root.join("lib/prim_app-2/prim_app.appup").is_file(), "the appup goes along");
    for (path, mode, _) in modes(&root) {
        assert_eq!(mode & 0o022, 0, "{} has mode {mode:o}", path.display());
    }
    // `hotcode check` agrees with the relup and the object code it loads.
    let check = hotcode(&[
        s("check"),
        path_arg(&root.join("releases/B/relup")),
        s("--root"),
        path_arg(&root),
    ]);
    assert_eq!(check.code, Some(0), "{check:?}");

    let _ = env_logger::builder().is_test(true).try_init();
    let handler = ReleaseHandler::boot(&root, ErrorAction::Return).expect("the new root boots");
    assert_eq!(handler.current(), "A");
    let plan = handler.check_install("B").expect("check-install B");
    assert_eq!(plan.from, "A");
    handler.install("B").expect("install B");
    handler.make_permanent("B").expect("make B permanent");
    let statuses: Vec<(String, ReleaseStatus)> =
        handler.which_releases().into_iter().map(|r| (r.vsn, r.status)).collect();
    assert_eq!(statuses, [(s("A"), ReleaseStatus::Old), (s("B"), ReleaseStatus::Permanent)]);
    handler.node().shutdown();
}

#[test]
fn bad_inputs_are_refused_naming_the_file_and_nothing_is_written() {
    let scratch = cli::scratch();
    let root = scratch.path().join("prim");
    let base = |vsn: &str| {
        vec![s("release"), s("new"), path_arg(&root), s("--name"), s("prim"), s("--vsn"), s(vsn)]
    };

    // No library for a module: the message names the .app, the module and where it looked.
    let mut args = base("A");
    args.extend([
        s("--app"),
        path_arg(&fixtures::app_file("prim_app-1")),
        s("--lib-dir"),
        path_arg(scratch.path()),
    ]);
    let out = hotcode(&args);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("prim_app.app: no library for module prim_app of prim_app"),
        "{}",
        out.stderr
    );
    assert!(!root.exists(), "nothing is written");

    // A library that is not a hotcode plugin.
    let mut args = base("A");
    args.extend([s("--app"), path_arg(&fixtures::app_file("prim_app-1"))]);
    args.extend([
        s("--module"),
        format!("prim_app={}", fixtures::plugin("fixture-no-symbol").display()),
    ]);
    args.extend([
        s("--module"),
        format!("prim_sup={}", fixtures::module_lib("prim_app-1", "prim_sup").display()),
    ]);
    let out = hotcode(&args);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("libfixture_no_symbol.so: module prim_app: not a hotcode plugin"),
        "{}",
        out.stderr
    );
    assert!(!root.exists(), "nothing is written");

    // A version that is a path.
    let mut args = base("../A");
    args.extend([s("--app"), path_arg(&fixtures::app_file("prim_app-1"))]);
    args.extend(module_args("prim_app-1"));
    let out = hotcode(&args);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("version \"../A\" holds a '/'"), "{}", out.stderr);
    assert!(!root.exists() && !scratch.path().join("A").exists(), "nothing is written");

    // An application version that changes its files is refused by `add`: a version is
    // immutable. Release C names prim_app 1, but with version 2's supervisor.
    new_root_a(&root, scratch.path());
    let before = snapshot(&root);
    let mut args =
        vec![s("release"), s("add"), path_arg(&root), s("--vsn"), s("C"), s("--no-relup")];
    args.extend([s("--app"), path_arg(&fixtures::app_file("prim_app-1"))]);
    args.extend([
        s("--module"),
        format!("prim_app={}", fixtures::module_lib("prim_app-1", "prim_app").display()),
    ]);
    args.extend([
        s("--module"),
        format!("prim_sup={}", fixtures::module_lib("prim_app-2", "prim_sup").display()),
    ]);
    let out = hotcode(&args);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("lib/prim_app-1: differs from the files given for it (prim_sup.so is not"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("give the application a new vsn"), "{}", out.stderr);
    assert_eq!(snapshot(&root), before, "a refused add changes nothing");

    // A relup that fails to be made (no appup for a changed application) leaves the root as
    // it was: the release's directories written before it are removed again.
    let app = scratch.path().join("prim_app.app");
    fs::write(
        &app,
        fs::read_to_string(fixtures::app_file("prim_app-1"))
            .expect(".app")
            .replace("{vsn, \"1\"}", "{vsn, \"1b\"}"),
    )
    .expect("write .app");
    let mut args = vec![
        s("release"),
        s("add"),
        path_arg(&root),
        s("--vsn"),
        s("C"),
        s("--app"),
        path_arg(&app),
    ];
    args.extend(module_args("prim_app-1"));
    let out = hotcode(&args);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("no .appup here, but application prim_app changes"),
        "{}",
        out.stderr
    );
    assert_eq!(snapshot(&root), before, "a failed relup changes nothing");
}

/// The entries of a package, as `(path, bytes)`, read back in order (directories have
/// none).
fn entries_of(package: &Path) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let file = fs::File::open(package).expect("open package");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = String::from_utf8(entry.path_bytes().into_owned()).expect("utf-8");
        let kind = entry.header().entry_type();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read entry");
        out.push((path, kind, bytes));
    }
    out
}

/// One hostile entry of a package.
enum Hostile {
    /// A regular file whose header names `path` as it is (no checks on the writing side).
    File(&'static [u8]),
    /// A symbolic link to `/etc/passwd`.
    Link(&'static str),
    /// A header announcing a file of `size` bytes, and no data after it.
    Huge(&'static str, u64),
}

/// A hostile package: its name, its hostile entry, the entry the error must name, and
/// whether the error's kind is the expected one.
type HostileCase = (&'static str, Hostile, &'static str, fn(&PackageErrorKind) -> bool);

/// `entries` followed by `hostile`, written as a package to `out`.
fn hostile_package(out: &Path, entries: &[(String, tar::EntryType, Vec<u8>)], hostile: &Hostile) {
    let gz = flate2::write::GzEncoder::new(
        fs::File::create(out).expect("create"),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    for (path, kind, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, path, bytes.as_slice()).expect("append");
    }
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    match hostile {
        Hostile::File(name) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(4);
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_cksum();
            tar.append(&header, &b"evil"[..]).expect("append");
        }
        Hostile::Link(name) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_path(name).expect("path");
            header.set_link_name("/etc/passwd").expect("link");
            header.set_cksum();
            tar.append(&header, std::io::empty()).expect("append");
        }
        Hostile::Huge(name, size) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(*size);
            header.set_path(name).expect("path");
            header.set_cksum();
            // The header alone: the data it announces is never there.
            tar.get_mut().write_all(header.as_bytes()).expect("write header");
        }
    }
    tar.into_inner().expect("tar").finish().expect("gz");
}

#[test]
fn a_package_unpacks_on_a_running_node_and_hostile_ones_change_nothing() {
    let scratch = cli::scratch();
    // The build root has A and B; the node's root only A, made from the same inputs.
    let build = scratch.path().join("build");
    new_root_a(&build, scratch.path());
    add_release_b(&build);
    let node_root = scratch.path().join("node");
    new_root_a(&node_root, scratch.path());

    let package = scratch.path().join("prim-B.tar.gz");
    let out = hotcode_ok(&[
        s("release"),
        s("tar"),
        path_arg(&build),
        s("B"),
        s("--out"),
        path_arg(&package),
    ]);
    assert!(out.starts_with(&format!("ok: wrote {}", package.display())), "{out}");
    let good = entries_of(&package);
    let paths: Vec<&str> = good.iter().map(|(p, _, _)| p.as_str()).collect();
    for expected in [
        "releases/B/prim.rel",
        "releases/B/relup",
        "releases/B/modules.sha256",
        "lib/prim_app-2/prim_app.appup",
        "lib/ch_app-1/ch3.so",
    ] {
        assert!(paths.contains(&expected), "{expected} is not in {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.starts_with("lib/prim_app-1")),
        "only release B's applications: {paths:?}"
    );

    // Hostile packages, refused by a node's handler with a typed error naming the entry.
    // Each starts with the good package's release files and application files (its
    // libraries left out, to keep the test quick), so the refusal comes after files were
    // extracted: still nothing reaches the root.
    let good: Vec<_> = good.into_iter().filter(|(p, _, _)| !p.ends_with(".so")).collect();
    {
        let _ = env_logger::builder().is_test(true).try_init();
        let handler = ReleaseHandler::boot(&node_root, ErrorAction::Return).expect("boot");
        let before = snapshot(&node_root);
        let cases: [HostileCase; 5] = [
            (
                "dotdot",
                Hostile::File(b"lib/ch_app-1/../../x"),
                "lib/ch_app-1/../../x",
                |k| matches!(k, PackageErrorKind::NotPlain(p) if p == ".."),
            ),
            ("absolute", Hostile::File(b"/tmp/hotcode-evil"), "/tmp/hotcode-evil", |k| {
                matches!(k, PackageErrorKind::Absolute)
            }),
            ("symlink", Hostile::Link("lib/ch_app-1/evil.so"), "lib/ch_app-1/evil.so", |k| {
                matches!(k, PackageErrorKind::Type(_))
            }),
            (
                "huge",
                Hostile::Huge("lib/ch_app-1/huge.so", 300 << 20),
                "lib/ch_app-1/huge.so",
                |k| matches!(k, PackageErrorKind::TooLarge { .. }),
            ),
            ("bad-name", Hostile::File(b"lib/.ch_app-1/x.so"), "lib/.ch_app-1/x.so", |k| {
                matches!(k, PackageErrorKind::BadName(_))
            }),
        ];
        for (name, hostile, entry, kind_is) in cases {
            let path = scratch.path().join(format!("{name}.tar.gz"));
            hostile_package(&path, &good, &hostile);
            match handler.unpack(&path) {
                Err(ReleaseError::Package(PackageError { package, entry: Some(named), kind })) => {
                    assert_eq!(package, path, "{name}");
                    assert_eq!(named, entry, "{name}");
                    assert!(kind_is(&kind), "{name}: {kind:?}");
                }
                other => panic!("{name}: expected a package error, got {other:?}"),
            }
            assert_eq!(snapshot(&node_root), before, "{name}: the root changed");
            assert_eq!(handler.which_releases().len(), 1, "{name}");
        }
        assert!(!Path::new("/tmp/hotcode-evil").exists());
        handler.node().shutdown();
    }

    // The good package on a running node: unpacked, listed, installed.
    let node = Node::boot(&node_root, scratch.path());
    // `release add` on the root of a running node is refused: the node would overwrite
    // RELEASES behind it.
    let before = snapshot(&node_root.join("releases"));
    let mut args = vec![s("release"), s("add"), path_arg(&node_root), s("--vsn"), s("C")];
    args.extend([s("--no-relup"), s("--app"), path_arg(&fixtures::app_file("prim_app-1"))]);
    args.extend(module_args("prim_app-1"));
    let out = hotcode(&args);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("changes only through the node"), "{}", out.stderr);
    assert_eq!(snapshot(&node_root.join("releases")), before);
    // A hostile one through the control socket: refused, the entry named, nothing changed.
    let hostile = scratch.path().join("dotdot.tar.gz");
    let refused = ctl(&node_root, &["unpack", &path_arg(&hostile)]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("entry \"lib/ch_app-1/../../x\""), "{}", refused.stderr);
    let unpacked = ctl_ok(&node_root, &["unpack", &path_arg(&package)]);
    assert_eq!(unpacked.trim(), "ok: unpacked release B");
    let listed = ctl_ok(&node_root, &["which-releases"]);
    assert!(listed.lines().any(|l| l.starts_with("prim B unpacked")), "{listed}");
    ctl_ok(&node_root, &["check-install", "B"]);
    let installed = ctl_ok(&node_root, &["install", "B"]);
    assert!(installed.contains("ok"), "{installed}");
    let listed = ctl_ok(&node_root, &["which-releases"]);
    assert!(listed.lines().any(|l| l.starts_with("prim B current")), "{listed}");
    assert!(node.terminate().success());
}
