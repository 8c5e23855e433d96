//! Private library copies leave nothing behind (issue 13, item 7).
//!
//! The loader maps a private copy of each library and unlinks the copy's file once it is
//! open; each code server's directory for copies (`ROOT/run/lib/<pid>-<n>` for a booted
//! node, `$TMPDIR/hotcode-<uid>/<pid>-<n>` otherwise) is locked by its owner and removed
//! at every exit the process lives through, and what a killed process left is removed by
//! the next code server made in the same place. These tests run real processes (the
//! `hotcode` binary, and this test binary as a helper that ends in a chosen way) with
//! `TMPDIR` set to a fresh directory, and wait only for events: a line, an exit.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use hotcode::release_handler::EXIT_RESTART;

use crate::cli::{ChildGuard, DEADLINE, Node, bin, ctl, drain, scratch};
use crate::fixtures;

/// The names in `dir`, sorted (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The scratch directories of process `pid` in `parent`: `<pid>-<n>`.
fn dirs_of(parent: &Path, pid: u32) -> Vec<PathBuf> {
    names(parent)
        .into_iter()
        .filter(|n| n.split_once('-').is_some_and(|(p, _)| p == pid.to_string()))
        .map(|n| parent.join(n))
        .collect()
}

/// The files that process `pid` maps from under `dir`, and whether each was deleted.
fn mapped_by(pid: u32, dir: &Path) -> Vec<(PathBuf, bool)> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("the node's maps");
    let mut found: Vec<(PathBuf, bool)> = maps
        .lines()
        .filter_map(|line| line.find('/').map(|at| &line[at..]))
        .map(|name| match name.strip_suffix(" (deleted)") {
            Some(path) => (PathBuf::from(path), true),
            None => (PathBuf::from(name), false),
        })
        .filter(|(path, _)| path.starts_with(dir))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Checks a running node's private copies: one directory of its own, mode 0700, in
/// `ROOT/run/lib` (mode 0700); no file in it; the modules of the release mapped from it,
/// their files deleted. Returns the directory.
fn check_running_node(root: &Path, node: &Node) -> PathBuf {
    let lib = root.join("run/lib");
    let mine = dirs_of(&lib, node.pid());
    assert_eq!(mine.len(), 1, "one directory of the node's own in run/lib: {:?}", names(&lib));
    let dir = mine.into_iter().next().expect("one");
    for private in [&lib, &dir] {
        let mode = fs::metadata(private).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o700, "{}", private.display());
    }
    assert_eq!(names(&dir), Vec::<String>::new(), "no copy stays on disk once it is open");
    let mapped = mapped_by(node.pid(), &dir);
    assert!(
        mapped.len() >= 2,
        "prim_app and prim_sup are mapped from {}: {mapped:?}",
        dir.display()
    );
    assert!(mapped.iter().all(|(_, deleted)| *deleted), "{mapped:?}");
    dir
}

#[test]
fn a_node_stopped_by_sigterm_leaves_nothing_in_its_tmpdir_or_run_dir() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let tmp = scratch();
    let node = Node::boot(r, tmp.path());
    let dir = check_running_node(r, &node);
    assert_eq!(node.terminate().code(), Some(0));
    assert!(!dir.exists());
    assert_eq!(names(tmp.path()), Vec::<String>::new(), "nothing in the node's TMPDIR");
    // The exit record stays (the next boot reads it) and so does the empty lib/; the
    // socket is removed.
    assert_eq!(names(&r.join("run")), ["last-exit", "lib"]);
    assert_eq!(names(&r.join("run/lib")), Vec::<String>::new());
}

#[test]
fn a_node_that_exits_3_after_a_failed_install_leaves_no_private_copies() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    fs::write(r.join("releases/B/relup"), crate::node_exit::FAILING_RELUP).expect("relup");
    let tmp = scratch();
    let node = Node::boot(r, tmp.path());
    let dir = check_running_node(r, &node);
    // The install loads B's modules before the point of no return, then fails after it.
    let install = ctl(r, &["install", "B"]);
    assert_eq!(install.code, Some(1), "{install:?}");
    let (status, stderr) = node.wait_exit_with_stderr();
    assert_eq!(status.code(), Some(EXIT_RESTART), "{stderr}");
    // `std::process::exit` runs no destructor: the code layer's exit hook removed it.
    assert!(!dir.exists(), "{stderr}");
    assert_eq!(names(&r.join("run/lib")), Vec::<String>::new());
    assert_eq!(names(tmp.path()), Vec::<String>::new(), "nothing in the node's TMPDIR");
    // No destructor closed the control socket either: it stays until the next node, which
    // holds the root's lock, replaces it (README, security model).
    assert_eq!(names(&r.join("run")), ["hotcode.sock", "last-exit", "lib"]);
}

/// Takes the lock a live owner holds on its scratch directory: what another running
/// process looks like to a sweep.
fn hold_lock(dir: &Path) -> fs::File {
    let file = fs::File::open(dir).expect("open the directory");
    // SAFETY: flock(2) on the descriptor `file` owns, open for the whole call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0, "flock {}: {}", dir.display(), std::io::Error::last_os_error());
    file
}

#[test]
fn what_a_killed_node_left_is_removed_at_the_next_boot_and_nothing_of_a_live_owner() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let tmp = scratch();
    let node = Node::boot(r, tmp.path());
    let killed = check_running_node(r, &node);
    // A copy whose load the kill interrupts (it was never unlinked).
    fs::write(killed.join("prim_sup-99.so"), "an interrupted copy").expect("write");
    node.kill();
    assert!(killed.exists(), "SIGKILL leaves the directory behind");
    // A directory whose owner lives: another process holds its lock.
    let alive = r.join("run/lib/4000000000-1");
    fs::create_dir(&alive).expect("mkdir");
    let lock = hold_lock(&alive);

    let node = Node::boot(r, tmp.path());
    assert!(!killed.exists(), "the dead node's directory is removed at boot");
    assert!(alive.exists(), "a directory whose lock is held is left alone");
    let own = check_running_node(r, &node);
    assert_eq!(node.terminate().code(), Some(0));
    assert!(!own.exists());
    assert_eq!(names(&r.join("run/lib")), ["4000000000-1"]);
    drop(lock);
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

/// A process that is not a booted node keeps its copies under `$TMPDIR/hotcode-<uid>`:
/// `hotcode watch`, until SIGTERM.
#[test]
fn a_watch_node_keeps_its_copies_in_tmpdir_and_removes_them_when_stopped() {
    let tmp = scratch();
    let library = fixtures::greeter_v1();
    let dir = library.parent().expect("the plugin directory");
    let file = library.file_name().expect("a file name");
    let mut module = std::ffi::OsString::from("greeter=");
    module.push(file);
    let mut child = ChildGuard::spawn(
        Command::new(bin())
            .args([OsStr::new("watch"), dir.as_os_str(), &module])
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stderr = drain(child.child.stderr.take().expect("stderr"));
    let stdout = child.child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = lines.recv_timeout(DEADLINE).expect("a `watching` line");
        if line.starts_with("watching ") {
            break;
        }
    }
    let pid = child.child.id();
    let parent = tmp_parent(tmp.path());
    let mine = dirs_of(&parent, pid);
    assert_eq!(mine.len(), 1, "{:?}", names(&parent));
    for private in [&parent, &mine[0]] {
        let mode = fs::metadata(private).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o700, "{}", private.display());
    }
    assert_eq!(names(&mine[0]), Vec::<String>::new());
    assert_eq!(mapped_by(pid, &mine[0]).len(), 1, "greeter is mapped from its directory");

    child.signal(libc::SIGTERM);
    let status = child.wait();
    let stderr = stderr.join().expect("stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    // The per-uid parent stays, empty, for the next process.
    assert_eq!(names(tmp.path()), [format!("hotcode-{}", hotcode::code::trust::node_uid())]);
    assert_eq!(names(&parent), Vec::<String>::new(), "{stderr}");
}

/// `TMPDIR/hotcode-<uid>`, where a code server that is not a booted node's keeps its copies.
fn tmp_parent(tmp: &Path) -> PathBuf {
    tmp.join(format!("hotcode-{}", hotcode::code::trust::node_uid()))
}

/// The environment variable that makes [`exit_helper`] run, and says how it ends.
const HELPER_ENV: &str = "HOTCODE_EXIT_HELPER";

/// Not a test of its own: the child process of
/// [`a_code_server_leaves_nothing_at_any_exit_its_process_lives_through`]. It makes a code
/// server with greeter loaded, prints its scratch directory, and ends as `HELPER_ENV`
/// says. Without it set (a plain `--ignored` run) it does nothing.
#[test]
#[ignore = "a helper, run in a child process by a_code_server_leaves_nothing_at_any_exit..."]
fn exit_helper() {
    let Some(how) = std::env::var_os(HELPER_ENV) else { return };
    let server = hotcode::CodeServer::new().expect("code server");
    server.load_object_code("greeter", fixtures::greeter_v1()).expect("load_object_code");
    server.load("greeter", crate::SoftPurge, crate::SoftPurge).expect("load");
    println!("scratch {}", server.scratch_dir().display());
    match how.to_str() {
        // No destructor runs: only the exit hook can remove it.
        Some("exit") => std::process::exit(3),
        // Never dropped, and the harness returns normally.
        Some("forget") => std::mem::forget(server),
        // Unwinding drops it; the harness then exits 101.
        Some("panic") => panic!("the helper panics on purpose"),
        // Nothing runs at all.
        Some("kill") => {
            // SAFETY: kill(2) with our own pid touches no memory.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        _ => panic!("unknown {HELPER_ENV}: {how:?}"),
    }
}

/// Runs [`exit_helper`] in a child with `TMPDIR=tmp`, ending as `how` says; returns its
/// exit status and the scratch directory it printed.
fn run_helper(tmp: &Path, how: &str) -> (std::process::ExitStatus, PathBuf) {
    let exe = std::env::current_exe().expect("this test binary");
    let plugins = fixtures::greeter_v1().parent().expect("plugin dir").to_owned();
    let mut child = ChildGuard::spawn(
        Command::new(exe)
            .args(["--exact", "private_copies::exit_helper", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(HELPER_ENV, how)
            .env("TMPDIR", tmp)
            .env("HOTCODE_PLUGIN_DIR", plugins)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = drain(child.child.stdout.take().expect("stdout"));
    let stderr = drain(child.child.stderr.take().expect("stderr"));
    let status = child.wait();
    let (stdout, stderr) = (stdout.join().expect("stdout"), stderr.join().expect("stderr"));
    let dir = stdout
        .lines()
        // The harness's "test ... " may come first on the line.
        .find_map(|l| l.split_once("scratch ").map(|(_, dir)| dir))
        .unwrap_or_else(|| panic!("{how}: no scratch line:\n{stdout}\n{stderr}"));
    (status, PathBuf::from(dir))
}

#[test]
fn a_code_server_leaves_nothing_at_any_exit_its_process_lives_through() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = scratch();
    let parent = tmp_parent(tmp.path());
    for (how, code) in [("exit", 3), ("forget", 0), ("panic", 101)] {
        let (status, dir) = run_helper(tmp.path(), how);
        assert_eq!(status.code(), Some(code), "{how}");
        assert_eq!(dir.parent(), Some(parent.as_path()), "{how}");
        assert!(!dir.exists(), "{how}: {} is left", dir.display());
        assert_eq!(names(&parent), Vec::<String>::new(), "{how}");
    }
    // SIGKILL: the directory stays, until the next code server in the same place.
    let (status, killed) = run_helper(tmp.path(), "kill");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(killed.exists());
    run_helper(tmp.path(), "forget");
    assert!(!killed.exists(), "the next code server removed what the killed one left");
    assert_eq!(names(&parent), Vec::<String>::new());
}
