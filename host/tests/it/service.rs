//! The service example: a TCP service whose request handler is a plugin, upgraded and
//! downgraded again and again under load from client threads.

use hotcode::release_handler::{ErrorAction, ReleaseHandler};
use hotcode::service::{LineServer, LoadGen};

use crate::fixtures;

const CYCLES: usize = 200;

#[test]
fn two_hundred_upgrade_downgrade_cycles_under_load_lose_nothing() {
    let _ = env_logger::builder().is_test(true).try_init();
    let root = fixtures::service_root();
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot release 1");
    let server = LineServer::start(h.node().reference(), "127.0.0.1:0", "svc_handler", 4).unwrap();
    let load = LoadGen::start(server.addr(), 2, "test").unwrap();
    let scratch = h.node().code().scratch_dir().to_owned();
    let mapped = || hotcode::code::maps::mapped_files_under(&scratch).unwrap().len();
    let wait_for_answers = |n: u64| {
        let target = load.answered() + n;
        while load.answered() < target {
            std::thread::yield_now();
        }
    };
    wait_for_answers(10);
    // After the first cycle the number of mapped plugin copies must stay where it is.
    h.install("2").unwrap();
    wait_for_answers(5);
    h.install("1").unwrap();
    wait_for_answers(5);
    let baseline = mapped();
    for cycle in 1..CYCLES {
        h.install("2").unwrap_or_else(|e| panic!("cycle {cycle} up: {e}"));
        wait_for_answers(2);
        h.install("1").unwrap_or_else(|e| panic!("cycle {cycle} down: {e}"));
        wait_for_answers(2);
    }
    assert_eq!(mapped(), baseline, "no growth in mapped plugin files");
    let report = load.finish();
    assert_eq!(report.failed, 0, "{:?}", report.problems);
    assert!(
        report.by_version[0] > 0 && report.by_version[1] > 0,
        "both versions answered: {report:?}"
    );
    assert_eq!(server.stats().failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}
