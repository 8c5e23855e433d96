//! gen_server processes: calls, state kept by the version that made it, code_change up and
//! down with a state layout change, suspend/resume, and the faults a caller can meet.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hotcode::{ChangeMode, CodeServerError, ProcessError, Purged};
use plugin_api::Term;

use crate::{LONG, SoftPurge, fixtures, load_version, node_with};

fn ch3_node() -> hotcode::Node {
    node_with(&[("ch3", fixtures::module_lib("ch_app-1", "ch3"))])
}

fn call(node: &hotcode::Node, dest: &str, request: Term) -> Term {
    node.call(dest, request, LONG).expect("call")
}

#[test]
fn a_gen_server_answers_calls_and_casts_in_its_current_version() {
    let node = ch3_node();
    let pid = node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).unwrap();
    assert_eq!(node.whereis("ch3"), Some(pid));
    assert_eq!(call(&node, "ch3", Term::atom("alloc")), Term::Int(1));
    assert_eq!(call(&node, "ch3", Term::atom("alloc")), Term::Int(2));
    node.cast("ch3", Term::tuple([Term::atom("free"), Term::Int(1)])).unwrap();
    assert_eq!(call(&node, "ch3", Term::atom("count")), Term::tuple([Term::Int(1), Term::Int(99)]));
    assert_eq!(
        node.get_state("ch3", LONG).unwrap().as_tuple().unwrap()[0],
        Term::list([Term::Int(2)])
    );
    assert_eq!(node.stop("ch3", Term::atom("normal"), LONG).unwrap(), Term::atom("normal"));
    assert!(!node.is_alive(pid));
}

#[test]
fn suspend_code_change_with_extra_resume_then_down_again() {
    let node = ch3_node();
    node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).unwrap();
    for _ in 0..3 {
        call(&node, "ch3", Term::atom("alloc")); // channels 1, 2, 3
    }
    call(&node, "ch3", Term::tuple([Term::atom("free"), Term::Int(2)]));

    // Upgrade: suspend, load v2 (new layout), code_change up with Extra, resume.
    node.suspend("ch3", LONG).unwrap();
    load_version(&node, "ch3", fixtures::plugin("fixture-ch3-v2"));
    let extra = Term::tuple([Term::atom("served"), Term::Int(40)]);
    node.change_code("ch3", ChangeMode::Up, extra, LONG).unwrap();
    node.resume("ch3").unwrap();
    assert_eq!(call(&node, "ch3", Term::atom("version")), Term::Int(2), "new code answers");
    assert_eq!(
        call(&node, "ch3", Term::atom("served")),
        Term::Int(40),
        "Extra reached code_change"
    );
    assert_eq!(call(&node, "ch3", Term::atom("count")), Term::tuple([Term::Int(2), Term::Int(98)]));
    assert_eq!(
        call(&node, "ch3", Term::atom("alloc")),
        Term::Int(2),
        "the freed channel 2, from v1's state"
    );
    let state = node.get_state("ch3", LONG).unwrap();
    assert!(state.as_tuple().unwrap()[0].is_atom("bitmap"), "v2's own state layout: {state}");

    // Downgrade: suspend, load v1, code_change down (v2 converts its bitmap to v1's lists).
    node.suspend("ch3", LONG).unwrap();
    load_version(&node, "ch3", fixtures::module_lib("ch_app-1", "ch3"));
    node.change_code("ch3", ChangeMode::Down, Term::List(vec![]), LONG).unwrap();
    node.resume("ch3").unwrap();
    assert_eq!(call(&node, "ch3", Term::atom("version")), Term::Int(1));
    assert_eq!(
        node.get_state("ch3", LONG).unwrap(),
        Term::tuple([Term::list([1, 2, 3].map(Term::Int)), Term::list((4..=100).map(Term::Int))])
    );
}

#[test]
fn a_downgrade_code_change_before_the_load_waits_for_it_as_systools_orders_it() {
    let node = ch3_node();
    node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).unwrap();
    load_version(&node, "ch3", fixtures::plugin("fixture-ch3-v2"));
    assert_eq!(call(&node, "ch3", Term::atom("version")), Term::Int(2), "implicit migration up");
    call(&node, "ch3", Term::atom("alloc"));
    node.suspend("ch3", LONG).unwrap();
    node.change_code("ch3", ChangeMode::Down, Term::List(vec![]), LONG).unwrap();
    load_version(&node, "ch3", fixtures::module_lib("ch_app-1", "ch3"));
    node.resume("ch3").unwrap();
    assert_eq!(call(&node, "ch3", Term::atom("version")), Term::Int(1));
    assert_eq!(call(&node, "ch3", Term::atom("count")), Term::tuple([Term::Int(1), Term::Int(99)]));
}

#[test]
fn the_first_callback_after_an_implicit_migration_gets_the_migrated_state() {
    // Regression: the state must be read after the migration, not before (a copy taken
    // before it is the old version's state, already dropped). Each first call after a
    // version change here uses the state. The migrations are v1 → v2, then v2 → a fresh
    // load of v2: implicit ones that each version can read (an implicit v2 → v1 is not:
    // that process would crash, as a downgrade needs an explicit down code_change).
    let node = ch3_node();
    node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).unwrap();
    call(&node, "ch3", Term::atom("alloc"));
    for round in 0..6 {
        load_version(&node, "ch3", fixtures::plugin("fixture-ch3-v2"));
        assert_eq!(
            call(&node, "ch3", Term::atom("alloc")),
            Term::Int(round + 2),
            "round {round}: the allocation sees every earlier one"
        );
    }
}

#[test]
fn an_impossible_implicit_migration_crashes_the_process_instead_of_misreading_state() {
    let node = ch3_node();
    let pid = node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).unwrap();
    load_version(&node, "ch3", fixtures::plugin("fixture-ch3-v2"));
    call(&node, "ch3", Term::atom("alloc"));
    // Back to v1 without a down code_change: v1 cannot read v2's exported state.
    load_version(&node, "ch3", fixtures::module_lib("ch_app-1", "ch3"));
    match node.call(pid, Term::atom("alloc"), LONG) {
        Err(ProcessError::Exited { reason, .. }) => {
            assert!(reason.to_string().contains("bad_state"), "{reason}")
        }
        other => panic!("expected the process to crash, got {other:?}"),
    }
}

#[test]
fn a_suspended_process_answers_only_system_messages_until_resumed() {
    let node = ch3_node();
    node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).unwrap();
    node.suspend("ch3", LONG).unwrap();
    let err = node.call("ch3", Term::atom("alloc"), Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, ProcessError::Timeout { .. }), "{err}");
    assert!(node.get_state("ch3", LONG).is_ok(), "system messages are still answered");
    node.resume("ch3").unwrap();
    // The timed-out request was queued and ran at resume; this one gets channel 2.
    assert_eq!(call(&node, "ch3", Term::atom("alloc")), Term::Int(2));
}

#[test]
fn a_process_state_holds_its_version_and_purge_kills_the_process() {
    let node = ch3_node();
    let pid = node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).unwrap();
    load_version(&node, "ch3", fixtures::plugin("fixture-ch3-v2"));
    let holders = node.code().holders("ch3").unwrap();
    let old = holders.old.expect("v1 is old and still held");
    assert_eq!(old.holders.len(), 1);
    assert_eq!(
        old.holders[0].process,
        Some(pid.id()),
        "held by the process's state, between calls"
    );
    match node.code().soft_purge("ch3") {
        Err(CodeServerError::OldProcesses { holders, .. }) => {
            assert!(holders[0].to_string().contains(&format!("process <{}>", pid.id())));
        }
        other => panic!("expected OldProcesses, got {other:?}"),
    }
    let v1 = old.version.clone();
    assert!(matches!(node.purge("ch3"), Purged::Pending { .. }));
    assert!(!node.is_alive(pid), "purge killed the process running old code");
    assert!(!crate::mapped(&v1), "and v1 went with it");
}

#[test]
fn several_threads_alloc_and_free_while_ch3_is_suspended_code_changed_and_resumed() {
    let node = ch3_node();
    node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).unwrap();
    let held: Mutex<HashSet<i64>> = Mutex::default();
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut problems = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let ch = match node.call("ch3", Term::atom("alloc"), LONG) {
                            Ok(Term::Int(ch)) => ch,
                            other => {
                                problems.push(format!("alloc: {other:?}"));
                                continue;
                            }
                        };
                        if !held.lock().unwrap().insert(ch) {
                            problems.push(format!("channel {ch} handed out twice"));
                        }
                        // Forget it before giving it back: once ch3 has it, it may hand it out.
                        held.lock().unwrap().remove(&ch);
                        let freed = node.call(
                            "ch3",
                            Term::tuple([Term::atom("free"), Term::Int(ch)]),
                            LONG,
                        );
                        match freed {
                            Ok(t) if t == Term::ok() => {}
                            other => problems.push(format!("free {ch}: {other:?}")),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    problems
                })
            })
            .collect();
        let v1 = fixtures::module_lib("ch_app-1", "ch3");
        let v2 = fixtures::plugin("fixture-ch3-v2");
        for round in 0..12 {
            let before = done.load(Ordering::Relaxed);
            node.suspend("ch3", LONG).unwrap();
            let (lib, mode) =
                if round % 2 == 0 { (&v2, ChangeMode::Up) } else { (&v1, ChangeMode::Down) };
            load_version(&node, "ch3", lib.clone());
            node.change_code("ch3", mode, Term::List(vec![]), LONG).unwrap();
            node.resume("ch3").unwrap();
            // Let the callers make progress in every version before the next change.
            while done.load(Ordering::Relaxed) < before + 3 {
                std::hint::spin_loop();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let problems = w.join().unwrap();
            assert!(problems.is_empty(), "{problems:?}");
        }
    });
    assert_eq!(
        call(&node, "ch3", Term::atom("count")),
        Term::tuple([Term::Int(0), Term::Int(100)])
    );
    let state = node.get_state("ch3", LONG).unwrap();
    assert_eq!(
        state,
        Term::tuple([Term::List(vec![]), Term::list((1..=100).map(Term::Int))]),
        "ch3's own books balance"
    );
    assert!(done.load(Ordering::Relaxed) >= 36);
}

#[test]
fn calls_to_unknown_or_dead_processes_fail_without_hanging() {
    let node = node_with(&[("stubborn", fixtures::plugin("fixture-stubborn"))]);
    assert!(matches!(
        node.call("nobody", Term::atom("ping"), LONG),
        Err(ProcessError::NoProc { .. })
    ));
    let pid = node.start_gen_server("stubborn", Term::List(vec![]), None).unwrap();
    assert_eq!(node.call(pid, Term::atom("ping"), LONG).unwrap(), Term::atom("pong"));
    // A call whose callback panics: the process crashes, the caller learns why.
    match node.call(pid, Term::atom("crash"), LONG) {
        Err(ProcessError::Exited { reason, .. }) => {
            assert!(reason.to_string().contains("asked to crash"), "{reason}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(!node.is_alive(pid));
    assert!(matches!(node.call(pid, Term::atom("ping"), LONG), Err(ProcessError::NoProc { .. })));
    // A process that does not answer in time.
    let pid = node.start_gen_server("stubborn", Term::List(vec![]), None).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| node.call(pid, Term::atom("block"), LONG));
        crate::until_blocked(&node);
        let err = node.call(pid, Term::atom("ping"), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { .. }), "{err}");
        node.code().apply("stubborn", "release", vec![]).unwrap();
    });
    assert_eq!(node.call(pid, Term::atom("ping"), LONG).unwrap(), Term::atom("pong"));
}

#[test]
fn init_failure_is_a_start_error() {
    let node = node_with(&[("stubborn", fixtures::plugin("fixture-stubborn"))]);
    let args = Term::list([Term::tuple([Term::atom("fail"), Term::atom("no_config")])]);
    match node.start_gen_server("stubborn", args, Some("s")) {
        Err(ProcessError::Start { module, reason }) => {
            assert_eq!((module.as_str(), reason), ("stubborn", Term::atom("no_config")));
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    assert_eq!(node.whereis("s"), None, "the name is free again");
    assert!(matches!(
        node.start_gen_server("ghost", Term::List(vec![]), None),
        Err(ProcessError::Start { .. })
    ));
    let _ = SoftPurge;
}
