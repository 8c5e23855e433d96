//! The code_change preflight: before the point of no return, every process the script
//! migrates has its state tried in the staged version; any failure refuses the install
//! with nothing changed (the process keeps its state and its version).

use std::path::Path;

use hotcode::release::Direction;
use hotcode::release_handler::{ErrorAction, ReleaseError, ReleaseHandler};
use plugin_api::Term;

use crate::{LONG, fixtures};

/// Release C's relup: up from B with `up_extra`, down to B with `down_extra` (systools'
/// order: the downgrade's code_change comes before its load).
fn relup(up_extra: &str, down_extra: &str) -> String {
    format!(
        "{{\"C\",\n [{{\"B\", [],\n  [{{load_object_code,{{ch_app,\"2\",[ch3]}}}},\n   point_of_no_return,\n   \
         {{suspend,[ch3]}},\n   {{load,{{ch3,brutal_purge,brutal_purge}}}},\n   {{code_change,up,[{{ch3,{up_extra}}}]}},\n   \
         {{resume,[ch3]}}]}}],\n [{{\"B\", [],\n  [{{load_object_code,{{ch_app,\"1\",[ch3]}}}},\n   point_of_no_return,\n   \
         {{suspend,[ch3]}},\n   {{code_change,down,[{{ch3,{down_extra}}}]}},\n   {{load,{{ch3,brutal_purge,brutal_purge}}}},\n   \
         {{resume,[ch3]}}]}}]}}.\n"
    )
}

/// A node on release B (ch3 version 1 serving) with release C unpacked.
fn node_on_b(root: &Path, up_extra: &str, down_extra: &str) -> ReleaseHandler {
    let _ = env_logger::builder().is_test(true).try_init();
    fixtures::add_ch3_v2_release(root, &relup(up_extra, down_extra));
    let h = ReleaseHandler::boot(root, ErrorAction::Return).expect("boot A");
    h.install("B").expect("install B");
    h
}

/// The one ch3 process, with three channels allocated.
fn ch3_with_channels(h: &ReleaseHandler) -> hotcode::Pid {
    let ch3 = h.node().processes_running("ch3");
    assert_eq!(ch3.len(), 1, "one ch3");
    for _ in 0..3 {
        h.node().call(ch3[0], Term::atom("alloc"), LONG).expect("alloc");
    }
    ch3[0]
}

fn ch3_vsn(h: &ReleaseHandler) -> Option<String> {
    h.node().code().current_vsn("ch3")
}

/// Asserts the install of `vsn` was refused by the preflight and left everything as it was.
fn refused_by_preflight(h: &ReleaseHandler, vsn: &str, want_direction: &str, want: &str) {
    let from = h.current();
    let ch3 = h.node().processes_running("ch3")[0];
    let vsn_before = ch3_vsn(h);
    let state_before = h.node().get_state(ch3, LONG).expect("state before");
    match h.install(vsn) {
        Err(ReleaseError::Preflight { process, module, direction, reason, .. }) => {
            assert_eq!(
                (process, module.as_str(), direction),
                (ch3.to_string(), "ch3", want_direction)
            );
            assert!(reason.contains(want), "{reason}");
        }
        other => panic!("expected a preflight refusal, got {other:?}"),
    }
    assert_eq!(h.current(), from, "the node stays on its release");
    assert!(h.node().is_alive(ch3), "the process was not touched");
    assert_eq!(ch3_vsn(h), vsn_before, "no version switched");
    assert_eq!(h.node().get_state(ch3, LONG).expect("state after"), state_before, "state intact");
    let status = h.node().code().status();
    assert!(status.modules.iter().all(|m| m.staged.is_none()), "everything staged was dropped");
    // And it serves.
    assert!(matches!(h.node().call(ch3, Term::atom("alloc"), LONG), Ok(Term::Int(_))));
}

#[test]
fn a_failing_or_panicking_upgrade_code_change_is_refused_before_the_point_of_no_return() {
    for (extra, want) in [("fail", "asked_to_fail"), ("panic", "code_change asked to panic")] {
        let root = fixtures::release_root("included-app-supervisor");
        let h = node_on_b(root.path(), extra, "[]");
        ch3_with_channels(&h);
        refused_by_preflight(&h, "C", "up", want);
        assert_eq!(ch3_vsn(&h).as_deref(), Some("1"));
    }
}

/// Installs C with a good upgrade, so that the downgrade can be tried.
fn node_on_c(root: &Path, down_extra: &str) -> ReleaseHandler {
    let h = node_on_b(root, "[]", down_extra);
    ch3_with_channels(&h);
    let installed = h.install("C").expect("install C");
    assert_eq!(installed.direction, Direction::Up);
    assert_eq!(ch3_vsn(&h).as_deref(), Some("2"));
    h
}

#[test]
fn a_forgotten_downgrade_state_is_refused_and_the_node_stays_on_the_new_release() {
    let root = fixtures::release_root("included-app-supervisor");
    let h = node_on_c(root.path(), "forget");
    // Version 1 refuses version 2's state format: caught before anything changed.
    refused_by_preflight(&h, "B", "down", "bad_state");
    assert_eq!(ch3_vsn(&h).as_deref(), Some("2"));
}

#[test]
fn a_panicking_or_undecodable_downgrade_is_refused() {
    for (extra, want) in [("panic", "downgrade_state asked to panic"), ("deep", "undecodable")] {
        let root = fixtures::release_root("included-app-supervisor");
        let h = node_on_c(root.path(), extra);
        refused_by_preflight(&h, "B", "down", want);
    }
}

#[test]
fn a_good_downgrade_migrates_during_the_install_not_at_the_next_call() {
    let root = fixtures::release_root("included-app-supervisor");
    let h = node_on_c(root.path(), "[]");
    let ch3 = h.node().processes_running("ch3")[0];
    h.install("B").expect("downgrade to B");
    assert_eq!(ch3_vsn(&h).as_deref(), Some("1"));
    // Version 1's format, already: the state moved inside the install.
    let state = h.node().get_state(ch3, LONG).expect("state");
    let [allocated, _free] = state.as_tuple().expect("{Allocated, Free}") else {
        panic!("version 1's state is {{Allocated, Free}}, got {state}");
    };
    assert_eq!(allocated.as_list().map(<[Term]>::len), Some(3), "{state}");
}

#[test]
fn processes_the_script_stops_before_the_load_are_restarted_not_migrated() {
    // restart_application's way, for one module: stop, load, start. The preflight leaves
    // ch3 alone (its state is not migrated), and the end-of-script check does not take
    // its deliberate stop for a lost state.
    let root = fixtures::release_root("included-app-supervisor");
    let _ = env_logger::builder().is_test(true).try_init();
    fixtures::add_ch3_v2_release(
        root.path(),
        "{\"C\",\n [{\"B\", [],\n  [{load_object_code,{ch_app,\"2\",[ch3]}},\n   point_of_no_return,\n   \
         {stop,[ch3]},\n   {load,{ch3,brutal_purge,brutal_purge}},\n   {start,[ch3]}]}],\n [{\"B\", [], []}]}.\n",
    );
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot A");
    h.install("B").expect("install B");
    let before = ch3_with_channels(&h);
    h.install("C").expect("install C");
    assert_eq!(ch3_vsn(&h).as_deref(), Some("2"));
    let after = h.node().whereis("ch3").expect("ch3 restarted");
    assert_ne!(after, before, "a new process");
    assert_eq!(
        h.node().call(after, Term::atom("served"), LONG).expect("served"),
        Term::Int(0),
        "a fresh state"
    );
}
