//! Supervisors: restarts, intensity, shutdown and abandonment, child operations, and the
//! OTP way a supervisor's code_change updates its specs.

use std::time::Duration;

use hotcode::runtime::supervisor::ChildType;
use hotcode::{ChangeMode, ProcessError};
use plugin_api::Term;

use crate::{LONG, fixtures, mapped, node_with};

fn fault_node() -> hotcode::Node {
    node_with(&[
        ("stubborn", fixtures::plugin("fixture-stubborn")),
        ("flaky_sup", fixtures::plugin("fixture-flaky-sup")),
    ])
}

fn leaf() -> Term {
    Term::list([Term::atom("leaf")])
}

fn only_child(node: &hotcode::Node, sup: hotcode::Pid) -> hotcode::Pid {
    let children = node.which_children(sup).unwrap();
    assert_eq!(children.len(), 1);
    children[0].pid.expect("child running")
}

/// Waits (on the exit signal, not a sleep) until the supervisor has replaced `old`.
fn restarted(node: &hotcode::Node, sup: hotcode::Pid, old: hotcode::Pid) -> hotcode::Pid {
    node.wait_exit(old, LONG); // returns at once if it already exited
    for _ in 0..1_000_000 {
        let first = node.which_children(sup).ok().and_then(|c| c.first().and_then(|c| c.pid));
        if let Some(pid) = first
            && pid != old
        {
            return pid;
        }
        std::thread::yield_now();
    }
    panic!("{old} was not restarted");
}

#[test]
fn a_crashing_child_is_restarted_and_the_node_goes_on() {
    let node = fault_node();
    let sup = node.start_supervisor("flaky_sup", leaf(), Some("sup")).unwrap();
    let worker = only_child(&node, sup);
    assert!(matches!(
        node.call(worker, Term::atom("crash"), LONG),
        Err(ProcessError::Exited { .. })
    ));
    let again = restarted(&node, sup, worker);
    assert_eq!(node.call(again, Term::atom("ping"), LONG).unwrap(), Term::atom("pong"));
}

#[test]
fn exceeding_the_restart_intensity_makes_the_supervisor_give_up_and_its_parent_act() {
    let node = fault_node();
    let outer =
        node.start_supervisor("flaky_sup", Term::list([Term::atom("nested")]), None).unwrap();
    let inner = only_child(&node, outer);
    assert_eq!(node.which_children(outer).unwrap()[0].kind, ChildType::Supervisor);
    // Intensity is 2 restarts in 60 s: the third crash makes `inner` give up.
    let mut worker = only_child(&node, inner);
    for _ in 0..2 {
        let _ = node.call(worker, Term::atom("crash"), LONG);
        worker = restarted(&node, inner, worker);
    }
    let inner_exit = node.monitor(inner).expect("inner alive");
    let _ = node.call(worker, Term::atom("crash"), LONG);
    assert_eq!(inner_exit.wait(LONG), Some(Term::atom("shutdown")), "inner gave up");
    // The outer supervisor restarts the inner one, which starts a fresh worker.
    let inner2 = restarted(&node, outer, inner);
    let worker2 = only_child(&node, inner2);
    assert_eq!(node.call(worker2, Term::atom("ping"), LONG).unwrap(), Term::atom("pong"));
}

#[test]
fn a_child_that_ignores_terminate_is_abandoned_and_its_code_stays_mapped() {
    let node = fault_node();
    let sup = node.start_supervisor("flaky_sup", leaf(), None).unwrap();
    let worker = only_child(&node, sup);
    let stubborn =
        node.code().status().modules.iter().find(|m| m.name == "stubborn").unwrap().clone();
    let version = stubborn.current.unwrap();
    std::thread::scope(|s| {
        let blocked = s.spawn(|| node.call(worker, Term::atom("block"), LONG));
        // Make sure the call is inside the plugin before asking the child to stop.
        crate::until_blocked(&node);
        node.terminate_child(sup, "worker").unwrap(); // 200 ms shutdown, then a kill: both ignored
        let abandoned = node.abandoned();
        assert_eq!(abandoned.len(), 1, "{abandoned:?}");
        assert_eq!((abandoned[0].pid, abandoned[0].module.as_str()), (worker, "stubborn"));
        assert!(node.is_alive(worker));
        assert!(mapped(&version), "the abandoned thread's code stays mapped");
        let monitor = node.monitor(worker).expect("still alive");
        node.code().apply("stubborn", "release", vec![]).unwrap();
        assert_eq!(blocked.join().unwrap().unwrap(), Term::atom("released"));
        assert_eq!(monitor.wait(LONG), Some(Term::atom("killed")), "it ran into the kill at last");
    });
    assert!(node.abandoned().is_empty(), "gone from the abandoned list once it exited");
    assert_eq!(node.which_children(sup).unwrap()[0].pid, None, "terminate_child keeps the spec");
}

#[test]
fn restart_terminate_and_delete_child() {
    let node = fault_node();
    let sup = node.start_supervisor("flaky_sup", leaf(), None).unwrap();
    let worker = only_child(&node, sup);
    let err = node.restart_child(sup, "worker").unwrap_err();
    assert!(
        matches!(&err, ProcessError::Child { reason, .. } if reason.is_atom("running")),
        "{err}"
    );
    let err = node.delete_child(sup, "worker").unwrap_err();
    assert!(
        matches!(&err, ProcessError::Child { reason, .. } if reason.is_atom("running")),
        "{err}"
    );
    node.terminate_child(sup, "worker").unwrap();
    assert!(!node.is_alive(worker));
    let again = node.restart_child(sup, "worker").unwrap();
    assert_eq!(node.call(again, Term::atom("ping"), LONG).unwrap(), Term::atom("pong"));
    node.terminate_child(sup, "worker").unwrap();
    node.delete_child(sup, "worker").unwrap();
    assert!(node.which_children(sup).unwrap().is_empty());
    let err = node.restart_child(sup, "worker").unwrap_err();
    assert!(
        matches!(&err, ProcessError::Child { reason, .. } if reason.is_atom("not_found")),
        "{err}"
    );
    assert!(matches!(node.which_children(again), Err(ProcessError::NoProc { .. })));
}

#[test]
fn a_bad_child_spec_is_a_clear_error_and_code_change_keeps_the_old_specs() {
    let node = fault_node();
    node.code().apply("flaky_sup", "break_specs", vec![]).unwrap();
    match node.start_supervisor("flaky_sup", leaf(), None) {
        Err(ProcessError::Start { reason, .. }) => {
            let text = reason.to_string();
            assert!(text.contains("bad_start_spec") && text.contains("restart type"), "{text}");
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    node.code().apply("flaky_sup", "fix_specs", vec![]).unwrap();
    let sup = node.start_supervisor("flaky_sup", leaf(), None).unwrap();
    let before = node.which_children(sup).unwrap();
    node.code().apply("flaky_sup", "break_specs", vec![]).unwrap();
    let err = node.change_code(sup, ChangeMode::Up, Term::List(vec![]), LONG).unwrap_err();
    assert!(matches!(err, ProcessError::CodeChange { .. }), "{err}");
    assert_eq!(node.which_children(sup).unwrap(), before, "old specs kept, child still running");
    assert!(node.is_alive(sup));
    let _ = Duration::ZERO;
}
