//! Attacks on the control socket (`ROOT/run/hotcode.sock`) that `hotcode boot` and
//! `hotcode ctl` must refuse, each with a message naming what is wrong: a `run/` that is a
//! symbolic link or open to others, an impostor of another uid listening at the socket's
//! name, a second node on the same root, and a client that trickles its request.
//!
//! Cases that need another uid are exercised when the tests run as root (as in CI), by a
//! forked child that takes uid 65534 before it binds or connects a socket the test made; the
//! kernel records the credentials at `listen(2)` and `connect(2)`. Without root those cases
//! say so on stderr and check what they can.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cli::{self, ChildGuard, DEADLINE, Node, bin, ctl, ctl_ok, hotcode, scratch};
use crate::fixtures;

/// The uid of `nobody`, the other user of these attacks.
const NOBODY: u32 = 65534;

/// The answer an impostor gives, that a client must not believe.
const FORGED: &str = "ok: B is permanent\nOK\n";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// `hotcode boot ROOT`, which must fail at once: exit 1, no node, `words` on stderr.
fn assert_boot_refused(root: &Path, words: &str) {
    let out = hotcode(&[OsStr::new("boot"), root.as_os_str()]);
    assert_eq!(out.code, Some(1), "boot should be refused: {out:?}");
    assert!(!out.stdout.contains("node up"), "{out:?}");
    assert!(out.stderr.contains(words), "boot stderr should say {words:?}: {}", out.stderr);
}

/// `hotcode ctl ROOT make-permanent B`, which must fail without believing a forged answer.
fn assert_ctl_refused(root: &Path, words: &str) {
    let out = ctl(root, &["make-permanent", "B"]);
    assert_eq!(out.code, Some(1), "ctl should refuse: {out:?}");
    assert_eq!(out.stdout, "", "ctl believed something: {out:?}");
    assert!(out.stderr.contains(words), "ctl stderr should say {words:?}: {}", out.stderr);
}

/// A listener that answers every request with [`FORGED`], on a thread, counting the
/// requests it was sent. Stopped on drop.
struct Impostor {
    path: PathBuf,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Impostor {
    /// Serves `listener`, which clients reach at `path`.
    fn serve(listener: UnixListener, path: &Path) -> Impostor {
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(DEADLINE));
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                if line.ends_with('\n') {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let _ = stream.write_all(FORGED.as_bytes());
            }
        });
        Impostor { path: path.to_owned(), requests, stop, thread: Some(thread) }
    }

    /// How many whole requests it was sent.
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept; if the name is gone the thread stays parked until the test
        // process exits, which is harmless.
        if UnixStream::connect(&self.path).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// The socket address of `path`.
fn sockaddr(path: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: libc::sa_family_t::try_from(libc::AF_UNIX).expect("AF_UNIX"),
        sun_path: [0; 108],
    };
    assert!(bytes.len() < addr.sun_path.len(), "{} too long for a socket", path.display());
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = libc::c_char::from_ne_bytes([*from]);
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    (addr, libc::socklen_t::try_from(len).expect("socklen"))
}

/// A fresh Unix stream socket.
fn unix_socket() -> OwnedFd {
    // SAFETY: socket(2) takes no pointers; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Runs `action` in a forked child that has become `uid` (and its group), and waits for it;
/// `action` must return 0. The socket the test made before the fork is shared with the
/// child, so what the child binds, listens on or connects stays the test's, with the
/// child's credentials recorded in it.
fn as_uid(uid: u32, action: impl Fn() -> libc::c_int) {
    // SAFETY: the child of a threaded process may only make async-signal-safe calls: it
    // calls setgroups, setgid, setuid, `action` (bind, listen or connect on memory made
    // before the fork) and _exit, and allocates nothing.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: as above: plain system calls in the child, then _exit without unwinding
        // or running the parent's exit handlers.
        unsafe {
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(uid) == 0
                && libc::setuid(uid) == 0
                && action() == 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child, into a local int.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child as uid {uid} failed (status {status:#x})"
    );
}

/// A listener at `path`, bound and listening as `uid`.
fn listen_as(uid: u32, path: &Path) -> UnixListener {
    let fd = unix_socket();
    let (addr, len) = sockaddr(path);
    let raw = fd.as_raw_fd();
    as_uid(uid, || {
        // SAFETY: `addr` lives across the call and `len` is its used length; `raw` is open.
        unsafe {
            if libc::bind(raw, (&raw const addr).cast(), len) != 0 {
                return -1;
            }
            libc::listen(raw, 8)
        }
    });
    UnixListener::from(fd)
}

/// A stream connected to `path` as `uid`.
fn connect_as(uid: u32, path: &Path) -> UnixStream {
    let fd = unix_socket();
    let (addr, len) = sockaddr(path);
    let raw = fd.as_raw_fd();
    // SAFETY: `addr` lives across the call and `len` is its used length; `raw` is open.
    as_uid(uid, || unsafe { libc::connect(raw, (&raw const addr).cast(), len) });
    UnixStream::from(fd)
}

/// Reads what the node sends until it closes the connection (end of file, or a reset after
/// its answer), at most `DEADLINE`.
fn read_until_closed(stream: &mut UnixStream) -> String {
    stream.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading from the node: {e}"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn run_dir_as_a_symlink_is_refused_by_boot_and_ctl() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let run = r.join("run");
    // Someone else's directory, with an impostor listening where the socket would be.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    fs::remove_dir(&run).expect("remove run/");
    std::os::unix::fs::symlink(elsewhere.path(), &run).expect("symlink run/");
    let words = format!("{}: is a symbolic link", run.display());

    assert_boot_refused(r, &words);
    let names: Vec<_> = fs::read_dir(elsewhere.path()).expect("read target").collect();
    assert!(names.is_empty(), "boot made something in the link's target: {names:?}");

    let fake = elsewhere.path().join("hotcode.sock");
    let impostor = Impostor::serve(UnixListener::bind(&fake).expect("bind impostor"), &fake);
    assert_ctl_refused(r, &words);
    assert_eq!(impostor.requests(), 0, "ctl sent its request through the symlink");
}

#[test]
fn run_dir_open_to_others_is_refused_by_boot_and_ctl() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let run = r.join("run");
    chmod(&run, 0o777);
    let words = format!("{}: has mode 0777", run.display());
    assert_boot_refused(r, &words);
    assert_eq!(fs::metadata(&run).expect("run/").permissions().mode() & 0o777, 0o777);

    // Anyone could have put this listener there in the node's place.
    let fake = run.join("hotcode.sock");
    let impostor = Impostor::serve(UnixListener::bind(&fake).expect("bind impostor"), &fake);
    assert_ctl_refused(r, &words);
    assert_eq!(impostor.requests(), 0, "ctl sent its request into a world-writable run/");
    drop(impostor);
    fs::remove_file(&fake).expect("remove the impostor's socket");

    // A private directory of another user is not the node's either.
    if !is_root() {
        eprintln!("not root: cannot give run/ to another uid; that case is not exercised");
        return;
    }
    chmod(&run, 0o700);
    std::os::unix::fs::chown(&run, Some(NOBODY), Some(NOBODY)).expect("chown run/");
    assert_boot_refused(r, &format!("{}: is owned by uid {NOBODY}", run.display()));
    assert_ctl_refused(r, &format!("{}: is owned by uid {NOBODY}", run.display()));
}

#[test]
fn an_impostor_of_another_uid_is_not_believed() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let socket = r.join("run/hotcode.sock");
    if !is_root() {
        eprintln!(
            "not root: cannot run a listener as another uid, so the impostor case is not \
             exercised; checking only that a listener of our own uid is believed"
        );
        let own = Impostor::serve(UnixListener::bind(&socket).expect("bind"), &socket);
        assert_eq!(ctl_ok(r, &["make-permanent", "B"]), "ok: B is permanent\n");
        assert_eq!(own.requests(), 1);
        return;
    }
    // nobody binds its own socket in a directory of its own, and it ends up at the socket's
    // name (as if run/ had been open to it).
    chmod(r, 0o755);
    let den = r.join("den");
    fs::create_dir(&den).expect("den");
    std::os::unix::fs::chown(&den, Some(NOBODY), Some(NOBODY)).expect("chown den");
    let bound = den.join("hotcode.sock");
    let listener = listen_as(NOBODY, &bound);
    fs::rename(&bound, &socket).expect("move the impostor's socket into run/");
    let impostor = Impostor::serve(listener, &socket);

    // The attack itself works: a client that does not ask who answers believes this.
    let mut raw = UnixStream::connect(&socket).expect("connect to the impostor");
    raw.write_all(b"make-permanent\tB\n").expect("send");
    assert_eq!(read_until_closed(&mut raw), FORGED);
    assert_eq!(impostor.requests(), 1);

    let out = ctl(r, &["make-permanent", "B"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stdout, "", "ctl believed the impostor: {out:?}");
    let words = format!("{}: the process listening on it runs as uid {NOBODY}", socket.display());
    assert!(out.stderr.contains(&words), "{}", out.stderr);
    assert_eq!(impostor.requests(), 1, "ctl sent its request to the impostor");
}

#[test]
fn a_refused_uid_is_answered_before_it_sends_its_request() {
    if !is_root() {
        eprintln!(
            "not root: cannot connect as another uid; the refused-peer case is not exercised"
        );
        return;
    }
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let scratch = scratch();
    let node = Node::boot(r, scratch.path());
    // Loosen every door, so that only the node's own check stands.
    let socket = r.join("run/hotcode.sock");
    for (path, mode) in [(r.to_owned(), 0o755), (r.join("run"), 0o755), (socket.clone(), 0o666)] {
        chmod(&path, mode);
    }
    let mut stream = connect_as(NOBODY, &socket);
    // One byte of a request that never ends: before, the node waited for the rest (up to
    // 10 s per read) before it looked at who was asking.
    let start = Instant::now();
    let _ = stream.write_all(b"s");
    let answer = read_until_closed(&mut stream);
    let elapsed = start.elapsed();
    assert!(
        answer.starts_with(&format!("refused: uid {NOBODY} may not control this node")),
        "{answer:?}"
    );
    assert!(answer.ends_with("\nERR 1\n"), "{answer:?}");
    assert!(elapsed < hotcode::control::REQUEST_DEADLINE, "refused only after {elapsed:?}");
    eprintln!("refused peer answered and closed after {elapsed:?}");
    assert!(ctl_ok(r, &["status"]).starts_with("release: prim A"));
    assert_eq!(node.terminate().code(), Some(0));
}

#[test]
fn a_second_node_on_one_root_fails_at_once_naming_the_lock() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let scratch = scratch();
    let node = Node::boot(r, scratch.path());
    let releases = fs::read(r.join("releases/RELEASES")).expect("RELEASES");

    let second = hotcode(&[OsStr::new("boot"), r.as_os_str()]);
    assert_eq!(second.code, Some(1), "{second:?}");
    assert!(!second.stdout.contains("node up"), "{second:?}");
    let words = format!(
        "a node is already running on {} (another process holds the lock on {})",
        r.display(),
        r.join("run").display()
    );
    assert!(second.stderr.contains(&words), "{}", second.stderr);

    // The first is untouched and still serves.
    assert!(ctl_ok(r, &["status"]).starts_with("release: prim A (permanent)"));
    assert_eq!(fs::read(r.join("releases/RELEASES")).expect("RELEASES"), releases);
    assert_eq!(node.terminate().code(), Some(0));

    // The lock goes with the node: the root can be booted again.
    let again = Node::boot(r, scratch.path());
    assert_eq!(again.terminate().code(), Some(0));
}

#[test]
fn a_slow_client_is_cut_off_at_the_overall_deadline() {
    const DEADLINE_MS: u64 = 1000;
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let scratch = scratch();
    let mut guard = ChildGuard::spawn(
        Command::new(bin())
            .arg("boot")
            .arg(r)
            .env("TMPDIR", scratch.path())
            .env("HOTCODE_REQUEST_DEADLINE_MS", DEADLINE_MS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stderr = cli::drain(guard.child.stderr.take().expect("stderr"));
    let stdout = guard.child.stdout.take().expect("stdout");
    let (tx, up) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let up_line = up.recv_timeout(DEADLINE).expect("node up line");
    assert!(up_line.starts_with("hotcode: node up on "), "{up_line:?}");

    // One byte every 100 ms, never a newline: each read of the node returns well within a
    // per-read timeout, so only a deadline for the whole request ends this.
    let start = Instant::now();
    let mut slow = UnixStream::connect(r.join("run/hotcode.sock")).expect("connect");
    slow.write_all(b"s").expect("first byte");
    // Served beside the slow client, which holds one connection and nothing else.
    let status = thread::spawn({
        let r = r.to_owned();
        move || ctl(&r, &["status"])
    });
    slow.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut sent = 1;
    let closed_after = loop {
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_secs(15), "the node still reads after {elapsed:?}");
        match slow.read(&mut buf) {
            Ok(0) => break elapsed,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // A write after the node closed fails; the next read says so.
                if slow.write_all(b"s").is_ok() {
                    sent += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break elapsed,
            Err(e) => panic!("slow client: {e}"),
        }
    };
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("slow client cut off after {closed_after:?}, having sent {sent} bytes");
    assert!(closed_after >= Duration::from_millis(DEADLINE_MS), "{closed_after:?}");
    assert!(sent >= 3, "the client should have trickled bytes until the deadline: {sent}");
    assert_eq!(
        answer,
        format!("no complete request line within {DEADLINE_MS} ms\nERR 2\n"),
        "the node's parting answer"
    );

    let status = status.join().expect("ctl thread");
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(status.stdout.starts_with("release: prim A (permanent)"), "{status:?}");

    guard.signal(libc::SIGTERM);
    let code = guard.wait().code();
    let stderr = stderr.join().expect("stderr reader");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("no complete request line within"), "the node logs the cut: {stderr}");
}
