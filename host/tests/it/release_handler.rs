//! The release handler in-process: both seed relups up and down on the example plugins,
//! and every way an install can be refused (each leaves the node serving and RELEASES
//! intact).

use std::path::Path;

use hotcode::release::files::ReleaseStatus;
use hotcode::release::{Direction, read_releases};
use hotcode::release_handler::{ErrorAction, ReleaseError, ReleaseHandler};
use hotcode::{RestartType, VersionInfo};
use plugin_api::Term;

use crate::{LONG, fixtures, mapped};

fn boot(root: &Path) -> ReleaseHandler {
    let _ = env_logger::builder().is_test(true).try_init();
    ReleaseHandler::boot(root, ErrorAction::Return).expect("boot A")
}

fn app_versions(h: &ReleaseHandler) -> Vec<(String, String)> {
    h.node().which_applications().into_iter().map(|a| (a.name, a.vsn)).collect()
}

fn current_of(h: &ReleaseHandler, module: &str) -> Option<VersionInfo> {
    h.node().code().status().modules.into_iter().find(|m| m.name == module).and_then(|m| m.current)
}

fn statuses(root: &Path) -> Vec<(String, ReleaseStatus)> {
    read_releases(&root.join("releases/RELEASES"))
        .expect("RELEASES parses")
        .into_iter()
        .map(|r| (r.vsn, r.status))
        .collect()
}

/// ch3 answers through its supervision tree.
fn ch3_serves(h: &ReleaseHandler) {
    let ch3 = h.node().processes_running("ch3");
    assert_eq!(ch3.len(), 1, "one ch3 process");
    let ch = h.node().call(ch3[0], Term::atom("alloc"), LONG).unwrap();
    assert!(matches!(ch, Term::Int(1..=100)), "{ch}");
    let freed = h.node().call(ch3[0], Term::tuple([Term::atom("free"), ch]), LONG).unwrap();
    assert_eq!(freed, Term::ok());
}

fn up_and_down(script: &str) {
    let root = fixtures::release_root(script);
    let h = boot(root.path());
    assert_eq!(app_versions(&h), [("prim_app".to_owned(), "1".to_owned())]);
    assert!(h.node().processes_running("ch3").is_empty());

    let installed = h.install("B").unwrap();
    assert_eq!((installed.from.as_str(), installed.direction), ("A", Direction::Up));
    assert_eq!(h.current(), "B");
    assert_eq!(app_versions(&h), [("prim_app".to_owned(), "2".to_owned())]);
    ch3_serves(&h);
    // The seed scripts load ch_sup and ch3; ch_app's callback module is never needed,
    // because an included application is never started by the controller.
    assert!(current_of(&h, "ch_app").is_none());
    let ch_libs: Vec<VersionInfo> =
        ["ch_sup", "ch3"].iter().map(|m| current_of(&h, m).expect("loaded")).collect();
    assert!(ch_libs.iter().all(mapped));
    assert_eq!(
        statuses(root.path()),
        [("A".into(), ReleaseStatus::Permanent), ("B".into(), ReleaseStatus::Unpacked)],
        "current is never written to disk"
    );

    h.make_permanent("B").unwrap();
    assert_eq!(
        statuses(root.path()),
        [("A".into(), ReleaseStatus::Old), ("B".into(), ReleaseStatus::Permanent)]
    );

    let back = h.install("A").unwrap();
    assert_eq!((back.from.as_str(), back.direction), ("B", Direction::Down));
    assert_eq!(app_versions(&h), [("prim_app".to_owned(), "1".to_owned())]);
    assert!(h.node().processes_running("ch3").is_empty(), "ch_app's processes are gone");
    assert!(!h.node().is_application_loaded("ch_app"), "ch_app is unloaded");
    for lib in &ch_libs {
        assert!(!mapped(lib), "{} left the address space", lib.copy.display());
    }
    h.make_permanent("A").unwrap();
    assert_eq!(
        statuses(root.path()),
        [("A".into(), ReleaseStatus::Permanent), ("B".into(), ReleaseStatus::Old)]
    );
}

#[test]
fn included_app_by_restarting_prim_app_up_and_down() {
    up_and_down("included-app-restart");
}

#[test]
fn included_app_by_changing_prim_sup_up_and_down() {
    up_and_down("included-app-supervisor");
}

#[test]
fn a_crash_during_install_boots_the_permanent_release_again() {
    let root = fixtures::release_root("included-app-supervisor");
    {
        let h = boot(root.path());
        h.install("B").unwrap();
        // The node "dies" here: nothing of the install was written to disk.
    }
    let h = boot(root.path());
    assert_eq!(h.current(), "A");
    assert_eq!(app_versions(&h), [("prim_app".to_owned(), "1".to_owned())]);
}

/// Asserts the node still runs A exactly as booted and RELEASES is untouched.
fn unchanged(h: &ReleaseHandler, root: &Path, releases_before: &[u8]) {
    assert_eq!(h.current(), "A");
    assert_eq!(app_versions(h), [("prim_app".to_owned(), "1".to_owned())]);
    let status = h.node().code().status();
    assert!(status.modules.iter().all(|m| m.staged.is_none()), "nothing left staged");
    let names: Vec<&str> = status.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["prim_app", "prim_sup"]);
    assert_eq!(std::fs::read(root.join("releases/RELEASES")).unwrap(), releases_before);
}

fn refused(script_edit: impl FnOnce(&Path), expect: &str) {
    let root = fixtures::release_root("included-app-supervisor");
    script_edit(root.path());
    let h = boot(root.path());
    let before = std::fs::read(root.path().join("releases/RELEASES")).unwrap();
    let check = h.check_install("B").unwrap_err().to_string();
    assert!(check.contains(expect), "check_install: expected {expect:?} in:\n{check}");
    let install = h.install("B").unwrap_err().to_string();
    assert!(install.contains(expect), "install: expected {expect:?} in:\n{install}");
    unchanged(&h, root.path(), &before);
}

fn edit_relup(root: &Path, from: &str, to: &str) {
    let path = root.join("releases/B/relup");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "the seed script contains {from}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_relup_with_a_syntax_error_names_its_position() {
    refused(
        |r| edit_relup(r, "point_of_no_return,", "point_of_no_return"),
        "releases/B/relup:8:1: expected ',' or ']'",
    );
}

#[test]
fn a_load_without_load_object_code_is_refused() {
    refused(
        |r| {
            edit_relup(
                r,
                "{load_object_code,{ch_app,\"1\",[ch_sup,ch3]}}",
                "{load_object_code,{ch_app,\"1\",[ch_sup]}}",
            )
        },
        "ch3",
    );
}

#[test]
fn load_object_code_after_the_point_of_no_return_is_refused() {
    refused(
        |r| edit_relup(r, "point_of_no_return,\n{load,{ch_sup", "{load,{ch_sup"),
        "point_of_no_return",
    );
}

#[test]
fn a_missing_module_file_in_the_target_release_is_refused() {
    refused(
        |r| std::fs::remove_file(r.join("lib/ch_app-1/ch3.so")).unwrap(),
        "lib/ch_app-1/ch3.so",
    );
}

#[test]
fn a_module_file_that_is_not_a_plugin_is_refused() {
    refused(
        |r| {
            std::fs::copy(fixtures::plugin("fixture-no-symbol"), r.join("lib/ch_app-1/ch3.so"))
                .unwrap();
        },
        "HOTCODE_MODULE",
    );
}

#[test]
fn an_unknown_apply_target_is_refused() {
    refused(
        |r| {
            edit_relup(
                r,
                "{apply,{supervisor,restart_child,[prim_sup,ch_sup]}}",
                "{apply,{ch3,reset,[]}}",
            )
        },
        "unknown apply target ch3:reset",
    );
}

#[test]
fn an_unknown_module_is_refused() {
    refused(
        |r| edit_relup(r, "{suspend,[prim_sup]}", "{suspend,[prim_sup,nosuch]}"),
        "unknown module nosuch",
    );
}

#[test]
fn an_unknown_application_version_is_refused() {
    refused(
        |r| edit_relup(r, "{load_object_code,{ch_app,\"1\",", "{load_object_code,{ch_app,\"9\","),
        "ch_app 9",
    );
}

#[test]
fn unknown_releases_and_removing_the_permanent_one_are_refused() {
    let root = fixtures::release_root("included-app-restart");
    let h = boot(root.path());
    let before = std::fs::read(root.path().join("releases/RELEASES")).unwrap();
    assert!(matches!(h.install("Z"), Err(ReleaseError::UnknownRelease { .. })));
    assert!(matches!(h.install("A"), Err(ReleaseError::AlreadyCurrent { .. })));
    assert!(matches!(h.remove("A"), Err(ReleaseError::RemovePermanent { .. })));
    assert!(matches!(h.make_permanent("B"), Err(ReleaseError::NotCurrent { .. })));
    assert!(matches!(h.reboot_old("B"), Err(ReleaseError::NotOld { .. })));
    unchanged(&h, root.path(), &before);
    // Removing B deletes its release directory and the libraries only it uses.
    h.remove("B").unwrap();
    assert_eq!(statuses(root.path()), [("A".into(), ReleaseStatus::Permanent)]);
    assert!(!root.path().join("releases/B").exists());
    assert!(!root.path().join("lib/ch_app-1").exists());
    assert!(root.path().join("lib/prim_app-1").exists());
}

#[test]
fn soft_purge_of_held_old_code_refuses_the_install() {
    let root = fixtures::release_root("included-app-supervisor");
    // Make the script soft-purge prim_sup, then hold prim_sup's old code with a process.
    edit_relup(
        root.path(),
        "{load,{prim_sup,brutal_purge,brutal_purge}}",
        "{load,{prim_sup,soft_purge,soft_purge}}",
    );
    let h = boot(root.path());
    let node = h.node();
    // Make the booted prim_sup old and keep it held: a thread parks inside it, then a fresh
    // load of the same file becomes current.
    let held = current_of(&h, "prim_sup").unwrap();
    node.code().load_object_code("prim_sup", &held.source).unwrap();
    let barrier = std::sync::Barrier::new(2);
    let handle = node.code().handle::<plugin_api::behaviour::SupervisorTable>("prim_sup").unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            handle.call(|t| {
                barrier.wait();
                barrier.wait();
                t.init(&Term::List(vec![]))
            })
        });
        barrier.wait();
        node.code()
            .load("prim_sup", hotcode::PurgeMethod::SoftPurge, hotcode::PurgeMethod::SoftPurge)
            .unwrap();
        let err = h.check_install("B").unwrap_err().to_string();
        assert!(err.contains("old_processes prim_sup"), "{err}");
        barrier.wait();
    });
}

#[test]
fn an_error_before_the_point_of_no_return_rolls_everything_back() {
    let root = fixtures::release_root("included-app-supervisor");
    // A file that passes the file checks (a real plugin) but is another module: the full
    // checks at load_object_code refuse it, after ch_sup was already staged.
    std::fs::copy(fixtures::plugin("greeter-v1"), root.path().join("lib/ch_app-1/ch3.so")).unwrap();
    let b = ["lib/prim_app-2/prim_app.so", "lib/prim_app-2/prim_sup.so", "lib/ch_app-1/ch_app.so"];
    fixtures::record_release(
        root.path(),
        "B",
        &[&b[..], &["lib/ch_app-1/ch_sup.so", "lib/ch_app-1/ch3.so"]].concat(),
    );
    let h = boot(root.path());
    let before = std::fs::read(root.path().join("releases/RELEASES")).unwrap();
    match h.install("B") {
        Err(ReleaseError::Load(e)) => assert!(e.to_string().contains("ch3.so"), "{e}"),
        other => panic!("expected a load error, got {other:?}"),
    }
    unchanged(&h, root.path(), &before);
    let scratch = h.node().code().scratch_dir().to_owned();
    let mapped = hotcode::code::maps::mapped_files_under(&scratch).unwrap();
    assert_eq!(mapped.len(), 2, "only prim_app and prim_sup stay mapped: {mapped:?}");
}

#[test]
fn a_failing_code_change_after_the_point_of_no_return_is_an_error() {
    let root = fixtures::release_root("included-app-supervisor");
    let r = root.path();
    // Release C: ch3 version 2, whose code_change succeeds once (the preflight, before
    // the point of no return) and fails after (the real migration).
    fixtures::add_ch3_v2_release(
        r,
        "{\"C\",\n [{\"B\", [],\n  [{load_object_code,{ch_app,\"2\",[ch3]}},\n   point_of_no_return,\n   \
         {suspend,[ch3]},\n   {load,{ch3,brutal_purge,brutal_purge}},\n   {code_change,up,[{ch3,fail_second}]},\n   \
         {resume,[ch3]}]}],\n [{\"B\", [], []}]}.\n",
    );
    let h = boot(r);
    h.install("B").unwrap();
    let ch3 = h.node().processes_running("ch3")[0];
    match h.install("C") {
        Err(ReleaseError::AfterPointOfNoReturn { at, instruction, reason }) => {
            assert!(at.ends_with("releases/C/relup:7:4"), "{at}");
            assert!(instruction.starts_with("{code_change,up"), "{instruction}");
            assert!(reason.contains("failed_the_second_time"), "{reason}");
        }
        other => panic!("expected an error after the point of no return, got {other:?}"),
    }
    assert_eq!(h.current(), "B", "the install did not complete");
    assert!(!h.node().is_alive(ch3), "the process whose code_change failed crashed");
    let _ = RestartType::Permanent;
}

#[test]
fn a_tampered_module_file_is_refused_naming_it_and_the_node_keeps_serving() {
    let root = fixtures::release_root("included-app-supervisor");
    let h = boot(root.path());
    let before = std::fs::read(root.path().join("releases/RELEASES")).unwrap();
    // One byte changed in B's ch3.
    let file = root.path().join("lib/ch_app-1/ch3.so");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    for err in [h.check_install("B").unwrap_err(), h.install("B").unwrap_err()] {
        let text = err.to_string();
        assert!(text.contains("lib/ch_app-1/ch3.so") && text.contains("SHA-256"), "{text}");
    }
    unchanged(&h, root.path(), &before);
}

#[test]
fn booting_a_release_with_a_tampered_module_fails_naming_the_file() {
    let root = fixtures::release_root("included-app-restart");
    let file = root.path().join("lib/prim_app-1/prim_sup.so");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let err = ReleaseHandler::boot(root.path(), ErrorAction::Return)
        .err()
        .expect("boot refused")
        .to_string();
    assert!(err.contains("prim_sup.so") && err.contains("SHA-256 mismatch"), "{err}");
}

#[test]
fn module_files_writable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = fixtures::release_root("included-app-supervisor");
    let h = boot(root.path());
    let file = root.path().join("lib/ch_app-1/ch3.so");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = h.install("B").unwrap_err().to_string();
    assert!(err.contains("ch3.so is writable by others"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.path().join("lib/ch_app-1");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).unwrap();
    let err = h.install("B").unwrap_err().to_string();
    assert!(err.contains("lib/ch_app-1 is writable by group"), "{err}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.install("B").unwrap();
}
