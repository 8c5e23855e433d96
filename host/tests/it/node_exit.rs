//! The node says why it exits (issue 12, "no silent failure"): `ROOT/run/last-exit`, written
//! by `hotcode boot` before it exits on purpose, printed by `hotcode ctl` when the node
//! hangs up without an answer, and logged by the next boot.
//!
//! The end-to-end case runs the real binary: an install whose relup fails after the point
//! of no return makes the node exit 3 (`error_action = restart`); the client prints the
//! node's reason; the node boots again on the permanent release. Every wait is on an event
//! (a process exit, a socket's answer, a pipe's end), with a deadline.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hotcode::control::{self, ControlError};
use hotcode::release_handler::EXIT_RESTART;
use hotcode::release_handler::last_exit::{self, Ending, ExitRecord};

use crate::cli::{DEADLINE, Node, ctl, ctl_ok, hotcode, releases, scratch};
use crate::fixtures;

/// B's relup: nothing `check` can refuse, and an apply that fails when it runs, after the
/// point of no return (prim_sup has no child `no_such_child`).
pub(crate) const FAILING_RELUP: &str = r#"%% The apply passes every check and fails when evaluated.
{"B",
 [{"A", [],
   [point_of_no_return,
    {apply, {supervisor, terminate_child, [prim_sup, no_such_child]}}]}],
 [{"A", [], []}]}.
"#;

/// The first line of `ROOT/run/last-exit`, split: `(unix ms, pid, ending)`.
fn record_head(root: &Path) -> (u128, u32, String) {
    let text = fs::read_to_string(root.join("run/last-exit")).expect("run/last-exit");
    let first = text.lines().next().expect("a first line");
    let fields: Vec<&str> = first.split(' ').collect();
    let [ms, pid, ending] = fields.as_slice() else { panic!("first line {first:?}") };
    (ms.parse().expect("ms"), pid.parse().expect("pid"), (*ending).to_owned())
}

#[test]
fn an_install_failing_past_the_point_of_no_return_exits_3_and_says_why_to_ctl_and_next_boot() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    fs::write(r.join("releases/B/relup"), FAILING_RELUP).expect("write B's relup");
    let scratch = scratch();
    let node = Node::boot(r, scratch.path());
    let pid = node.pid();
    assert!(node.up_line.ends_with("release prim A"), "{}", node.up_line);
    // Nothing check can see: the install is accepted.
    ctl_ok(r, &["check-install", "B"]);

    let before = SystemTime::now();
    let install = ctl(r, &["install", "B"]);
    // The node exited 3 to be restarted...
    let (status, node_stderr) = node.wait_exit_with_stderr();
    assert_eq!(status.code(), Some(EXIT_RESTART), "node stderr:\n{node_stderr}");
    // ...and the client said why, in the node's words, and failed.
    assert_eq!(install.code, Some(1), "{install:?}");
    assert_eq!(install.stdout, "", "{install:?}");
    let error: Vec<&str> =
        install.stderr.lines().filter(|l| !l.starts_with("hotcode: install B: [")).collect();
    let expected_head = format!(
        "hotcode: error: the node (pid {pid}) exited with code 3 before it answered; it recorded \
         why in {}:",
        r.join("run/last-exit").display()
    );
    assert_eq!(error.first().copied(), Some(expected_head.as_str()), "{}", install.stderr);
    let reason = error.get(1).copied().unwrap_or_default();
    for words in [
        "install of release B failed:",
        "{apply,{supervisor,terminate_child,[prim_sup,no_such_child]}} failed after the point \
         of no return",
        "not_found",
        "the node exits with 3 so that its service manager restarts it on the permanent release A",
    ] {
        assert!(reason.contains(words), "ctl's reason should say {words:?}: {}", install.stderr);
    }
    // The node logged the same at error level.
    assert!(
        node_stderr.contains(&format!("ERROR hotcode::release_handler] {reason}")),
        "{node_stderr}"
    );

    // The record: written by that node after the request began, private, the same reason.
    let (ms, writer, ending) = record_head(r);
    assert_eq!((writer, ending.as_str()), (pid, "3"));
    assert!(ms >= before.duration_since(UNIX_EPOCH).expect("after 1970").as_millis());
    let mode = fs::metadata(r.join("run/last-exit")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let record = last_exit::read(r).expect("read").expect("a record");
    assert_eq!(record.reason, reason);

    // Booted again (as a service manager would): the permanent release runs, the failed
    // one is unpacked, and the boot says why the previous node exited.
    let node = Node::boot(r, scratch.path());
    assert!(node.up_line.ends_with("release prim A"), "{}", node.up_line);
    assert_eq!(
        releases(r),
        [("A".to_owned(), "permanent".to_owned()), ("B".to_owned(), "unpacked".to_owned())]
    );
    assert!(ctl_ok(r, &["status"]).starts_with("release: prim A (permanent)"));
    let second = node.pid();
    let (status, stderr) = node.terminate_with_stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let told = format!("the previous node (pid {pid}) exited with code 3, ");
    let line = stderr
        .lines()
        .find(|l| l.contains(&told))
        .unwrap_or_else(|| panic!("the boot should log the previous exit ({told:?}):\n{stderr}"));
    assert!(line.contains(" WARN ") && line.ends_with(reason), "{line}");
    // And this node's own exit, on SIGTERM, is the last one now.
    let (_, writer, ending) = record_head(r);
    assert_eq!((writer, ending.as_str()), (second, "0"));
    assert_eq!(last_exit::read(r).expect("read").expect("a record").reason, "stopped by SIGTERM");
}

#[test]
fn a_boot_that_fails_records_why() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path();
    let releases = r.join("releases/RELEASES");
    fs::write(&releases, "not a term {{{\n").expect("garbage RELEASES");
    let out = hotcode(&[OsStr::new("boot"), r.as_os_str()]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let record = last_exit::read(r).expect("read").expect("a record");
    assert_eq!(record.ending, Ending::Exited(1));
    assert!(record.reason.starts_with("hotcode boot failed: cannot boot the permanent release"));
    assert!(record.reason.contains(&releases.display().to_string()), "{}", record.reason);

    // A second node that finds the root locked writes nothing: the record is the first's.
    let _lock = hotcode::control::RootLock::acquire(r).expect("lock");
    let before = fs::read(r.join("run/last-exit")).expect("record");
    let refused = hotcode(&[OsStr::new("boot"), r.as_os_str()]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert_eq!(fs::read(r.join("run/last-exit")).expect("record"), before);
}

/// A stand-in node in this process: it reads one request, runs `then` (writing an exit
/// record, as a node that exits does), and closes without answering. Its pid is this
/// process's, as the client sees it.
fn hang_up_once(
    listener: &UnixListener,
    then: impl FnOnce() + Send + 'static,
) -> thread::JoinHandle<()> {
    let listener = listener.try_clone().expect("clone listener");
    thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).expect("request");
        assert_eq!(line, "install\tB\n");
        then();
    })
}

/// What a stand-in does before it hangs up.
type Then = Box<dyn FnOnce() + Send>;

/// The client believes a record only from the node it talked to, written after its request
/// began, in a file of the node's own that others cannot write.
#[test]
fn ctl_believes_only_a_fresh_trusted_record_of_its_own_node() {
    let root = fixtures::release_root("included-app-restart");
    let r = root.path().to_owned();
    let listener = UnixListener::bind(r.join("run/hotcode.sock")).expect("bind");
    let install = || control::request(&r, &["install".to_owned(), "B".to_owned()]);
    let me = std::process::id();
    /// Writes `record` when the stand-in hangs up.
    fn writing(root: &Path, record: ExitRecord) -> impl FnOnce() + Send + 'static {
        let root = root.to_owned();
        move || last_exit::write(&root, &record).expect("write record")
    }

    // What a node that exits on purpose leaves: believed, and its reason is returned.
    let stand_in = hang_up_once(&listener, {
        let root = r.clone();
        move || {
            let reason = "install of release B failed: \x1b[2Jcleared";
            last_exit::write(&root, &ExitRecord::exit_now(3, reason)).expect("write record");
        }
    });
    match install() {
        Err(ControlError::NodeExited { pid, code, reason, .. }) => {
            assert_eq!((pid, code), (me, 3));
            // Text to print: the escape sequence is shown, not obeyed.
            assert_eq!(reason, "install of release B failed: \\u{1b}[2Jcleared");
        }
        other => panic!("expected the node's reason, got {other:?}"),
    }
    stand_in.join().expect("stand-in");

    // Each of these is not believed, and the client says why not.
    let old = ExitRecord { at: UNIX_EPOCH + Duration::from_secs(1), ..ExitRecord::exit_now(3, "") };
    let cases: Vec<(&str, Then)> = vec![
        ("from before this request", Box::new(writing(&r, old))),
        (
            "not this node",
            Box::new(writing(&r, ExitRecord { pid: me + 1, ..ExitRecord::exit_now(3, "") })),
        ),
        ("recorded no exit", Box::new(writing(&r, ExitRecord::running_now()))),
        ("writable by others", {
            let record = r.join("run/last-exit");
            let write = writing(&r, ExitRecord::exit_now(3, "forged"));
            Box::new(move || {
                write();
                fs::set_permissions(&record, fs::Permissions::from_mode(0o602)).expect("chmod");
            })
        }),
        ("there is no", {
            let record = r.join("run/last-exit");
            Box::new(move || fs::remove_file(&record).expect("remove the record"))
        }),
    ];
    for (words, then) in cases {
        let stand_in = hang_up_once(&listener, then);
        match install() {
            Err(e @ ControlError::Protocol { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!(
                        "the node (pid {me}) closed the connection without answering; "
                    )),
                    "{text}"
                );
                assert!(text.contains(words), "{words:?}: {text}");
            }
            other => panic!("{words}: expected no belief, got {other:?}"),
        }
        stand_in.join().expect("stand-in");
    }
}
