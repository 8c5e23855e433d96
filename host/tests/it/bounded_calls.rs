//! Plugin code that never returns is bounded: a looping `init`, `apply` or `terminate`
//! fails (or is given up on) after its timeout, names what overran, and the node goes on.
//! The looping code is `stubborn` waiting on a condition the test releases at the end, so
//! no thread is left behind.

use std::time::{Duration, Instant};

use hotcode::{Node, ProcessError, Timeouts};
use plugin_api::Term;

use crate::{LONG, fixtures, node_with, until_blocked};

const SHORT: Duration = Duration::from_millis(200);

fn stubborn_node() -> Node {
    node_with(&[
        ("stubborn", fixtures::plugin("fixture-stubborn")),
        ("flaky_sup", fixtures::plugin("fixture-flaky-sup")),
    ])
}

/// Runs `f` with the node's init and apply timeouts at [`SHORT`], then the defaults again:
/// only the call that never returns meets the short deadline, not the calls around it (on
/// a busy machine they could take that long).
fn with_short_timeouts<R>(node: &Node, f: impl FnOnce() -> R) -> R {
    node.set_timeouts(Timeouts { init: SHORT, apply: SHORT, ..Timeouts::default() });
    let r = f();
    node.set_timeouts(Timeouts::default());
    r
}

/// Lets every blocked stubborn call return (through the code server's own, unbounded
/// apply: release/0 returns at once).
fn release(node: &Node) {
    node.code().apply("stubborn", "release", vec![]).expect("release/0");
}

/// Waits (bounded) until no process is abandoned any more.
fn until_none_abandoned(node: &Node) {
    let deadline = Instant::now() + LONG;
    while !node.abandoned().is_empty() {
        assert!(Instant::now() < deadline, "still abandoned: {:?}", node.abandoned());
        std::thread::yield_now();
    }
}

#[test]
fn a_looping_init_fails_the_start_and_the_process_goes_when_init_returns() {
    let node = stubborn_node();
    let args = Term::list([Term::atom("block")]);
    match with_short_timeouts(&node, || node.start_gen_server("stubborn", args, Some("looper"))) {
        Err(ProcessError::Start { module, reason }) => {
            assert_eq!(module, "stubborn");
            assert_eq!(reason, Term::tuple([Term::atom("timeout"), Term::atom("init")]));
        }
        other => panic!("expected a start timeout, got {other:?}"),
    }
    let abandoned = node.abandoned();
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0].module, "stubborn");
    // The node serves meanwhile: another process starts and answers.
    let other = node.start_gen_server("stubborn", Term::List(vec![]), None).expect("start");
    assert_eq!(node.call(other, Term::atom("ping"), LONG).unwrap(), Term::atom("pong"));
    release(&node);
    until_none_abandoned(&node);
    assert!(node.whereis("looper").is_none(), "the late init did not make a process");
}

#[test]
fn a_looping_apply_is_an_error_naming_the_function() {
    let node = stubborn_node();
    let err = with_short_timeouts(&node, || node.apply("stubborn", "block", vec![])).unwrap_err();
    assert!(err.contains("stubborn:block did not return within 200ms"), "{err}");
    until_blocked(&node);
    release(&node);
}

#[test]
fn a_looping_terminate_is_given_its_shutdown_time_once() {
    let node = stubborn_node();
    // flaky_sup [leaf]: one stubborn worker with a 200 ms shutdown.
    let sup = node.start_supervisor("flaky_sup", Term::list([Term::atom("leaf")]), None).unwrap();
    let worker = node.which_children(sup).unwrap()[0].pid.expect("the worker runs");
    node.call(worker, Term::atom("block_terminate"), LONG).unwrap();
    let start = Instant::now();
    node.terminate_child(sup, "worker").expect("terminate_child");
    let abandoned = node.abandoned();
    assert_eq!(abandoned.iter().map(|a| a.pid).collect::<Vec<_>>(), [worker]);
    // A whole node shutdown does not wait for it again. (Before, it waited its 200 ms
    // twice here, then 5 s twice more in the node's own shutdown: well over the bound.)
    node.shutdown();
    // Generous: what it bounds is 200 ms once, where the old behaviour took over 10 s.
    assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
    assert_eq!(node.abandoned().len(), 1);
    release(&node);
    until_none_abandoned(&node);
}
