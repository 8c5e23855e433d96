//! Host restarts end to end (SPEC §5.7, §11; issue 16): `hotcode ctl restart`, an install
//! whose script begins with `restart_new_emulator` or ends with `restart_emulator`, and
//! new host binaries that fail, each under load from client threads of the service
//! example.
//!
//! Every node is the real binary (`hotcode boot ROOT --tcp 127.0.0.1:0`), the load comes
//! from [`LoadGen`] (which checks that each counter moves by exactly one per answer, so a
//! state that was not handed over, or an update applied twice, fails it, and which counts
//! refused connections). Waits are on events with deadlines: a `ctl` command's end, a
//! process's exit (its pidfd), a line on the node's stdout, a count of answers.

use std::fs;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use hotcode::service::{LoadGen, LoadReport};

use crate::cli::{DEADLINE, Node, bin, ctl, ctl_ok, releases, scratch};
use crate::fixtures;

/// The up entry of the service relup (svc 1 → 2), with `first` before it and `last` after.
fn service_script(vsn: &str, descr: &str, first: &str, last: &str) -> String {
    format!(
        r#"{{"{vsn}",
 [{{"1", "{descr}",
   [{first}{{load_object_code,{{svc,"2",[svc_handler]}}}},
    point_of_no_return,
    {{suspend,[svc_handler]}},
    {{load,{{svc_handler,brutal_purge,brutal_purge}}}},
    {{code_change,up,[{{svc_handler,[]}}]}},
    {{resume,[svc_handler]}}{last}]}}],
 [{{"1", [], []}}]}}.
"#
    )
}

/// Adds release `vsn` (svc 2, on host `host_vsn`) to a service root, unpacked, with `relup`
/// and an integrity record of its modules and, if `host` is given, of the host binary
/// `host-<host_vsn>/bin/hotcode` made from it.
fn add_release(root: &Path, vsn: &str, host_vsn: &str, relup: &str, host: Option<&HostBinary>) {
    let dir = root.join("releases").join(vsn);
    fs::create_dir_all(&dir).expect("release dir");
    fs::write(
        dir.join("svc.rel"),
        format!(
            "{{release, {{\"svc\", \"{vsn}\"}}, {{hotcode, \"{host_vsn}\"}}, [{{svc, \"2\"}}]}}.\n"
        ),
    )
    .expect(".rel");
    fs::write(dir.join("relup"), relup).expect("relup");
    let mut files: Vec<String> =
        ["svc_app", "svc_sup", "svc_handler"].iter().map(|m| format!("lib/svc-2/{m}.so")).collect();
    if let Some(host) = host {
        let bin_dir = root.join(format!("host-{host_vsn}/bin"));
        fs::create_dir_all(&bin_dir).expect("host dir");
        let binary = bin_dir.join("hotcode");
        match host {
            HostBinary::Copy(from) => {
                fs::copy(from, &binary).expect("copy the host binary");
            }
            HostBinary::Script(text) => fs::write(&binary, text).expect("write the host script"),
        }
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).expect("chmod");
        files.push(format!("host-{host_vsn}/bin/hotcode"));
    }
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    fixtures::record_release(root, vsn, &files);
    let releases = fs::read_to_string(root.join("releases/RELEASES")).expect("RELEASES");
    let entry = format!(
        " {{release, \"svc\", \"{vsn}\", \"{host_vsn}\", [{{svc, \"2\", \"lib/svc-2\"}}], unpacked}}]."
    );
    fs::write(
        root.join("releases/RELEASES"),
        releases.trim_end().trim_end_matches("].").to_owned() + ",\n" + &entry + "\n",
    )
    .expect("RELEASES");
}

/// What a release's host binary is made of.
enum HostBinary {
    /// A copy of a file (the `hotcode` binary under test).
    Copy(PathBuf),
    /// A shell script.
    Script(&'static str),
}

/// Boots a node on `root` serving the service on a free port; returns it and the port.
fn boot_service(root: &Path, scratch: &Path, extra: &[&str]) -> (Node, SocketAddr) {
    let mut args = vec!["--tcp", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let node = Node::boot_with_args(root, scratch, "info", &args);
    let line = node.next_line();
    let addr = line
        .strip_prefix("hotcode: service on ")
        .unwrap_or_else(|| panic!("expected the service line, got {line:?}"))
        .parse()
        .expect("a socket address");
    (node, addr)
}

/// Waits (at most `DEADLINE`) until `load` has `more` answers by version `by` (0: v1,
/// 1: v2) beyond `since`.
fn answered_by(load: &LoadGen, by: usize, since: u64, more: u64) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let n = load.answered_by_version()[by];
        if n >= since + more {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "only {} answers by v{} since {since}",
            n - since,
            by + 1
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// The number after `(pid ` in `text`.
fn pid_in(text: &str) -> u32 {
    let at = text.find("(pid ").unwrap_or_else(|| panic!("no pid in {text:?}")) + 5;
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no pid in {text:?}"))
}

/// A process of ours or not (a new host outlives the node that started it), killed on drop
/// if it still runs.
struct Process {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

impl Process {
    fn of(pid: u32) -> Process {
        // SAFETY: pidfd_open(2) takes a pid and flags, no memory.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: a non-negative result is a new descriptor that nothing else owns.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) });
        Process { pid, pidfd }
    }

    /// Whether it has exited, waiting at most `timeout`.
    fn exited_within(&self, timeout: Duration) -> bool {
        let Some(fd) = &self.pidfd else { return true };
        let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one initialised pollfd, count 1, its fd open for the call.
        unsafe { libc::poll(&mut poll, 1, ms) > 0 }
    }

    fn wait_gone(&self) {
        assert!(self.exited_within(DEADLINE), "process {} did not exit", self.pid);
    }

    fn kill(&self) {
        if let Some(fd) = &self.pidfd {
            // SAFETY: pidfd_send_signal(2) with our pidfd, no siginfo, no flags: it signals
            // exactly that process, never one that reused its pid.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
        self.wait_gone();
    }

    /// The binary it runs (`/proc/PID/exe`).
    fn exe(&self) -> PathBuf {
        fs::read_link(format!("/proc/{}/exe", self.pid)).expect("/proc/PID/exe")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.exited_within(Duration::ZERO) {
            self.kill();
        }
    }
}

fn no_failures(report: &LoadReport) {
    assert_eq!(report.failed, 0, "failed requests: {report:?}");
    assert_eq!(report.refused, 0, "refused connections: {report:?}");
    assert!(report.requests > 0, "{report:?}");
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(v, s)| ((*v).to_owned(), (*s).to_owned())).collect()
}

#[test]
fn ctl_restart_under_load_hands_over_the_sockets_the_lock_and_the_counters() {
    let root = fixtures::service_root();
    let r = root.path();
    let scratch = scratch();
    let (node, addr) = boot_service(r, scratch.path(), &[]);
    let load = LoadGen::start(addr, 2, "restart").expect("load");
    let mut seen = answered_by(&load, 0, 0, 5);
    let mut old = Process::of(node.pid());
    let mut nodes = Vec::new();
    for round in 1..=3 {
        let out = ctl_ok(r, &["restart"]);
        assert!(out.starts_with("ok: restarted: the new host (pid "), "{out}");
        let new = Process::of(pid_in(&out));
        assert_ne!(new.pid, old.pid);
        // The old process hands over and exits; the new one says it took over.
        old.wait_gone();
        let up = node.next_line();
        assert!(
            up.ends_with(&format!(
                "release svc 1, pid {} (took over from pid {})",
                new.pid, old.pid
            )),
            "round {round}: {up:?}"
        );
        assert_eq!(node.next_line(), format!("hotcode: service on {addr}"));
        // A second node on the root is still refused: the lock went along.
        let second = crate::cli::hotcode(&[
            std::ffi::OsStr::new("boot"),
            r.as_os_str(),
            std::ffi::OsStr::new("--tcp"),
            std::ffi::OsStr::new("127.0.0.1:0"),
        ]);
        assert_eq!(second.code, Some(1), "{second:?}");
        assert!(second.stderr.contains("already running"), "{second:?}");
        // The clients are answered by the new process, their counters continued.
        seen = answered_by(&load, 0, seen, 5);
        assert!(ctl_ok(r, &["status"]).contains("svc_handler"));
        nodes.push(std::mem::replace(&mut old, new));
    }
    let report = load.finish();
    no_failures(&report);
    assert!(report.reconnects > 0, "the drains closed connections: {report:?}");
    // The first node is our child: it exited 0 after handing over.
    assert_eq!(node.wait_exit().code(), Some(0));
    let record = fs::read_to_string(r.join("run/last-exit")).expect("last-exit");
    assert!(record.lines().next().is_some_and(|l| l.ends_with(" running")), "{record}");
    drop(nodes);
}

#[test]
fn restart_new_emulator_runs_the_rest_on_the_new_host_and_a_kill_before_make_permanent_boots_the_old()
 {
    let root = fixtures::service_root();
    let r = root.path();
    let script = service_script("3", "new host", "restart_new_emulator,\n    ", "");
    add_release(r, "3", env!("CARGO_PKG_VERSION"), &script, Some(&HostBinary::Copy(bin().into())));
    let releases_before = fs::read(r.join("releases/RELEASES")).expect("RELEASES");
    let scratch = scratch();
    let (node, addr) = boot_service(r, scratch.path(), &[]);
    let old = Process::of(node.pid());
    let load = LoadGen::start(addr, 2, "emu").expect("load");
    answered_by(&load, 0, 0, 5);

    let check = ctl_ok(r, &["check-install", "3"]);
    assert!(check.starts_with("ok: 3 can be installed"), "{check}");
    let out = ctl(r, &["install", "3"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    // OTP's answer, and the new host's pid.
    assert!(out.stdout.contains(r#"ok: {continue_after_restart,"1","new host"}"#), "{out:?}");
    let new = Process::of(pid_in(&out.stdout));
    old.wait_gone();
    let up = node.next_line();
    assert!(up.contains(&format!("release svc 3, pid {} (took over", new.pid)), "{up:?}");
    // The new host is the release's own binary, and it upgraded the handler under load.
    let host = r.join(format!("host-{}/bin/hotcode", env!("CARGO_PKG_VERSION")));
    assert_eq!(new.exe(), host.canonicalize().expect("host binary"));
    answered_by(&load, 1, 0, 5);
    assert_eq!(releases(r), pairs(&[("1", "permanent"), ("2", "unpacked"), ("3", "current")]));
    let report = load.finish();
    no_failures(&report);

    // Killed before make_permanent: the root boots the permanent release with the binary
    // that boots it, not the new host's; RELEASES never named the new release current.
    new.kill();
    assert_eq!(fs::read(r.join("releases/RELEASES")).expect("RELEASES"), releases_before);
    let again = Node::boot(r, scratch.path());
    assert!(again.up_line.ends_with("release svc 1"), "{}", again.up_line);
    let rebooted = Process::of(again.pid());
    assert_eq!(rebooted.exe(), bin().canonicalize().expect("hotcode"));
    assert_eq!(releases(r), pairs(&[("1", "permanent"), ("2", "unpacked"), ("3", "unpacked")]));
    assert_eq!(again.terminate().code(), Some(0));
    drop(node);
}

#[test]
fn a_new_host_that_exits_at_once_or_is_never_ready_is_killed_and_the_node_serves_on() {
    let root = fixtures::service_root();
    let r = root.path();
    let first = "restart_new_emulator,\n    ";
    add_release(
        r,
        "4",
        "0.9.0-exits",
        &service_script("4", "", first, ""),
        Some(&HostBinary::Script("#!/bin/sh\necho 'this host cannot start' >&2\nexit 7\n")),
    );
    add_release(
        r,
        "5",
        "0.9.0-sleeps",
        &service_script("5", "", first, ""),
        Some(&HostBinary::Script("#!/bin/sh\nexec sleep 600\n")),
    );
    // A release on a host the root has no binary of is refused before anything starts.
    add_release(r, "6", "0.9.0-missing", &service_script("6", "", first, ""), None);
    let releases_before = fs::read(r.join("releases/RELEASES")).expect("RELEASES");
    let scratch = scratch();
    let (node, addr) = boot_service(r, scratch.path(), &["--restart-timeout", "2s"]);
    let load = LoadGen::start(addr, 2, "fail").expect("load");
    let mut seen = answered_by(&load, 0, 0, 5);

    let out = ctl(r, &["install", "4"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("the host restart failed, the node serves on unchanged"),
        "{out:?}"
    );
    assert!(out.stderr.contains("exited with code 7 before it was ready"), "{out:?}");
    assert!(out.stderr.contains("host-0.9.0-exits/bin/hotcode"), "{out:?}");
    seen = answered_by(&load, 0, seen, 5);

    let started = Instant::now();
    let out = ctl(r, &["install", "5"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("was not ready within 2000 ms; it was killed"), "{out:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Killed and reaped: the process is gone.
    let sleeper = pid_in(&out.stderr);
    assert!(!Path::new(&format!("/proc/{sleeper}")).exists(), "pid {sleeper} still exists");
    seen = answered_by(&load, 0, seen, 5);

    let out = ctl(r, &["check-install", "6"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let relup = r.join("releases/6/relup");
    assert!(
        out.stderr.contains(&format!(
            "{}:3:5: restart_new_emulator: release 6 runs on hotcode 0.9.0-missing",
            relup.display()
        )),
        "{out:?}"
    );
    assert!(out.stderr.contains("no such file"), "{out:?}");

    // Exactly as before: the same process, the same releases, still answering.
    assert!(node.stderr().contains("this host cannot start"));
    assert_eq!(
        releases(r),
        pairs(&[
            ("1", "permanent"),
            ("2", "unpacked"),
            ("4", "unpacked"),
            ("5", "unpacked"),
            ("6", "unpacked"),
        ])
    );
    assert_eq!(fs::read(r.join("releases/RELEASES")).expect("RELEASES"), releases_before);
    answered_by(&load, 0, seen, 5);
    let report = load.finish();
    no_failures(&report);
    assert_eq!(report.reconnects, 0, "nothing was handed over: {report:?}");
    assert_eq!(node.terminate().code(), Some(0));
}

#[test]
fn the_rest_of_the_script_failing_on_the_new_host_leaves_the_old_node_serving() {
    let root = fixtures::service_root();
    let r = root.path();
    // prim_sup-style failure: svc_sup has no child no_such_child, which only the
    // evaluation (on the new host, after its point of no return) finds out.
    let relup = r#"{"7",
 [{"1", [],
   [restart_new_emulator,
    point_of_no_return,
    {apply, {supervisor, terminate_child, [svc_sup, no_such_child]}}]}],
 [{"1", [], []}]}.
"#;
    add_release(r, "7", env!("CARGO_PKG_VERSION"), relup, None);
    let scratch = scratch();
    let (node, addr) = boot_service(r, scratch.path(), &[]);
    let load = LoadGen::start(addr, 2, "later").expect("load");
    let seen = answered_by(&load, 0, 0, 5);
    let out = ctl(r, &["install", "7"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("before it was ready: the rest of the install of 7 failed"),
        "{out:?}"
    );
    assert!(out.stderr.contains("no_such_child"), "{out:?}");
    assert_eq!(releases(r), pairs(&[("1", "permanent"), ("2", "unpacked"), ("7", "unpacked")]));
    answered_by(&load, 0, seen, 5);
    let report = load.finish();
    no_failures(&report);
    assert_eq!(node.terminate().code(), Some(0));
}

#[test]
fn restart_emulator_runs_the_script_then_the_new_host_boots_the_new_release() {
    let root = fixtures::service_root();
    let r = root.path();
    let script = service_script("2", "", "", ",\n    restart_emulator");
    fs::write(r.join("releases/2/relup"), script).expect("relup");
    let scratch = scratch();
    let (node, addr) = boot_service(r, scratch.path(), &[]);
    let old = Process::of(node.pid());
    let load = LoadGen::start(addr, 2, "last").expect("load");
    answered_by(&load, 0, 0, 5);
    let out = ctl(r, &["install", "2"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("ok: installed 2 (upgrade from 1)"), "{out:?}");
    assert!(out.stdout.contains("ok: the host restarted (restart_emulator): new pid "), "{out:?}");
    let new = Process::of(
        out.stdout.rsplit(' ').next().and_then(|p| p.trim().parse().ok()).expect("pid"),
    );
    old.wait_gone();
    let up = node.next_line();
    assert!(up.contains(&format!("release svc 2, pid {} (took over", new.pid)), "{up:?}");
    // The state went v1 → v2 in the old process, then v2 → v2 across the restart.
    answered_by(&load, 1, 0, 5);
    assert_eq!(releases(r), pairs(&[("1", "permanent"), ("2", "current")]));
    let report = load.finish();
    no_failures(&report);
    drop(new);
}

/// Whether a node answers on `root`'s control socket, and which process it is.
fn serving_pid(root: &Path) -> Option<u32> {
    let out = ctl(root, &["status"]);
    (out.code == Some(0)).then(|| {
        let line = out.stdout.lines().find(|l| l.starts_with("host: ")).unwrap_or_default();
        pid_in(&line.replace("os pid ", "(pid "))
    })
}

/// A crash at each step of a handover, of the old process or of the new one (the fault
/// points `HOTCODE_TEST_KILL_AT` and `HOTCODE_TEST_KILL_NEW_HOST_AT` pick): afterwards
/// exactly one process serves the root, or none does and the root boots; never two.
#[test]
fn a_crash_at_any_step_of_a_handover_leaves_one_node_serving_or_the_root_bootable() {
    use hotcode::release_handler::{FAULT_ENV, FAULT_ENV_NEW_HOST};
    // (which process dies, at which of its handover steps, `ctl restart`'s exit code, who
    // serves afterwards)
    let cases: [(&str, &str, i32, Option<&str>); 5] = [
        (FAULT_ENV, "1", 1, Some("new")), // old: the new host is ready
        (FAULT_ENV, "2", 0, Some("new")), // old: answered, drained, before go
        (FAULT_ENV_NEW_HOST, "1", 1, Some("old")), // new: the lock adopted, before ready
        (FAULT_ENV_NEW_HOST, "2", 0, None), // new: ready, before go
        (FAULT_ENV_NEW_HOST, "3", 0, None), // new: states adopted, before serving
    ];
    for (env, at, code, survivor) in cases {
        let case = format!("{env}={at}");
        let root = fixtures::service_root();
        let r = root.path();
        let scratch = scratch();
        let node = Node::boot_with_env(r, scratch.path(), "info", &[], &[(env, at)]);
        let old = Process::of(node.pid());
        let out = ctl(r, &["restart"]);
        assert_eq!(out.code, Some(code), "{case}: {out:?}");
        // The new process, kept (alive) until the end of the case.
        let mut new = None;
        match survivor {
            Some("new") => {
                // The old node died; the new one took over alone.
                old.wait_gone();
                let up = node.next_line();
                let took_over = Process::of(pid_in(&up.replace("pid ", "(pid ")));
                assert!(up.contains("(took over from pid"), "{case}: {up}");
                assert_eq!(serving_pid(r), Some(took_over.pid), "{case}");
                new = Some(took_over);
            }
            Some(_) => {
                // The new host died before it was ready: the old node serves on.
                assert!(
                    out.stderr.contains("was killed by signal 9 before it was ready"),
                    "{case}: {out:?}"
                );
                assert_eq!(serving_pid(r), Some(old.pid), "{case}");
            }
            None => {
                // The new host died after ready: the old one cannot hand over and exits
                // 3 for its service manager; nobody serves, and the root boots.
                assert_eq!(node.wait_exit().code(), Some(3), "{case}");
                let new = Process::of(pid_in(&out.stdout));
                new.wait_gone();
                assert_eq!(serving_pid(r), None, "{case}");
                let record = fs::read_to_string(r.join("run/last-exit")).expect("last-exit");
                assert!(
                    record.contains("the host restart failed after the handover began"),
                    "{case}: {record}"
                );
                let again = Node::boot(r, scratch.path());
                assert!(again.up_line.ends_with("release svc 1"), "{case}: {}", again.up_line);
                assert_eq!(again.terminate().code(), Some(0), "{case}");
                continue;
            }
        }
        // One node, holding the lock: another boot is refused.
        let second = crate::cli::hotcode(&[std::ffi::OsStr::new("boot"), r.as_os_str()]);
        assert_eq!(second.code, Some(1), "{case}: {second:?}");
        assert!(second.stderr.contains("already running"), "{case}: {second:?}");
        drop(new);
    }
}

/// `hotcode release add --host-vsn --host` keeps the host binary in the root and records it,
/// makes a relup that begins with `restart_new_emulator` (the host changes), `release tar`
/// packs the binary, and `ctl unpack` puts it on the running node, which then restarts on
/// it.
#[test]
fn a_host_binary_goes_from_release_add_through_a_package_to_a_running_node() {
    use std::ffi::{OsStr, OsString};
    let root = fixtures::service_root();
    let r = root.path();
    // As `hotcode release` lays out an application version: its .appup beside its .app.
    let appup = fixtures::root().join("plugins/svc-2/svc.appup");
    fs::copy(appup, r.join("lib/svc-2/svc.appup")).expect("svc.appup");
    let build = tempfile::Builder::new().prefix("hotcode-build-").tempdir().expect("build dir");
    let b = build.path().join("svc");
    // The place where releases are made: a copy of the node's root, without its run/.
    let copy = Command::new("cp").arg("-a").arg(r).arg(&b).status().expect("cp");
    assert!(copy.success());
    fs::remove_dir_all(b.join("run")).expect("rm run");
    let arg = |s: &str| OsString::from(s);
    let mut args: Vec<OsString> = ["release", "add"].map(arg).to_vec();
    args.push(b.clone().into());
    args.extend(["--vsn", "3", "--from", "1", "--host-vsn", "0.9.1", "--host"].map(arg));
    args.push(bin().into());
    args.push(arg("--app"));
    args.push(fixtures::app_file("svc-2").into());
    for m in ["svc_app", "svc_sup", "svc_handler"] {
        args.push(arg("--module"));
        let mut value = OsString::from(format!("{m}="));
        value.push(fixtures::module_lib("svc-2", m));
        args.push(value);
    }
    let added = crate::cli::hotcode(&args);
    assert_eq!(added.code, Some(0), "{added:?}");
    let relup = fs::read_to_string(b.join("releases/3/relup")).expect("relup");
    let first = relup.lines().find(|l| l.contains("restart_new_emulator"));
    assert!(first.is_some(), "a new host restarts the node first:\n{relup}");
    let record = fs::read_to_string(b.join("releases/3/modules.sha256")).expect("record");
    assert!(record.contains("  host-0.9.1/bin/hotcode\n"), "{record}");
    let package = build.path().join("svc-3.tar.gz");
    let packed = crate::cli::hotcode(&[
        OsStr::new("release"),
        OsStr::new("tar"),
        b.as_os_str(),
        OsStr::new("3"),
        OsStr::new("--out"),
        package.as_os_str(),
    ]);
    assert_eq!(packed.code, Some(0), "{packed:?}");

    let scratch = scratch();
    let node = Node::boot(r, scratch.path());
    let old = Process::of(node.pid());
    let package_arg = package.to_str().expect("a UTF-8 path");
    let out = ctl_ok(r, &["unpack", package_arg]);
    assert!(out.contains("ok: unpacked release 3"), "{out}");
    let host = r.join("host-0.9.1/bin/hotcode");
    assert_eq!(fs::metadata(&host).expect("the host binary").permissions().mode() & 0o777, 0o755);
    let out = ctl_ok(r, &["install", "3"]);
    assert!(out.contains(r#"{continue_after_restart,"1",[]}"#), "{out}");
    let new = Process::of(pid_in(&out));
    old.wait_gone();
    assert_eq!(new.exe(), host.canonicalize().expect("host"));
    let up = node.next_line();
    assert!(up.contains("release svc 3"), "{up}");
    let answer = ctl_ok(r, &["call", "svc_handler", "\"INCR a\""]);
    assert_eq!(answer.trim(), "\"OK 1 v2\"");
    drop(new);
}

/// A plain `hotcode boot` whose permanent release names another host version runs that
/// release's binary from the root in its place, with the same arguments, once its digest
/// is the recorded one; a binary that does not match is refused before anything runs.
#[test]
fn a_plain_boot_runs_the_permanent_releases_own_host_binary() {
    let root = fixtures::service_root();
    let r = root.path();
    // Release 1 on host 0.9.2, whose "binary" says how it was run.
    let marker = r.join("ran-with");
    let script = format!("#!/bin/sh\necho \"$@\" > '{}'\nexit 0\n", marker.display());
    let bin_dir = r.join("host-0.9.2/bin");
    fs::create_dir_all(&bin_dir).expect("host dir");
    fs::write(bin_dir.join("hotcode"), &script).expect("host script");
    fs::set_permissions(bin_dir.join("hotcode"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let edit = |path: &Path| {
        let text = fs::read_to_string(path).expect("read");
        let text = text.replacen(&format!("\"{}\"", env!("CARGO_PKG_VERSION")), "\"0.9.2\"", 1);
        fs::write(path, text).expect("write");
    };
    edit(&r.join("releases/1/svc.rel"));
    edit(&r.join("releases/RELEASES"));
    let mut files: Vec<String> =
        ["svc_app", "svc_sup", "svc_handler"].iter().map(|m| format!("lib/svc-1/{m}.so")).collect();
    files.push("host-0.9.2/bin/hotcode".into());
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    fixtures::record_release(r, "1", &files);

    let boot = |extra: &str| {
        crate::cli::hotcode(&[
            std::ffi::OsStr::new("boot"),
            r.as_os_str(),
            std::ffi::OsStr::new(extra),
            std::ffi::OsStr::new("1s"),
        ])
    };
    let out = boot("--restart-timeout");
    assert_eq!(out.code, Some(0), "{out:?}");
    let ran = fs::read_to_string(&marker).expect("the host binary ran");
    assert_eq!(ran.trim(), format!("boot {} --restart-timeout 1s", r.display()));

    // Changed after it was recorded: refused, and not run.
    fs::remove_file(&marker).expect("rm marker");
    fs::write(bin_dir.join("hotcode"), script.replace("exit 0", "exit 1")).expect("tamper");
    let out = boot("--restart-timeout");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("the host binary of the permanent release 1"), "{out:?}");
    assert!(out.stderr.contains("differs from the recorded"), "{out:?}");
    assert!(!marker.exists(), "the changed binary did not run");
}

/// A node started the way systemd's socket activation starts one (`LISTEN_FDS`,
/// `LISTEN_PID`, `LISTEN_FDNAMES`, descriptors from 3) serves on the control socket it was
/// given instead of binding one, and leaves the socket file to its owner when it stops.
#[test]
fn a_node_serves_on_a_control_socket_the_service_manager_made() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::os::unix::process::CommandExt;
    let root = fixtures::service_root();
    let r = root.path();
    let socket = r.join("run/hotcode.sock");
    let listener = UnixListener::bind(&socket).expect("bind the control socket");
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).expect("chmod");
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=hotcode-control exec "$0" boot "$1""#)
        .arg(bin())
        .arg(r)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure only calls dup2(2) and fcntl(2), which are
    // async-signal-safe, on a descriptor that stays open in the parent meanwhile.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it then.
            let rc = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut guard = crate::cli::ChildGuard::spawn(&mut command);
    let stdout = guard.child.stdout.take().expect("stdout");
    let stderr = crate::cli::drain(guard.child.stderr.take().expect("stderr"));
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let Some(Ok(up)) = lines.next() else {
        guard.wait();
        panic!("no node up line; stderr:\n{}", stderr.join().expect("stderr"));
    };
    assert!(up.starts_with("hotcode: node up on"), "{up}");
    drop(listener);
    assert!(ctl_ok(r, &["status"]).starts_with("release: svc 1 (permanent)"));
    guard.signal(libc::SIGTERM);
    assert_eq!(guard.wait().code(), Some(0));
    let log = stderr.join().expect("stderr");
    assert!(log.contains("(inherited)"), "{log}");
    assert!(socket.exists(), "the service manager's socket file stays");
}
