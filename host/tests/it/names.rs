//! Registered names, OTP's way: the module's own `local_name` (its `start_link({local,
//! Name}, ...)`) decides for the children a supervisor starts; a direct start names the
//! process itself (or not at all); a taken name fails the start with `{already_started,
//! Pid}`; a name is free again when its process exits and taken again on restart.

use hotcode::ProcessError;
use hotcode::release_handler::{ErrorAction, ReleaseHandler};
use plugin_api::Term;

use crate::{LONG, fixtures};

#[test]
fn the_seed_example_registers_prim_sup_ch_sup_and_ch3_as_otp_does() {
    let _ = env_logger::builder().is_test(true).try_init();
    let root = fixtures::release_root("included-app-supervisor");
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot A");
    let node = h.node();
    assert!(node.whereis("prim_sup").is_some(), "prim_sup registers in A");
    assert_eq!(node.whereis("ch3"), None, "no ch3 in A");
    h.install("B").expect("install B");
    let ch3 = node.whereis("ch3").expect("ch3 registered in B");
    let ch_sup = node.whereis("ch_sup").expect("ch_sup registered in B");
    assert_eq!(node.processes_running("ch3"), [ch3]);
    // Reached by its name, as the OTP docs' client `ch3:alloc()` does.
    assert!(matches!(node.call("ch3", Term::atom("alloc"), LONG), Ok(Term::Int(_))));
    let names: Vec<(String, String)> =
        node.processes().into_iter().filter_map(|p| p.name.map(|n| (n, p.module))).collect();
    for (name, module) in [("prim_sup", "prim_sup"), ("ch_sup", "ch_sup"), ("ch3", "ch3")] {
        assert!(names.contains(&(name.to_owned(), module.to_owned())), "{names:?}");
    }

    // A second start under the taken name fails with OTP's answer.
    match node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")) {
        Err(ProcessError::Start { reason, .. }) => assert_eq!(
            reason,
            Term::tuple([Term::atom("already_started"), Term::Str(ch3.to_string())])
        ),
        other => panic!("expected already_started, got {other:?}"),
    }

    // Free again when it exits; taken again by its restart.
    node.terminate_child(ch_sup, "ch3").expect("terminate_child");
    assert_eq!(node.whereis("ch3"), None);
    let again = node.restart_child(ch_sup, "ch3").expect("restart_child");
    assert_ne!(again, ch3);
    assert_eq!(node.whereis("ch3"), Some(again));

    // A direct start (gen_server:start_link/3, not the module's start_link) registers
    // nothing unless asked to.
    let anonymous = node.start_gen_server("ch3", Term::List(vec![]), None).expect("start");
    assert!(node.processes().iter().any(|p| p.pid == anonymous && p.name.is_none()));
    node.stop(anonymous, Term::atom("normal"), LONG).expect("stop");

    h.install("A").expect("back to A");
    assert_eq!(node.whereis("ch3"), None, "ch3 gone with ch_app");
    assert_eq!(node.whereis("ch_sup"), None);
    assert!(matches!(
        node.call("ch3", Term::atom("alloc"), LONG),
        Err(ProcessError::NoProc { .. })
    ));
}
