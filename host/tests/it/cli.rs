//! The `hotcode` binary end to end (SPEC §7): `boot` as a real child process, `ctl` requests
//! to it over the control socket, `check` on good and bad scripts, boot refusing a broken
//! RELEASES, and nodes killed at random points of an install coming back on the permanent
//! release.
//!
//! Every child process is owned by a [`ChildGuard`], which kills and reaps it when the test
//! ends, whether it passed or panicked; every wait on a child has a deadline. Readiness is
//! read from the node's own "node up" line, never guessed with a sleep.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hotcode::release::{ReleaseStatus, read_releases};

use crate::fixtures;

/// The `hotcode` binary of the checkout under test: cargo names it when it runs the tests
/// (see [`fixtures::host_dir`] for why the compiled-in path is only the fallback).
pub(crate) fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var_os("CARGO_BIN_EXE_hotcode")
            .map_or_else(|| env!("CARGO_BIN_EXE_hotcode").into(), Into::into)
    })
}

/// How long a node may take to come up, or a command to finish: generous, because the
/// other integration tests load the two cores at the same time.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A child process that is killed and reaped when dropped, unless it has exited already.
pub(crate) struct ChildGuard {
    pub(crate) child: Child,
}

impl ChildGuard {
    pub(crate) fn spawn(command: &mut Command) -> ChildGuard {
        ChildGuard { child: command.spawn().expect("spawn hotcode") }
    }

    /// Waits for the exit, at most `DEADLINE`.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process {} did not exit in time", self.child.id());
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` to the process (which is not reaped yet, so its pid is still its own).
    pub(crate) fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) touches no memory of ours. The pid is our unreaped child's, so it
        // cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Collects a pipe to the end on a thread, so that a chatty child never blocks on it.
pub(crate) fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// What a finished `hotcode` command did.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `hotcode ARGS` to its end (at most `DEADLINE`).
pub(crate) fn hotcode<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let mut child = ChildGuard::spawn(
        Command::new(bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = drain(child.child.stdout.take().expect("stdout"));
    let stderr = drain(child.child.stderr.take().expect("stderr"));
    let status = child.wait();
    Output {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// `hotcode ctl ROOT ARGS...`.
pub(crate) fn ctl(root: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&OsStr> = vec![OsStr::new("ctl"), root.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    hotcode(&all)
}

/// `hotcode ctl ROOT ARGS...`, which must succeed; returns its stdout.
pub(crate) fn ctl_ok(root: &Path, args: &[&str]) -> String {
    let out = ctl(root, args);
    assert_eq!(out.code, Some(0), "hotcode ctl {args:?} failed: {out:?}");
    out.stdout
}

/// A running `hotcode boot`, killed on drop.
pub(crate) struct Node {
    guard: ChildGuard,
    pub(crate) up_line: String,
    /// The node's stdout lines after the "node up" line (a new host process that took the
    /// node over writes to the same pipe).
    pub(crate) lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The thread collecting stderr, which ends at the pipe's end.
    stderr_reader: JoinHandle<()>,
}

/// Spawns `hotcode boot ROOT`, its private library copies going to `scratch` (a node that
/// is killed cannot delete them itself), logging as `rust_log` says (`RUST_LOG`). Returns
/// the child, its stdout lines and its stderr.
fn spawn_boot(
    root: &Path,
    scratch: &Path,
    rust_log: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (ChildGuard, Receiver<String>, Arc<Mutex<String>>, JoinHandle<()>) {
    let mut guard = ChildGuard::spawn(
        Command::new(bin())
            .arg("boot")
            .arg(root)
            .args(args)
            .envs(envs.iter().copied())
            .env("TMPDIR", scratch)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout: ChildStdout = guard.child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&stderr);
    let mut pipe = guard.child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            sink.lock().unwrap_or_else(|p| p.into_inner()).push_str(&text);
        }
    });
    (guard, lines, stderr, reader)
}

impl Node {
    /// Boots a node on `root` and waits (at most `DEADLINE`) for its "node up" line.
    pub(crate) fn boot(root: &Path, scratch: &Path) -> Node {
        Node::boot_logging(root, scratch, "info")
    }

    /// [`Node::boot`], with `RUST_LOG=rust_log`.
    pub(crate) fn boot_logging(root: &Path, scratch: &Path, rust_log: &str) -> Node {
        Node::boot_with_args(root, scratch, rust_log, &[])
    }

    /// [`Node::boot_logging`], with more arguments for `hotcode boot`.
    pub(crate) fn boot_with_args(
        root: &Path,
        scratch: &Path,
        rust_log: &str,
        args: &[&str],
    ) -> Node {
        Node::boot_with_env(root, scratch, rust_log, args, &[])
    }

    /// [`Node::boot_with_args`], with more environment variables.
    pub(crate) fn boot_with_env(
        root: &Path,
        scratch: &Path,
        rust_log: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Node {
        let (guard, lines, stderr, stderr_reader) = spawn_boot(root, scratch, rust_log, args, envs);
        match lines.recv_timeout(DEADLINE) {
            Ok(up_line) => {
                assert!(
                    up_line
                        .starts_with(&format!("hotcode: node up on {}, release ", root.display())),
                    "unexpected first line {up_line:?}"
                );
                Node { guard, up_line, lines, stderr, stderr_reader }
            }
            Err(e) => {
                drop(guard);
                panic!("no node up line ({e}); stderr:\n{}", stderr.lock().expect("stderr"));
            }
        }
    }

    /// SIGTERM, then the exit status (at most `DEADLINE`).
    pub(crate) fn terminate(mut self) -> ExitStatus {
        self.guard.signal(libc::SIGTERM);
        self.guard.wait()
    }

    /// Waits for a node that is exiting on its own (at most `DEADLINE`).
    pub(crate) fn wait_exit(mut self) -> ExitStatus {
        self.guard.wait()
    }

    /// Waits for a node that is exiting (at most `DEADLINE`), then for the end of its
    /// stderr: all of it, not what the reader had collected so far.
    pub(crate) fn wait_exit_with_stderr(mut self) -> (ExitStatus, String) {
        let status = self.guard.wait();
        // The pipe ends when the node and anything that inherited it are gone.
        let deadline = Instant::now() + DEADLINE;
        while !self.stderr_reader.is_finished() {
            assert!(Instant::now() < deadline, "the node's stderr did not end");
            thread::sleep(Duration::from_millis(5));
        }
        (status, self.stderr())
    }

    /// SIGTERM, then the exit status and all of stderr (at most `DEADLINE`).
    pub(crate) fn terminate_with_stderr(self) -> (ExitStatus, String) {
        self.guard.signal(libc::SIGTERM);
        self.wait_exit_with_stderr()
    }

    /// The next line the node (or a process that took it over) writes to stdout, waiting
    /// at most `DEADLINE`.
    pub(crate) fn next_line(&self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(e) => panic!("no line on the node's stdout ({e}); stderr:\n{}", self.stderr()),
        }
    }

    /// The node's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.guard.child.id()
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(mut self) {
        self.guard.signal(libc::SIGKILL);
        self.guard.wait();
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(crate) fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("hotcode-scratch-").tempdir().expect("scratch dir")
}

/// The `which-releases` lines as `(vsn, status)` pairs.
fn releases_listed(root: &Path) -> Vec<(String, String)> {
    ctl_ok(root, &["which-releases"])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 4, "which-releases line {line:?}: name vsn status apps...");
            assert_eq!(fields[0], "prim", "{line:?}");
            (fields[1].to_owned(), fields[2].to_owned())
        })
        .collect()
}

/// `(vsn, status)` of every release, sorted, as `ctl which-releases` lists them.
pub(crate) fn releases(root: &Path) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = ctl_ok(root, &["which-releases"])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[1].to_owned(), fields[2].to_owned())
        })
        .collect();
    listed.sort();
    listed
}

/// The top supervisor pid of application `app` in `status` output.
fn top_pid(status: &str, app: &str) -> String {
    let prefix = format!("  {app} ");
    let line = status.lines().find(|l| l.starts_with(&prefix)).expect("application line");
    line.split_whitespace().last().expect("pid").to_owned()
}

/// The `status` line of module `module`, with its spacing collapsed.
fn module_line(status: &str, module: &str) -> Option<String> {
    status
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .find(|l| l.starts_with(&format!("{module} current ")))
}

/// OTP's `install_release/1` returns `{ok, OtherVsn, Descr}` with the relup entry's own
/// version (release_handler(3): "OtherVsn and Descr are the version (UpFromVsn or
/// DownToVsn) and description (Descr) as specified in the script"), so a downgrade to A
/// returns `{ok, "A", []}`; and a `current` release becomes `old` when another is installed
/// (release_handler(3)'s status table). Issue 14, item 4.
#[test]
fn downgrade_returns_otp_other_vsn_and_leaves_the_release_it_left_old() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let scratch = scratch();
    let node = Node::boot(r, scratch.path());

    let checked = ctl_ok(r, &["check-install", "B"]);
    assert!(checked.trim_end().ends_with(": {ok,\"A\",[]}"), "{checked}");
    let up = ctl_ok(r, &["install", "B"]);
    assert_eq!(up.trim_end(), "ok: installed B (upgrade from A): {ok,\"A\",[]}");
    let down = ctl_ok(r, &["install", "A"]);
    assert_eq!(down.trim_end(), "ok: installed A (downgrade from B): {ok,\"A\",[]}");
    let mut listed = releases_listed(r);
    listed.sort();
    assert_eq!(
        listed,
        [("A".to_owned(), "permanent".to_owned()), ("B".to_owned(), "old".to_owned())]
    );
    // An old release installs again, and is current then.
    ctl_ok(r, &["install", "B"]);
    let mut listed = releases_listed(r);
    listed.sort();
    assert_eq!(
        listed,
        [("A".to_owned(), "permanent".to_owned()), ("B".to_owned(), "current".to_owned())]
    );
    let stderr = node.stderr();
    let status = node.terminate();
    assert_eq!(status.code(), Some(0), "boot exit status; stderr:\n{stderr}");
}

/// A → B → (permanent) → A through the binary, for one seed relup.
fn drive_up_and_down(script: &str) {
    let root = fixtures::release_root(script);
    let r = root.path();
    let scratch = scratch();
    let node = Node::boot(r, scratch.path());
    assert!(node.up_line.ends_with("release prim A"), "{}", node.up_line);

    let before = ctl_ok(r, &["status"]);
    assert!(before.starts_with("release: prim A (permanent)"), "{before}");
    assert!(before.lines().any(|l| l.starts_with("  prim_app 1 prim_sup <0.")), "{before}");

    let checked = ctl_ok(r, &["check-install", "B"]);
    assert!(checked.starts_with("ok: B can be installed (upgrade from A"), "{checked}");
    let install = ctl(r, &["install", "B"]);
    assert_eq!(install.code, Some(0), "{install:?}");
    assert_eq!(install.stdout.trim_end(), "ok: installed B (upgrade from A): {ok,\"A\",[]}");
    // Progress, one line per instruction as it runs, on stderr.
    let steps: Vec<&str> =
        install.stderr.lines().filter(|l| l.starts_with("hotcode: install B: [")).collect();
    let total = steps.len();
    assert!(total >= 11, "one progress line per instruction: {}", install.stderr);
    assert!(
        steps[0].starts_with(&format!("hotcode: install B: [1/{total}] {{load_object_code,")),
        "{steps:?}"
    );
    assert!(
        steps[total - 1].starts_with(&format!("hotcode: install B: [{total}/{total}]")),
        "{steps:?}"
    );

    let status = ctl_ok(r, &["status"]);
    assert!(status.starts_with("release: prim B (current; permanent is A)"), "{status}");
    assert!(status.lines().any(|l| l.starts_with("  prim_app 2 prim_sup <0.")), "{status}");
    for module in ["ch_sup", "ch3"] {
        assert_eq!(
            module_line(&status, module).as_deref(),
            Some(format!("{module} current 1 old -").as_str()),
            "{status}"
        );
    }
    assert_eq!(module_line(&status, "prim_sup").as_deref(), Some("prim_sup current 2 old -"));
    assert!(status.contains("\nleaked libraries: 0\n"), "{status}");
    assert!(status.contains("\nabandoned processes: 0"), "{status}");
    // The restart script restarts prim_app (a new top supervisor); the supervisor script
    // changes prim_sup in place (the same process).
    let same_top = top_pid(&before, "prim_app") == top_pid(&status, "prim_app");
    assert_eq!(same_top, script == "included-app-supervisor", "{before}\n{status}");

    // Installing the running release again is refused, with the reason on stderr.
    let again = ctl(r, &["install", "B"]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert_eq!(again.stderr, "hotcode: error: release B is already the current release\n");

    assert_eq!(ctl_ok(r, &["make-permanent", "B"]).trim_end(), "ok: B is permanent");
    let down = ctl_ok(r, &["install", "A"]);
    assert_eq!(down.trim_end(), "ok: installed A (downgrade from B): {ok,\"A\",[]}");
    let mut listed = releases_listed(r);
    listed.sort();
    assert_eq!(
        listed,
        [("A".to_owned(), "current".to_owned()), ("B".to_owned(), "permanent".to_owned())]
    );
    let after = ctl_ok(r, &["status"]);
    assert!(after.starts_with("release: prim A (current; permanent is B)"), "{after}");
    assert!(after.lines().any(|l| l.starts_with("  prim_app 1 prim_sup <0.")), "{after}");
    for module in ["ch_sup", "ch3"] {
        let line = module_line(&after, module);
        assert!(line.is_none_or(|l| l == format!("{module} current - old -")), "{after}");
    }

    let stderr = node.stderr();
    let status = node.terminate();
    assert_eq!(status.code(), Some(0), "boot exit status; stderr:\n{stderr}");
    assert!(!r.join("run/hotcode.sock").exists(), "the socket is removed at shutdown");
}

#[test]
fn boot_and_ctl_drive_a_to_b_and_back_with_the_restart_relup() {
    drive_up_and_down("included-app-restart");
}

#[test]
fn boot_and_ctl_drive_a_to_b_and_back_with_the_supervisor_relup() {
    drive_up_and_down("included-app-supervisor");
}

#[test]
fn a_plugins_log_records_reach_the_nodes_log_under_its_module_at_the_nodes_level() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let scratch = scratch();
    // prim_app 1's `start` logs one info and one debug record.
    let info = " prim_app@1] starting the top supervisor, prim_sup\n";
    let debug = " prim_app@1] start type normal, arguments []\n";

    let node = Node::boot(r, scratch.path());
    let (status, stderr) = node.terminate_with_stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("INFO {info}")), "no info record of prim_app:\n{stderr}");
    assert!(!stderr.contains(debug), "a debug record at RUST_LOG=info:\n{stderr}");

    // A filter on the module's name lets its debug records through, and only its own.
    let node = Node::boot_logging(r, scratch.path(), "info,prim_app=debug");
    let (status, stderr) = node.terminate_with_stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("DEBUG{debug}")), "no debug record of prim_app:\n{stderr}");
    assert!(!stderr.contains("DEBUG hotcode"), "the host's debug records at info:\n{stderr}");
}

#[test]
fn the_socket_is_private_and_one_node_per_root() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let scratch = scratch();
    let node = Node::boot(r, scratch.path());
    let socket = r.join("run/hotcode.sock");
    let meta = fs::symlink_metadata(&socket).expect("socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = fs::read_dir(r.join("run"))
        .expect("run dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|name| name != "hotcode.sock" && name != "last-exit" && name != "lib")
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing but the socket, last-exit and lib/ (private copies) in run/: {leftovers:?}"
    );
    // The exit record says that this node runs; it is the node's alone.
    let record = r.join("run/last-exit");
    assert_eq!(
        fs::symlink_metadata(&record).expect("last-exit").permissions().mode() & 0o777,
        0o600
    );
    let running = fs::read_to_string(&record).expect("last-exit");
    assert!(
        running.lines().next().is_some_and(|l| l.ends_with(&format!(" {} running", node.pid())))
    );

    let second = hotcode(&[OsStr::new("boot"), r.as_os_str()]);
    assert_eq!(second.code, Some(1), "{second:?}");
    assert!(second.stderr.contains("a node is already running on"), "{}", second.stderr);
    // The refused node left the first one's socket and exit record alone.
    ctl_ok(r, &["status"]);
    assert_eq!(fs::read_to_string(&record).expect("last-exit"), running);

    assert_eq!(node.terminate().code(), Some(0));
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: connecting as another uid needs root");
        return;
    }
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let scratch = scratch();
    let node = Node::boot(r, scratch.path());
    // Open the file system's door wide, so that only the node's own check stands.
    for (path, mode) in [(r.to_owned(), 0o755), (r.join("run"), 0o755)] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    fs::set_permissions(r.join("run/hotcode.sock"), fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let mut command = Command::new(bin());
    std::os::unix::process::CommandExt::uid(&mut command, 65534);
    std::os::unix::process::CommandExt::gid(&mut command, 65534);
    let mut child = ChildGuard::spawn(
        command
            .arg("ctl")
            .arg(r)
            .arg("status")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr = drain(child.child.stderr.take().expect("stderr"));
    let status = child.wait();
    let stderr = stderr.join().expect("stderr reader");
    if stderr.contains("Permission denied") {
        // The binary or the temp dir is not reachable by uid 65534 on this machine.
        eprintln!("skipped: uid 65534 cannot reach the socket: {stderr}");
    } else {
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("refused: uid 65534 may not control this node"), "{stderr}");
    }
    // The node still serves its owner.
    ctl_ok(r, &["status"]);
    assert_eq!(node.terminate().code(), Some(0));
}

#[test]
fn reboot_old_answers_then_exits_to_be_restarted() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let scratch = scratch();
    let node = Node::boot(r, scratch.path());
    ctl_ok(r, &["install", "B"]);
    ctl_ok(r, &["make-permanent", "B"]);
    let out = ctl_ok(r, &["reboot-old", "A"]);
    assert_eq!(out.trim_end(), "ok: A is permanent again; the node restarts to run it");
    assert_eq!(node.wait_exit().code(), Some(hotcode::release_handler::EXIT_RESTART));
    let releases = read_releases(&r.join("releases/RELEASES")).expect("RELEASES");
    let permanent: Vec<_> =
        releases.iter().filter(|e| e.status == ReleaseStatus::Permanent).collect();
    assert_eq!(permanent.len(), 1);
    assert_eq!(permanent[0].vsn, "A");
    let node = Node::boot(r, scratch.path());
    assert!(node.up_line.ends_with("release prim A"), "{}", node.up_line);
    assert_eq!(node.terminate().code(), Some(0));
}

#[test]
fn ctl_without_a_node_says_how_to_start_one() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let expected = format!(
        "hotcode: error: no node is running on {root} ({root}/run/hotcode.sock): start one with \
         `hotcode boot {root}`\n",
        root = r.display()
    );
    let out = ctl(r, &["status"]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (Some(1), "", &*expected));

    // A socket file that nobody listens on (a node that was killed) says the same.
    drop(std::os::unix::net::UnixListener::bind(r.join("run/hotcode.sock")).expect("bind"));
    let out = ctl(r, &["which-releases"]);
    assert_eq!((out.code, out.stderr.as_str()), (Some(1), &*expected));
}

#[test]
fn usage_errors_exit_2_and_help_has_examples() {
    for args in [&["ctl"][..], &["ctl", "/tmp", "frobnicate"], &["boot"], &["frobnicate"]] {
        let out = hotcode(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
    }
    for command in ["boot", "ctl", "check"] {
        let out = hotcode(&[command, "--help"]);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(out.stdout.contains("EXAMPLES:"), "{command} --help: {}", out.stdout);
        assert!(out.stdout.contains(&format!("hotcode {command} ")), "{}", out.stdout);
    }
}

/// Writes each `(name, RELEASES text)` over the root's RELEASES and checks that boot refuses
/// it, names the file, and leaves it as it was.
#[test]
fn boot_refuses_a_torn_or_garbage_releases_file() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let path = r.join("releases/RELEASES");
    let good = fs::read(&path).expect("RELEASES");
    let torn = good[..good.len() / 2].to_vec();
    let cases: [(&str, Vec<u8>); 3] = [
        ("torn", torn),
        ("garbage", b"\x00\x17 not a term at all {{{\n".to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, contents) in cases {
        fs::write(&path, &contents).expect("write RELEASES");
        let out = hotcode(&[OsStr::new("boot"), r.as_os_str()]);
        assert_eq!(out.code, Some(1), "{name}: {out:?}");
        assert!(!out.stdout.contains("node up"), "{name}: {}", out.stdout);
        assert!(out.stderr.contains("hotcode: error: cannot boot"), "{name}: {}", out.stderr);
        assert!(out.stderr.contains(&path.display().to_string()), "{name}: {}", out.stderr);
        assert_eq!(fs::read(&path).expect("RELEASES"), contents, "{name}: RELEASES changed");
        assert!(!r.join("run/hotcode.sock").exists(), "{name}: socket left behind");
    }
}

fn check<S: AsRef<OsStr>>(relup: &Path, extra: &[S]) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("check"), relup.as_os_str()];
    args.extend(extra.iter().map(AsRef::as_ref));
    hotcode(&args)
}

#[test]
fn check_accepts_the_seed_relups() {
    let root = fixtures::release_root("included-app-restart");
    for script in ["included-app-restart", "included-app-supervisor"] {
        let relup = fixtures::root_dir_relup(script);
        for extra in [&[][..], &[OsStr::new("--root"), root.path().as_os_str()]] {
            let out = check(&relup, extra);
            assert_eq!(out.code, Some(0), "{script} {extra:?}: {out:?}");
            assert_eq!(out.stdout, format!("ok: {} (1 up, 1 down entries)\n", relup.display()));
        }
    }
}

/// A bad script: its name, its text, and for every problem `check` must print, in order,
/// the start of its position (`line:col`) and words of its message.
type BadScript = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

const BAD_SCRIPTS: &[BadScript] = &[
    ("syntax-error", "{\"B\",\n [{\"A\", [],\n   [point_of_no_return}]}],\n []}.\n", &[("3:", "")]),
    (
        "load-without-object-code",
        "{\"B\",\n [{\"A\", [],\n   [point_of_no_return,\n    {load, {ch3, brutal_purge, brutal_purge}}]}],\n []}.\n",
        &[("4:5", "load of module ch3")],
    ),
    (
        "object-code-after-point-of-no-return",
        "{\"B\",\n [{\"A\", [],\n   [point_of_no_return,\n    {load_object_code, {ch_app, \"1\", [ch3]}},\n    {load, {ch3, brutal_purge, brutal_purge}}]}],\n []}.\n",
        &[("4:5", "load_object_code after point_of_no_return (at 3:5)")],
    ),
    (
        "missing-point-of-no-return",
        "{\"B\",\n [{\"A\", [],\n   [{load_object_code, {ch_app, \"1\", [ch3]}},\n    {load, {ch3, brutal_purge, brutal_purge}}]}],\n []}.\n",
        &[("3:5", "load_object_code without point_of_no_return")],
    ),
    (
        "unknown-instruction",
        "{\"B\",\n [{\"A\", [],\n   [point_of_no_return,\n    {frobnicate, [ch3]}]}],\n []}.\n",
        &[("4:5", "unknown instruction frobnicate")],
    ),
    (
        "problems-up-and-down",
        "{\"B\",\n [{\"A\", [], [{load, {ch3, soft_purge, soft_purge}}]}],\n [{\"A\", [], [{load_object_code, {ch_app, \"1\", [ch3]}}]}]}.\n",
        &[("2:14", "load of module ch3"), ("3:14", "without point_of_no_return")],
    ),
    (
        // OTP's appup(4): restart_new_emulator first and once, restart_emulator last.
        "restarts-out-of-place",
        "{\"B\",\n [{\"A\", [], [point_of_no_return, restart_new_emulator, restart_new_emulator]}],\n [{\"A\", [], [restart_emulator,\n   point_of_no_return]}]}.\n",
        &[
            ("2:34", "restart_new_emulator must be the first instruction (the first is at 2:14)"),
            ("2:56", "a second restart_new_emulator (the first is at 2:34)"),
            ("3:14", "restart_emulator must be the last instruction (the last is at 4:4)"),
        ],
    ),
];

#[test]
fn check_prints_every_problem_of_bad_scripts_at_its_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text, expected) in BAD_SCRIPTS {
        let path = dir.path().join(format!("{name}.relup"));
        fs::write(&path, text).expect("write script");
        let out = check(&path, &[] as &[&str]);
        assert_eq!(out.code, Some(1), "{name}: {out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{name}: {}", out.stdout);
        for (line, (at, words)) in lines.iter().zip(expected.iter()) {
            let prefix = format!("{}:{at}", path.display());
            assert!(line.starts_with(&prefix), "{name}: {line:?} should start with {prefix:?}");
            let rest = &line[prefix.len()..];
            // `path:line:col: message`: the rest of the position, then the message.
            let (_, message) = rest.split_once(": ").expect("': ' after the position");
            assert!(message.contains(words), "{name}: {line:?} should say {words:?}");
        }
    }
}

#[test]
fn check_with_a_root_names_a_missing_or_broken_library() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let missing = r.join("lib/ch_app-1/ch3.so");
    fs::remove_file(&missing).expect("remove ch3.so");
    let broken = r.join("lib/prim_app-2/prim_sup.so");
    fs::write(&broken, "not an ELF file\n").expect("break prim_sup.so");
    let relup = fixtures::root_dir_relup("included-app-restart");
    let out = check(&relup, &[OsStr::new("--root"), r.as_os_str()]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    // Both at their load_object_code instruction (lines 5 and 6 of the seed script).
    let at = |line: u32| format!("{}:{line}:", relup.display());
    assert!(lines[0].starts_with(&at(5)), "{}", lines[0]);
    assert!(lines[0].contains(&format!("{}: no such file", missing.display())), "{}", lines[0]);
    assert!(lines[1].starts_with(&at(6)), "{}", lines[1]);
    assert!(lines[1].contains(&broken.display().to_string()), "{}", lines[1]);
    assert!(lines[1].contains("not a shared object"), "{}", lines[1]);

    // Without --root the script itself is fine.
    assert_eq!(check(&relup, &[] as &[&str]).code, Some(0));
}

/// xorshift64*: a fixed seed gives the same kill points on every run and machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SPEC §6: "a node that dies at any instant of an install boots the permanent release, and
/// the release it was installing is `unpacked` again".
#[test]
fn a_node_killed_at_any_point_of_an_install_reboots_on_the_permanent_release() {
    const ITERATIONS: usize = 24;
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let releases_path = r.join("releases/RELEASES");
    let original = fs::read(&releases_path).expect("RELEASES");

    // How long `ctl install B` + `ctl make-permanent B` take here, uninterrupted, so that
    // the kill points cover that window on a fast or a loaded machine alike.
    let window = {
        let scratch = scratch();
        let node = Node::boot(r, scratch.path());
        let start = Instant::now();
        ctl_ok(r, &["install", "B"]);
        ctl_ok(r, &["make-permanent", "B"]);
        let window = start.elapsed();
        assert_eq!(node.terminate().code(), Some(0));
        fs::write(&releases_path, &original).expect("restore RELEASES");
        window
    };
    // Kill points run from 0 to 1.5 times the window: some land before the request reaches
    // the node, most inside the install or the make-permanent, some after both. The one
    // timed delay of these tests is the point of this one; the seed keeps the fractions of
    // the window the same on every run.
    let span = window.mul_f64(1.5).max(Duration::from_millis(20));
    let mut rng = XorShift(0x5EED_CAFE_F00D_0001);
    // Where the kills landed: before the node took the request, during the install, after
    // the install, after make-permanent.
    let mut tally = [0usize; 4];
    for iteration in 0..ITERATIONS {
        let scratch = scratch();
        let also_permanent = rng.next().is_multiple_of(2);
        let delay = span.mul_f64(rng.unit());
        let node = Node::boot(r, scratch.path());
        assert!(node.up_line.ends_with("release prim A"), "{}", node.up_line);

        let (install, permanent) = thread::scope(|s| {
            let client = s.spawn(|| {
                let install = ctl(r, &["install", "B"]);
                let permanent = (also_permanent && install.code == Some(0))
                    .then(|| ctl(r, &["make-permanent", "B"]));
                (install, permanent)
            });
            thread::sleep(delay);
            node.kill();
            client.join().expect("client thread")
        });
        let installed = install.code == Some(0);
        let made_permanent = permanent.as_ref().is_some_and(|p| p.code == Some(0));
        let during = install.stderr.contains("closed the connection");
        tally[usize::from(!installed && during)
            + 2 * usize::from(installed)
            + usize::from(made_permanent)] += 1;
        let context = format!(
            "iteration {iteration}: kill after {delay:?} (make-permanent: {also_permanent}); \
             install {install:?}; make-permanent {permanent:?}"
        );
        if !installed {
            // The client saw the node go, and said so.
            assert_eq!(install.code, Some(1), "{context}");
            // Progress lines may come first; the error is the first line that is not one.
            let first_error =
                install.stderr.lines().find(|l| !l.starts_with("hotcode: install B: ["));
            assert!(first_error.is_some_and(|l| l.starts_with("hotcode: error: ")), "{context}");
        }

        // RELEASES parses, holds no `current`, and has exactly one permanent release: B only
        // if make-permanent may have written it, and surely if it answered OK.
        let releases = read_releases(&releases_path)
            .unwrap_or_else(|e| panic!("{context}: RELEASES does not parse: {e}"));
        assert!(releases.iter().all(|e| e.status != ReleaseStatus::Current), "{context}");
        let permanent: Vec<&str> = releases
            .iter()
            .filter(|e| e.status == ReleaseStatus::Permanent)
            .map(|e| e.vsn.as_str())
            .collect();
        let [permanent] = permanent.as_slice() else {
            panic!("{context}: permanent releases {permanent:?}");
        };
        let permanent = permanent.to_string();
        if made_permanent {
            assert_eq!(permanent, "B", "{context}");
        } else if !also_permanent || !installed {
            assert_eq!(permanent, "A", "{context}");
        }

        // The reboot runs the permanent release and serves.
        let node = Node::boot(r, scratch.path());
        assert!(
            node.up_line.ends_with(&format!("release prim {permanent}")),
            "{context}: {}",
            node.up_line
        );
        let listed = releases_listed(r);
        let permanents: Vec<&(String, String)> =
            listed.iter().filter(|(_, status)| status == "permanent").collect();
        assert_eq!(permanents.len(), 1, "{context}: {listed:?}");
        assert_eq!(permanents[0].0, permanent, "{context}: {listed:?}");
        assert!(listed.iter().all(|(_, status)| status != "current"), "{context}: {listed:?}");
        let status = ctl_ok(r, &["status"]);
        assert!(
            status.starts_with(&format!("release: prim {permanent} (permanent)")),
            "{context}: {status}"
        );
        let stderr = node.stderr();
        assert_eq!(node.terminate().code(), Some(0), "{context}; stderr:\n{stderr}");

        fs::write(&releases_path, &original).expect("restore RELEASES");
    }
    eprintln!(
        "kill test: kills before the node took the request {}, during the install {}, after \
         it {}, after make-permanent {} (kill points in 0..{span:?})",
        tally[0], tally[1], tally[2], tally[3]
    );
    assert!(tally[0] + tally[1] > 0, "no kill landed before the install completed: {tally:?}");
}

#[test]
fn make_relup_writes_a_script_that_check_accepts_and_names_a_missing_appup() {
    let root = fixtures::service_root();
    let r = root.path();
    std::fs::remove_file(r.join("releases/2/relup")).unwrap();
    // Without the new version's appup, the error says where it should be.
    let out = hotcode(&[
        OsStr::new("make-relup"),
        OsStr::new("--root"),
        r.as_os_str(),
        OsStr::new("--from"),
        OsStr::new("1"),
        OsStr::new("--to"),
        OsStr::new("2"),
    ]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("lib/svc-2/svc.appup"), "{out:?}");
    std::fs::copy(fixtures::root().join("plugins/svc-2/svc.appup"), r.join("lib/svc-2/svc.appup"))
        .unwrap();
    let out = hotcode(&[
        OsStr::new("make-relup"),
        OsStr::new("--root"),
        r.as_os_str(),
        OsStr::new("--from"),
        OsStr::new("1"),
        OsStr::new("--to"),
        OsStr::new("2"),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let relup = r.join("releases/2/relup");
    let out =
        hotcode(&[OsStr::new("check"), relup.as_os_str(), OsStr::new("--root"), r.as_os_str()]);
    assert_eq!(out.code, Some(0), "{out:?}");
}
