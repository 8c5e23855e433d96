//! `make_relup` on the example applications' appups: the scripts it writes are the ones
//! people wrote by hand, pass the checks, and upgrade and downgrade the running examples.

use std::path::Path;

use hotcode::release::make_relup::{make_relup, relup_path, write_relup};
use hotcode::release::{Instruction, Relup, read_relup};
use hotcode::release_handler::{ErrorAction, ReleaseHandler};
use hotcode::service::{LineServer, LoadGen};

use crate::fixtures;

/// Puts `plugins/<app-vsn>/<app>.appup` beside the `.app` in the root's `lib/<app-vsn>/`,
/// as `cargo xtask dist` does (the fixture roots only copy `.app` and `.so` files).
fn add_appup(root: &Path, app_vsn: &str) {
    let app = app_vsn.rsplit_once('-').map_or(app_vsn, |(app, _)| app);
    let name = format!("{app}.appup");
    let from = fixtures::root().join("plugins").join(app_vsn).join(&name);
    std::fs::copy(&from, root.join("lib").join(app_vsn).join(&name))
        .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

/// Replaces the root's relup of `to` by one made from its appups, and returns it.
fn remake(root: &Path, from: &str, to: &str) -> Relup {
    std::fs::remove_file(relup_path(root, to)).expect("the fixture's relup");
    let relup = make_relup(root, from, to).unwrap_or_else(|e| panic!("{e}"));
    let written = write_relup(root, to, &relup).unwrap_or_else(|e| panic!("{e}"));
    let read = read_relup(&written).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read, relup, "the relup returned is the file written");
    if let Err(problem) = read.check(&written) {
        panic!("{problem}");
    }
    relup
}

/// The instructions of the up and the down entry for release `from`.
fn scripts(relup: &Relup, from: &str) -> (Vec<Instruction>, Vec<Instruction>) {
    let values = |entries: &[hotcode::release::RelupEntry]| {
        let entry = entries.iter().find(|e| e.vsn == from).expect("an entry");
        entry.instructions.iter().map(|i| i.value.clone()).collect::<Vec<_>>()
    };
    (values(&relup.up), values(&relup.down))
}

#[test]
fn the_service_relup_made_from_svc_appup_is_the_seed_script_and_upgrades_under_load() {
    let _ = env_logger::builder().is_test(true).try_init();
    let root = fixtures::service_root();
    add_appup(root.path(), "svc-2");
    let relup = remake(root.path(), "1", "2");
    let seed = read_relup(&fixtures::root_dir_relup("service")).expect("the seed relup");
    assert_eq!(scripts(&relup, "1"), scripts(&seed, "1"), "same instructions, same order");

    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot release 1");
    let server = LineServer::start(h.node().reference(), "127.0.0.1:0", "svc_handler", 4).unwrap();
    let load = LoadGen::start(server.addr(), 2, "made").unwrap();
    let wait_for_answers = |n: u64| {
        let target = load.answered() + n;
        while load.answered() < target {
            std::thread::yield_now();
        }
    };
    wait_for_answers(10);
    for cycle in 0..5 {
        h.install("2").unwrap_or_else(|e| panic!("cycle {cycle} up: {e}"));
        wait_for_answers(5);
        h.install("1").unwrap_or_else(|e| panic!("cycle {cycle} down: {e}"));
        wait_for_answers(5);
    }
    let report = load.finish();
    assert_eq!(report.failed, 0, "{:?}", report.problems);
    assert!(
        report.by_version[0] > 0 && report.by_version[1] > 0,
        "both versions answered: {report:?}"
    );
    assert_eq!(server.stats().failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// The supervisor-change script of the included-application example without what the
/// generated one adds: ch_app's callback module, which the seed script leaves out because an
/// included application's callback is never called, and `make_relup` loads as
/// `add_application` loads every module of the `.app`.
fn without_ch_app_module(script: Vec<Instruction>) -> Vec<Instruction> {
    script
        .into_iter()
        .filter(|i| {
            !matches!(i, Instruction::Load { module, .. } | Instruction::Remove { module, .. }
                if module == "ch_app")
        })
        .map(|i| match i {
            Instruction::LoadObjectCode { app, app_vsn, modules } => Instruction::LoadObjectCode {
                app,
                app_vsn,
                modules: modules.into_iter().filter(|m| m != "ch_app").collect(),
            },
            Instruction::Purge(modules) => {
                Instruction::Purge(modules.into_iter().filter(|m| m != "ch_app").collect())
            }
            other => other,
        })
        .collect()
}

#[test]
fn the_included_application_relup_made_from_prim_app_appup_installs_both_ways() {
    let _ = env_logger::builder().is_test(true).try_init();
    let root = fixtures::release_root("included-app-supervisor");
    add_appup(root.path(), "prim_app-2");
    let relup = remake(root.path(), "A", "B");
    let seed =
        read_relup(&fixtures::root_dir_relup("included-app-supervisor")).expect("the seed relup");
    let (up, down) = scripts(&relup, "A");
    let (seed_up, seed_down) = scripts(&seed, "A");
    assert_eq!(without_ch_app_module(up), seed_up);
    assert_eq!(without_ch_app_module(down), seed_down);

    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot A");
    assert!(h.node().processes_running("ch3").is_empty());
    h.install("B").unwrap_or_else(|e| panic!("up: {e}"));
    assert_eq!(h.node().processes_running("ch3").len(), 1, "prim_sup started ch_app's tree");
    assert!(h.node().is_application_loaded("ch_app"));
    h.install("A").unwrap_or_else(|e| panic!("down: {e}"));
    assert!(h.node().processes_running("ch3").is_empty(), "ch_app's processes are gone");
    assert!(!h.node().is_application_loaded("ch_app"), "ch_app is unloaded");
}
