//! Applications from their `.app` files, and the included-application example of the seed
//! documents: prim_sup 1 → 2 by code_change, restart_child of ch_sup, and back.

use hotcode::{AppError, ChangeMode, RestartType};
use plugin_api::Term;

use crate::{LONG, boot_app, fixtures, load_version, node_with};

#[test]
fn prim_app_1_starts_from_its_app_file() {
    let node = node_with(&[]);
    let spec = boot_app(&node, "prim_app-1");
    assert_eq!((spec.name.as_str(), spec.vsn.as_str()), ("prim_app", "1"));
    node.start_application("prim_app", RestartType::Permanent).unwrap();
    let apps = node.which_applications();
    assert_eq!(apps.len(), 1);
    let top = apps[0].top.expect("a top supervisor");
    assert_eq!(node.processes_running("prim_sup"), vec![top], "the tree is found by module");
    assert!(node.which_children(top).unwrap().is_empty(), "prim_sup 1 has no children");
    assert!(matches!(
        node.start_application("prim_app", RestartType::Permanent),
        Err(AppError::AlreadyStarted(_))
    ));
    assert!(matches!(node.unload_application("prim_app"), Err(AppError::Running(_))));
    node.stop_application("prim_app").unwrap();
    assert!(!node.is_alive(top));
    node.unload_application("prim_app").unwrap();
}

#[test]
fn an_included_application_is_loaded_but_not_started_by_the_controller() {
    let node = node_with(&[]);
    boot_app(&node, "prim_app-2");
    assert!(matches!(
        node.start_application("prim_app", RestartType::Permanent),
        Err(AppError::IncludedNotLoaded { .. })
    ));
    boot_app(&node, "ch_app-1");
    node.start_application("prim_app", RestartType::Permanent).unwrap();
    let names: Vec<String> = node.which_applications().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["prim_app"], "ch_app runs inside prim_app, not as an application");
    let ch3 = node.processes_running("ch3");
    assert_eq!(ch3.len(), 1, "ch3 found through prim_sup → ch_sup");
    assert_eq!(node.call(ch3[0], Term::atom("alloc"), LONG).unwrap(), Term::Int(1));
}

#[test]
fn prim_sup_code_change_adds_ch_sup_which_restart_child_starts_and_back() {
    let node = node_with(&[]);
    boot_app(&node, "prim_app-1");
    node.start_application("prim_app", RestartType::Permanent).unwrap();
    let prim_sup = node.processes_running("prim_sup")[0];

    // Up, as the seed's supervisor relup does it.
    boot_app(&node, "ch_app-1");
    node.suspend(prim_sup, LONG).unwrap();
    load_version(&node, "prim_sup", fixtures::module_lib("prim_app-2", "prim_sup"));
    node.change_code(prim_sup, ChangeMode::Up, Term::List(vec![]), LONG).unwrap();
    node.resume(prim_sup).unwrap();
    let children = node.which_children(prim_sup).unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!((children[0].id.as_str(), children[0].pid), ("ch_sup", None), "added, not started");
    let ch_sup = node.restart_child(prim_sup, "ch_sup").unwrap();
    let ch3 = node.processes_running("ch3");
    assert_eq!(ch3.len(), 1);
    assert_eq!(node.call(ch3[0], Term::atom("alloc"), LONG).unwrap(), Term::Int(1));
    assert!(node.processes_running("ch_sup").contains(&ch_sup));

    // Down.
    node.terminate_child(prim_sup, "ch_sup").unwrap();
    node.delete_child(prim_sup, "ch_sup").unwrap();
    node.suspend(prim_sup, LONG).unwrap();
    load_version(&node, "prim_sup", fixtures::module_lib("prim_app-1", "prim_sup"));
    node.change_code(prim_sup, ChangeMode::Down, Term::List(vec![]), LONG).unwrap();
    node.resume(prim_sup).unwrap();
    assert!(node.which_children(prim_sup).unwrap().is_empty());
    assert!(!node.is_alive(ch_sup));
    assert!(!node.is_alive(ch3[0]));
    node.unload_application("ch_app").unwrap();
}
