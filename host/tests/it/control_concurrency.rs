//! The control socket serves read-only requests while a release operation runs, runs
//! release operations one at a time in arrival order, and refuses connections beyond its
//! limit with a reason.
//!
//! The node runs in this process (a [`ReleaseHandler`] behind a real [`Control`] socket) so
//! that the test can hold an install open for as long as it needs: release B's relup
//! applies `stubborn:block/0` after the point of no return, which waits inside the plugin
//! until the test applies `stubborn:release/0` itself. Clients are the real `hotcode ctl`
//! binary or [`control::request`]. Every wait is on an event (a progress line, a socket's
//! answer, a counter the plugin keeps), with a deadline; nothing sleeps to synchronise.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use hotcode::control::{self, Control, MAX_CONNECTIONS, RootLock, ServeExit};
use hotcode::release_handler::{ErrorAction, ReleaseHandler};
use plugin_api::Term;

use crate::cli::{DEADLINE, ctl};
use crate::fixtures;

/// B's relup: stage and load `stubborn` (shipped in B's ch_app 1), then block in it after
/// the point of no return until the test releases it.
const BLOCKING_RELUP: &str = r#"{"B",
 [{"A", [],
   [{load_object_code, {ch_app, "1", [stubborn]}},
    point_of_no_return,
    {load, {stubborn, brutal_purge, brutal_purge}},
    {apply, {stubborn, block, []}}]}],
 [{"A", [], []}]}.
"#;

/// The included-application root, with `stubborn` in B (recorded in B's integrity record)
/// and [`BLOCKING_RELUP`] as B's relup.
fn blocking_root() -> tempfile::TempDir {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    fs::copy(fixtures::plugin("fixture-stubborn"), r.join("lib/ch_app-1/stubborn.so"))
        .expect("copy stubborn");
    // A module is staged only if its application lists it.
    let app = r.join("lib/ch_app-1/ch_app.app");
    let spec = fs::read_to_string(&app).expect("read ch_app.app");
    let listed = spec.replace("ch3]", "ch3, stubborn]");
    assert_ne!(spec, listed, "ch_app.app lists ch3 last");
    fs::write(&app, listed).expect("write ch_app.app");
    fixtures::record_release(
        r,
        "B",
        &[
            "lib/prim_app-2/prim_app.so",
            "lib/prim_app-2/prim_sup.so",
            "lib/ch_app-1/ch_app.so",
            "lib/ch_app-1/ch_sup.so",
            "lib/ch_app-1/ch3.so",
            "lib/ch_app-1/stubborn.so",
        ],
    );
    fs::write(r.join("releases/B/relup"), BLOCKING_RELUP).expect("write B's relup");
    root
}

/// `fields` as a request.
fn fields(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `control::request` that must be answered; the lines and the code.
fn ask(root: &Path, words: &[&str]) -> (Vec<String>, i32) {
    control::request(root, &fields(words)).unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// Asks for `status` until `done` holds for its lines (each ask is answered by the node:
/// this waits on answers, not on time), at most `DEADLINE`.
fn status_until(root: &Path, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (lines, code) = ask(root, &["status"]);
        assert_eq!(code, 0, "{lines:?}");
        if done(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "status never showed {what}: {lines:#?}");
    }
}

/// Until the plugin says one `block` waits inside it (its `waiting/0`), at most `DEADLINE`.
fn until_blocked(handler: &ReleaseHandler) {
    let deadline = Instant::now() + DEADLINE;
    while handler.node().code().apply("stubborn", "waiting", vec![]).expect("waiting/0")
        != Term::Int(1)
    {
        assert!(Instant::now() < deadline, "the install never blocked in stubborn:block/0");
        thread::yield_now();
    }
}

/// A node on `root` in this process, serving its control socket on a scoped thread while
/// `body` runs; `body` gets the handler and the stop flag. Returns how `serve` ended.
fn with_node(root: &Path, body: impl FnOnce(&ReleaseHandler, &AtomicBool)) -> ServeExit {
    let _ = env_logger::builder().is_test(true).try_init();
    let lock = RootLock::acquire(root).expect("lock the root");
    let control =
        Control::bind(&lock).expect("bind the control socket").with_request_deadline(DEADLINE);
    let handler = ReleaseHandler::boot(root, ErrorAction::Return).expect("boot A");
    let stop = AtomicBool::new(false);
    let exit = thread::scope(|s| {
        let server = s.spawn(|| control.serve(&handler, &stop));
        {
            // Set even if `body` fails, or the scope would wait for the server for ever.
            let _stop = StopOnDrop(&stop);
            body(&handler, &stop);
        }
        server.join().expect("serve thread")
    });
    handler.node().shutdown();
    exit.expect("serve")
}

/// Sets the stop flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Lets a blocked `stubborn:block/0` return when dropped, so that a failing test does not
/// leave the install (and the scope waiting for it) hanging.
struct Unblock<'a>(&'a ReleaseHandler);

impl Unblock<'_> {
    /// Lets it return now.
    fn now(&self) {
        self.0.node().code().apply("stubborn", "release", vec![]).expect("release/0");
    }
}

impl Drop for Unblock<'_> {
    fn drop(&mut self) {
        let _ = self.0.node().code().apply("stubborn", "release", vec![]);
    }
}

/// Starts `install B` on a thread and returns once the install is blocked inside
/// `stubborn:block/0`, past its point of no return.
fn start_blocked_install<'s>(
    s: &'s thread::Scope<'s, '_>,
    root: &'s Path,
    handler: &ReleaseHandler,
) -> thread::ScopedJoinHandle<'s, Result<(Vec<String>, i32), control::ControlError>> {
    let (steps, progress) = mpsc::channel();
    let install = s.spawn(move || {
        control::request_with_progress(root, &fields(&["install", "B"]), &mut |step| {
            let _ = steps.send(step.to_owned());
        })
    });
    loop {
        let step = progress.recv_timeout(DEADLINE).expect("a progress line of install B");
        if step.ends_with("{apply,{stubborn,block,[]}}") {
            break;
        }
    }
    until_blocked(handler);
    install
}

#[test]
fn status_answers_while_an_install_is_blocked_and_operations_wait_their_turn() {
    let root = blocking_root();
    let r = root.path();
    let exit = with_node(r, |handler, _| {
        thread::scope(|s| {
            let install = start_blocked_install(s, r, handler);
            let unblock = Unblock(handler);

            // Read-only requests answer at once, through the real client: the install has
            // not finished, so A is still the release, and the install is listed.
            let status = ctl(r, &["status"]);
            assert_eq!(status.code, Some(0), "{status:?}");
            let lines: Vec<&str> = status.stdout.lines().collect();
            assert_eq!(lines[0], "release: prim A (permanent)", "{}", status.stdout);
            assert!(lines[1].starts_with("operation: install B (running for "), "{lines:?}");
            let listed = ctl(r, &["which-releases"]);
            assert_eq!(listed.code, Some(0), "{listed:?}");
            assert!(listed.stdout.contains(" B unpacked "), "{}", listed.stdout);

            // A release operation waits its turn: make-permanent B, which would be refused
            // if it ran now (B is not current until the install ends).
            let permanent = s.spawn(|| ctl(r, &["make-permanent", "B"]));
            status_until(r, "make-permanent B waiting", |lines| {
                lines.iter().any(|l| l == "  waiting: make-permanent B")
            });

            // Let the install go.
            unblock.now();
            let (lines, code) = install.join().expect("install thread").expect("install B");
            assert_eq!(
                (lines.join("\n"), code),
                ("ok: installed B (upgrade from A): {ok,\"A\",[]}".to_owned(), 0)
            );
            // Then, and only then, the operation that waited ran: B was current by then.
            let permanent = permanent.join().expect("make-permanent thread");
            assert_eq!(permanent.code, Some(0), "{permanent:?}");
            assert_eq!(permanent.stdout, "ok: B is permanent\n");
            let status = status_until(r, "an idle queue", |_| true);
            assert_eq!(status[0], "release: prim B (permanent)");
            assert!(!status.iter().any(|l| l.starts_with("operation: ")), "{status:?}");
        });
    });
    assert_eq!(exit, ServeExit::Stopped);
}

#[test]
fn a_stopping_node_finishes_the_running_operation_and_starts_no_waiting_one() {
    let root = blocking_root();
    let r = root.path();
    let exit = with_node(r, |handler, stop| {
        thread::scope(|s| {
            let install = start_blocked_install(s, r, handler);
            let unblock = Unblock(handler);
            let check = s.spawn(|| ask(r, &["check-install", "B"]));
            status_until(r, "check-install B waiting", |lines| {
                lines.iter().any(|l| l == "  waiting: check-install B")
            });
            stop.store(true, Ordering::SeqCst);
            unblock.now();
            // The install was not cut short...
            let (_, code) = install.join().expect("install thread").expect("install B");
            assert_eq!(code, 0);
            // ...and what waited was refused, not started.
            let (lines, code) = check.join().expect("check thread");
            assert_eq!(
                (lines, code),
                (vec!["the node is stopping; check-install B was not started".to_owned()], 1)
            );
        });
    });
    assert_eq!(exit, ServeExit::Stopped);
}

#[test]
fn connections_beyond_the_limit_are_refused_with_a_reason() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    with_node(r, |_, _| {
        // Connections that send nothing: each holds a place until its request deadline.
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| UnixStream::connect(r.join("run/hotcode.sock")).expect("connect"))
            .collect();
        // The node takes connections in order, so all of those hold their places now.
        let (lines, code) = ask(r, &["status"]);
        assert_eq!(code, 1, "{lines:?}");
        assert_eq!(
            lines,
            [format!(
                "busy: the node is serving {MAX_CONNECTIONS} connections already, the most it \
                 takes at once; try again when one has finished (`status` lists the release \
                 operations running and waiting)"
            )]
        );
        // An idle client that ends its request gets its answer; its place is free by the
        // time its connection closes.
        for mut stream in idle {
            stream.write_all(b"status").expect("write");
            stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("answer");
            assert!(answer.starts_with("request line not ended by a newline\n"), "{answer}");
        }
        let (lines, code) = ask(r, &["status"]);
        assert_eq!(code, 0, "{lines:?}");
    });
}
