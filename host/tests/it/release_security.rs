//! Release files are a trust boundary. Each test is one attack from the review of issue 11
//! (rows 1–10 and 14; the control socket's rows 11–13 are in `control_security.rs`): it
//! passed before, and is refused now with a message naming the file or field, with nothing
//! written outside ROOT and the permanent release still booting.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hotcode::release::read_releases;
use hotcode::release_handler::{ErrorAction, ReleaseHandler};

use crate::fixtures;

fn boot(root: &Path) -> ReleaseHandler {
    let _ = env_logger::builder().is_test(true).try_init();
    ReleaseHandler::boot(root, ErrorAction::Return).expect("boot the permanent release")
}

/// The permanent release still boots, and it is `vsn`.
fn permanent_boots(root: &Path, vsn: &str) {
    let h = boot(root);
    assert_eq!(h.current(), vsn);
}

/// Every file under `dir` with its contents, to show that nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(items) = fs::read_dir(&d) else { continue };
        for item in items {
            let path = item.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for item in fs::read_dir(from).expect("read dir") {
        let item = item.expect("entry");
        let dest = to.join(item.file_name());
        if item.file_type().expect("type").is_dir() {
            copy_tree(&item.path(), &dest);
        } else {
            fs::copy(item.path(), &dest).expect("copy");
        }
    }
}

/// A root with only release A (permanent), and a package of release B (prim_app 2 and
/// ch_app 1, its relup and record) made from another root.
fn root_and_package_of_b() -> (tempfile::TempDir, tempfile::TempDir) {
    let root = fixtures::release_root("included-app-restart");
    {
        let h = boot(root.path());
        h.remove("B").expect("remove B");
    }
    let source = fixtures::release_root("included-app-restart");
    let package = tempfile::Builder::new().prefix("hotcode-pkg-").tempdir().expect("temp");
    copy_tree(&source.path().join("releases/B"), &package.path().join("releases/B"));
    for lib in ["prim_app-2", "ch_app-1"] {
        copy_tree(&source.path().join("lib").join(lib), &package.path().join("lib").join(lib));
    }
    (root, package)
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{}: no {from:?} in {text}", path.display());
    fs::write(path, text.replace(from, to)).expect("write");
}

/// Moves `pkg/releases/B` to `pkg/releases/<vsn>` and makes its `.rel` say `vsn`.
fn retag_package(pkg: &Path, vsn: &str) -> PathBuf {
    let dir = pkg.join("releases").join(vsn.trim_start_matches('/').replace('/', "_"));
    fs::rename(pkg.join("releases/B"), &dir).expect("rename");
    edit(&dir.join("prim.rel"), "\"B\"", &format!("{vsn:?}"));
    dir
}

#[test]
fn row1_a_release_version_that_is_a_path_is_refused_at_unpack() {
    let (root, pkg) = root_and_package_of_b();
    retag_package(pkg.path(), "../lib/prim_app-1");
    let before = snapshot(root.path());
    let h = boot(root.path());
    let error = h.unpack(pkg.path()).expect_err("refused").to_string();
    assert!(
        error.contains("prim.rel") && error.contains("version \"../lib/prim_app-1\""),
        "{error}"
    );
    drop(h);
    assert_eq!(snapshot(root.path()), before, "nothing written");
    permanent_boots(root.path(), "A");
}

#[test]
fn row2_an_app_version_that_walks_out_of_the_root_is_refused_in_releases() {
    let root = fixtures::release_root("included-app-restart");
    let outside = tempfile::tempdir().expect("victim");
    fs::write(outside.path().join("precious"), b"keep").expect("write");
    let releases = root.path().join("releases/RELEASES");
    edit(
        &releases,
        "{ch_app, \"1\", \"lib/ch_app-1\"}",
        &format!(
            "{{ch_app, \"1/../../../../../../..{}\", \"lib/ch_app-1/../../../../../../..{}\"}}",
            outside.path().display(),
            outside.path().display()
        ),
    );
    let error = ReleaseHandler::boot(root.path(), ErrorAction::Return).err().expect("refused");
    let text = error.to_string();
    assert!(text.contains("RELEASES:") && text.contains("holds a '/'"), "{text}");
    assert!(outside.path().join("precious").exists());
}

#[test]
fn row3_an_absolute_release_version_is_refused_and_nothing_is_written_outside() {
    let (root, pkg) = root_and_package_of_b();
    let outside = tempfile::tempdir().expect("outside");
    let target = outside.path().join("evil");
    retag_package(pkg.path(), &target.display().to_string());
    let h = boot(root.path());
    let error = h.unpack(pkg.path()).expect_err("refused").to_string();
    assert!(error.contains("prim.rel") && error.contains("holds a '/'"), "{error}");
    assert!(!target.exists(), "nothing written outside ROOT");
    drop(h);
    permanent_boots(root.path(), "A");
}

#[test]
fn row4_a_module_swapped_after_the_check_is_refused_when_staged() {
    let root = fixtures::release_root("included-app-restart");
    let h = boot(root.path());
    let file = root.path().join("lib/prim_app-2/prim_sup.so");
    let other = root.path().join("lib/prim_app-1/prim_sup.so");
    let mut swapped = false;
    // The check has passed when the first instruction is reported; the file is renamed
    // over then, as a racing writer would.
    let error = h
        .install_with_progress("B", &mut |step| {
            if !swapped && step.step == 1 {
                let temp = root.path().join("lib/prim_app-2/.swap");
                fs::copy(&other, &temp).expect("copy");
                fs::rename(&temp, &file).expect("rename over");
                swapped = true;
            }
        })
        .expect_err("refused");
    assert!(swapped);
    let text = format!("{error:#}");
    assert!(
        text.contains("prim_sup.so") && text.contains("SHA-256 mismatch: the release recorded"),
        "{text}"
    );
    assert_eq!(h.current(), "A");
}

#[test]
fn row5_a_malformed_record_in_a_package_changes_nothing() {
    let (root, pkg) = root_and_package_of_b();
    fs::write(pkg.path().join("releases/B/modules.sha256"), "not a digest line\n").expect("w");
    let before = snapshot(root.path());
    let h = boot(root.path());
    let error = h.unpack(pkg.path()).expect_err("refused").to_string();
    assert!(error.contains("releases/B/modules.sha256:1:1"), "{error}");
    drop(h);
    assert_eq!(snapshot(root.path()), before);
    permanent_boots(root.path(), "A");
}

#[test]
fn row6_a_record_that_contradicts_another_release_is_refused_at_unpack() {
    let (root, pkg) = root_and_package_of_b();
    // The package ships prim_app 1 (A's) changed, and records the changed digest for it.
    let release = pkg.path().join("releases/B");
    copy_tree(&root.path().join("lib/prim_app-1"), &pkg.path().join("lib/prim_app-1"));
    let sup = pkg.path().join("lib/prim_app-1/prim_sup.so");
    let mut bytes = fs::read(&sup).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&sup, &bytes).expect("write");
    edit(&release.join("prim.rel"), "{prim_app, \"2\"}", "{prim_app, \"1\"}");
    let mut record = hotcode::release::hashes::ModuleHashes::new();
    for (lib, modules) in
        [("prim_app-1", &["prim_app", "prim_sup"][..]), ("ch_app-1", &["ch_app", "ch_sup", "ch3"])]
    {
        for m in modules {
            let rel = format!("lib/{lib}/{m}.so");
            let digest = hotcode::code::loader::sha256_file(&pkg.path().join(&rel)).expect("sha");
            record.insert(rel, digest);
        }
    }
    fs::write(release.join("modules.sha256"), hotcode::release::hashes::render_hashes(&record))
        .expect("record");
    let before = snapshot(root.path());
    let h = boot(root.path());
    let error = h.unpack(pkg.path()).expect_err("refused").to_string();
    assert!(
        error.contains("records other digests than release A")
            && error.contains("lib/prim_app-1/prim_sup.so"),
        "{error}"
    );
    drop(h);
    assert_eq!(snapshot(root.path()), before);
    permanent_boots(root.path(), "A");
}

fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn row7_files_of_another_owner_or_writable_by_others_are_not_trusted() {
    let root = fixtures::release_root("included-app-restart");
    let h = boot(root.path());
    // A record others can write: B may not be installed, A still boots.
    let record = root.path().join("releases/B/modules.sha256");
    fs::set_permissions(&record, fs::Permissions::from_mode(0o666)).expect("chmod");
    drop(h);
    let h = boot(root.path());
    let error = h.check_install("B").expect_err("refused").to_string();
    assert!(error.contains("modules.sha256 is writable by others"), "{error}");
    fs::set_permissions(&record, fs::Permissions::from_mode(0o644)).expect("chmod");
    drop(h);
    // A module directory of another uid, mode 0755.
    let dir = root.path().join("lib/ch_app-1");
    if running_as_root() {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
        let h = boot(root.path());
        let error = h.check_install("B").expect_err("refused").to_string();
        assert!(error.contains("lib/ch_app-1 is owned by uid 65534"), "{error}");
        let error = h.install("B").expect_err("refused").to_string();
        assert!(error.contains("owned by uid 65534"), "{error}");
        assert_eq!(h.current(), "A");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 0) }, 0);
    } else {
        eprintln!("row 7: not root, so no file of another uid can be made; owner case not run");
    }
    let h = boot(root.path());
    h.install("B").expect("trusted again");
}

#[test]
fn row8_a_half_copied_library_directory_is_replaced_not_trusted() {
    let (root, pkg) = root_and_package_of_b();
    // What a SIGKILL during an earlier unpack left: ch_app-1 with only its .app.
    let half = root.path().join("lib/ch_app-1");
    fs::create_dir_all(&half).expect("mkdir");
    fs::copy(pkg.path().join("lib/ch_app-1/ch_app.app"), half.join("ch_app.app")).expect("copy");
    let h = boot(root.path());
    assert_eq!(h.unpack(pkg.path()).expect("unpack"), "B");
    h.install("B").expect("installable");
    assert_eq!(h.current(), "B");
}

#[test]
fn row9_oversized_and_special_files_are_refused_without_reading_them() {
    let root = fixtures::release_root("included-app-restart");
    let h = boot(root.path());
    let relup = root.path().join("releases/B/relup");
    let file = fs::File::create(&relup).expect("create");
    file.set_len(17 * 1024 * 1024).expect("grow");
    let error = h.check_install("B").expect_err("refused").to_string();
    assert!(error.contains("releases/B/relup") && error.contains("more than the"), "{error}");
    let error = hotcode::release::read_relup(Path::new("/dev/zero")).expect_err("refused");
    assert!(error.to_string().contains("not a regular file"), "{error}");
    // A FIFO named like a module: refused, not waited on for ever.
    fs::copy(fixtures::root_dir_relup("included-app-restart"), &relup).expect("relup");
    let so = root.path().join("lib/ch_app-1/ch3.so");
    fs::remove_file(&so).expect("rm");
    let c = std::ffi::CString::new(so.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let root_path = root.path().to_owned();
    std::thread::spawn(move || {
        let h = boot(&root_path);
        let _ = tx.send(h.check_install("B").map(drop).map_err(|e| e.to_string()));
    });
    let outcome = rx.recv_timeout(Duration::from_secs(30)).expect("check_install returned");
    let error = outcome.expect_err("refused");
    assert!(error.contains("ch3.so"), "{error}");
}

#[test]
fn row10_a_module_name_that_is_a_path_is_refused_at_check() {
    let root = fixtures::release_root("included-app-restart");
    let h = boot(root.path());
    let relup = root.path().join("releases/B/relup");
    let text = fs::read_to_string(&relup).expect("read");
    let evil = text.replacen("ch3", "'../../../elsewhere/m'", 1);
    assert_ne!(text, evil);
    fs::write(&relup, evil).expect("write");
    let error = h.check_install("B").expect_err("refused").to_string();
    assert!(error.contains("releases/B/relup:") && error.contains("module name"), "{error}");
}

#[test]
fn row14_links_in_a_package_and_an_app_of_another_name_are_refused() {
    let (root, pkg) = root_and_package_of_b();
    let lib = pkg.path().join("lib/ch_app-1");
    let moved = pkg.path().join("elsewhere");
    fs::rename(&lib, &moved).expect("move");
    std::os::unix::fs::symlink(&moved, &lib).expect("symlink");
    let h = boot(root.path());
    let error = h.unpack(pkg.path()).expect_err("refused").to_string();
    assert!(error.contains("lib/ch_app-1") && error.contains("symbolic link"), "{error}");
    fs::remove_file(&lib).expect("rm link");
    fs::rename(&moved, &lib).expect("move back");
    // An .app that describes another application than the .rel names.
    edit(&lib.join("ch_app.app"), "{application, ch_app", "{application, other_app");
    let error = h.unpack(pkg.path()).expect_err("refused").to_string();
    assert!(error.contains("ch_app.app") && error.contains("other_app"), "{error}");
    assert!(read_releases(&root.path().join("releases/RELEASES")).expect("parses").len() == 1);
}

/// A `hotcode boot` of `root` that SIGKILLs itself at its `kill_at`th fault point, if any.
fn boot_cli(root: &Path, scratch: &Path, kill_at: Option<usize>) -> crate::cli::ChildGuard {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut command = Command::new(crate::cli::bin());
    command
        .arg("boot")
        .arg(root)
        .env("TMPDIR", scratch)
        .env_remove(hotcode::release_handler::FAULT_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(k) = kill_at {
        command.env(hotcode::release_handler::FAULT_ENV, k.to_string());
    }
    let mut guard = crate::cli::ChildGuard::spawn(&mut command);
    let stdout = guard.child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok));
        for _ in lines {}
    });
    let up = rx.recv_timeout(crate::cli::DEADLINE).expect("a first line").expect("node up");
    assert!(up.starts_with("hotcode: node up on"), "{up}");
    guard
}

fn status_of(root: &Path, vsn: &str) -> Option<String> {
    let out = crate::cli::ctl_ok(root, &["which-releases"]);
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(vsn))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
}

/// SIGKILL at every fault point of unpack, install, make_permanent and remove (the node
/// counts them, `HOTCODE_TEST_KILL_AT` picks one): after each, RELEASES parses, the
/// permanent release boots, and unpacking the same package again gives a release that
/// installs.
#[test]
fn a_node_killed_at_every_step_of_unpack_install_make_permanent_and_remove_recovers() {
    use std::os::unix::process::ExitStatusExt;
    let (template, pkg) = root_and_package_of_b();
    let pkg_arg = pkg.path().display().to_string();
    let steps: [&[&str]; 4] =
        [&["unpack", &pkg_arg], &["install", "B"], &["make-permanent", "B"], &["remove", "A"]];
    let mut kills = 0;
    for k in 1..200 {
        let root = tempfile::Builder::new().prefix("hotcode-kill-").tempdir().expect("root");
        copy_tree(template.path(), root.path());
        fs::set_permissions(root.path().join("run"), fs::Permissions::from_mode(0o700))
            .expect("run/ is the node's own");
        // The template's node left its (empty) directory for private copies, which the
        // copy made with the wrong mode: it is a node's state, not the release's.
        let _ = fs::remove_dir_all(root.path().join("run/lib"));
        let scratch = crate::cli::scratch();
        let mut node = boot_cli(root.path(), scratch.path(), Some(k));
        let mut killed_at = None;
        for (i, step) in steps.iter().enumerate() {
            let out = crate::cli::ctl(root.path(), step);
            if out.code != Some(0) {
                let status = node.wait();
                assert_eq!(status.signal(), Some(libc::SIGKILL), "point {k}, {step:?}: {out:?}");
                killed_at = Some(i);
                break;
            }
        }
        let Some(step) = killed_at else {
            node.signal(libc::SIGTERM);
            node.wait();
            break;
        };
        kills += 1;
        // RELEASES parses, and the permanent release boots.
        read_releases(&root.path().join("releases/RELEASES")).expect("RELEASES parses");
        let mut node = boot_cli(root.path(), scratch.path(), None);
        let b = status_of(root.path(), "B");
        let expected_permanent =
            if step >= 3 || b.as_deref() == Some("permanent") { "B" } else { "A" };
        assert_eq!(status_of(root.path(), expected_permanent).as_deref(), Some("permanent"), "{k}");
        // And B is (or unpacks again into) a release that installs.
        if b.is_none() {
            crate::cli::ctl_ok(root.path(), &["unpack", &pkg_arg]);
        }
        if status_of(root.path(), "B").as_deref() == Some("unpacked") {
            crate::cli::ctl_ok(root.path(), &["install", "B"]);
        }
        assert_eq!(
            status_of(root.path(), "B").as_deref().map(|s| s == "current" || s == "permanent"),
            Some(true),
            "point {k}"
        );
        node.signal(libc::SIGTERM);
        node.wait();
    }
    assert!(kills >= 30, "only {kills} fault points were reached");
    eprintln!("killed at {kills} fault points of unpack, install, make_permanent and remove");
}
