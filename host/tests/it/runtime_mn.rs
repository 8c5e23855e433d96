//! The M:N process runtime: gen_servers are control blocks run by a pool of worker threads,
//! not threads of their own. A node holds 100,000 of them; a callback that blocks does not
//! stop the others; code_change of many processes runs on the pool, and one failure among
//! them is reported.

use std::time::{Duration, Instant};

use hotcode::release_handler::{ErrorAction, ReleaseError, ReleaseHandler};
use hotcode::{ChangeMode, Node, ProcessError, PurgeMethod::BrutalPurge};
use plugin_api::Term;

use crate::{LONG, fixtures, node_with};

/// The number of threads this test process has now.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[test]
fn a_hundred_thousand_processes_spawn_answer_a_call_each_and_shut_down() {
    const N: usize = 100_000;
    let node = node_with(&[("ch3", fixtures::module_lib("ch_app-1", "ch3"))]);
    let threads_before = threads();
    let pids: Vec<_> = (0..N)
        .map(|_| node.start_gen_server("ch3", Term::List(vec![]), None).expect("start"))
        .collect();
    assert_eq!(node.processes().len(), N);
    // No thread per process: other tests running alongside start some, not 100,000.
    let threads_now = threads();
    assert!(
        threads_now < threads_before + 1_000,
        "{threads_now} threads with {N} processes (from {threads_before})"
    );
    // Each has a state of its own: its first channel is 1, its second 2.
    for pid in &pids {
        assert_eq!(node.call(*pid, Term::atom("alloc"), LONG).expect("call"), Term::Int(1));
    }
    assert_eq!(node.call(pids[N / 2], Term::atom("alloc"), LONG).expect("call"), Term::Int(2));
    // The version holds one pin per process, dropped as each exits.
    let held = node.code().holders("ch3").expect("holders");
    assert_eq!(held.current.expect("current").holders.len(), N);
    let monitor = node.monitor(pids[N - 1]).expect("alive");
    node.shutdown();
    assert_eq!(monitor.wait(Duration::ZERO), Some(Term::atom("shutdown")));
    assert!(node.processes().is_empty(), "every process stopped");
    assert!(node.abandoned().is_empty(), "none abandoned: {:?}", node.abandoned());
    let held = node.code().holders("ch3").expect("holders");
    assert!(held.current.expect("current").holders.is_empty(), "no pin left behind");
}

/// Waits (bounded) until `n` stubborn calls are blocked inside plugin code.
fn until_n_blocked(node: &Node, n: i64) {
    let deadline = Instant::now() + LONG;
    loop {
        let waiting = node.code().apply("stubborn", "waiting", vec![]).expect("waiting/0");
        if waiting == Term::Int(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{waiting} blocked, waiting for {n}");
        std::thread::yield_now();
    }
}

#[test]
fn callbacks_blocked_on_every_worker_do_not_stop_other_processes() {
    let node = node_with(&[
        ("stubborn", fixtures::plugin("fixture-stubborn")),
        ("ch3", fixtures::module_lib("ch_app-1", "ch3")),
    ]);
    // More blocked callbacks than there are workers at the start (one per core).
    let blocked = 2 * cores() + 2;
    let blockers: Vec<_> = (0..blocked)
        .map(|_| node.start_gen_server("stubborn", Term::List(vec![]), None).expect("start"))
        .collect();
    let other = node.start_gen_server("ch3", Term::List(vec![]), None).expect("start ch3");
    let node = &node;
    std::thread::scope(|s| {
        let callers: Vec<_> =
            blockers.iter().map(|&pid| s.spawn(move || node_call(node, pid, "block"))).collect();
        until_n_blocked(node, i64::try_from(blocked).expect("small"));
        // Every callback above is inside plugin code, on a worker, waiting for the test.
        // Others are still served, and started:
        assert_eq!(node.call(other, Term::atom("alloc"), LONG).expect("alloc"), Term::Int(1));
        let late = node.start_gen_server("stubborn", Term::List(vec![]), None).expect("start");
        assert_eq!(node.call(late, Term::atom("ping"), LONG).expect("ping"), Term::atom("pong"));
        node.code().apply("stubborn", "release", vec![]).expect("release/0");
        for caller in callers {
            assert_eq!(caller.join().expect("caller"), Ok(Term::atom("released")));
        }
    });
    for pid in blockers {
        assert_eq!(node.call(pid, Term::atom("ping"), LONG).expect("ping"), Term::atom("pong"));
    }
}

#[test]
fn a_suspend_waits_for_the_callback_in_progress_and_queued_calls_run_at_the_resume() {
    let node = node_with(&[("stubborn", fixtures::plugin("fixture-stubborn"))]);
    let pid = node.start_gen_server("stubborn", Term::List(vec![]), None).expect("start");
    let node = &node;
    std::thread::scope(|s| {
        let blocked = s.spawn(move || node_call(node, pid, "block"));
        until_n_blocked(node, 1);
        // Inside a callback it is not between callbacks: like `sys:suspend`, the suspend
        // does not return Ok until the callback ends; its flag stays set meanwhile.
        let early = node.suspend(pid, Duration::from_millis(1));
        assert!(matches!(early, Err(ProcessError::Timeout { .. })), "{early:?}");
        node.code().apply("stubborn", "release", vec![]).expect("release/0");
        assert_eq!(blocked.join().expect("caller"), Ok(Term::atom("released")));
    });
    // Between callbacks now: a suspend answers at once.
    node.suspend(pid, LONG).expect("suspend");
    // Suspended now: system messages are answered, calls wait in the mailbox.
    assert_eq!(node.get_state(pid, LONG).expect("state"), Term::Int(1));
    let waited = node.call(pid, Term::atom("ping"), Duration::from_millis(50));
    assert!(matches!(waited, Err(ProcessError::Timeout { .. })), "{waited:?}");
    node.resume(pid).expect("resume");
    assert_eq!(node.call(pid, Term::atom("ping"), LONG).expect("ping"), Term::atom("pong"));
    // The call that timed out ran at the resume, before this one: three calls served.
    assert_eq!(node.get_state(pid, LONG).expect("state"), Term::Int(3));
}

fn node_call(node: &Node, pid: hotcode::Pid, request: &str) -> Result<Term, String> {
    node.call(pid, Term::atom(request), LONG).map_err(|e| e.to_string())
}

/// A root with release A (`many` 1: `many_sup` running `n` `many_srv` 1 workers)
/// permanent, and release B (`many` 2: `many_srv` 2) unpacked, whose relup migrates every
/// worker with `code_change` Extra `extra`.
fn many_root(n: usize, extra: &str) -> tempfile::TempDir {
    let root = tempfile::Builder::new().prefix("hotcode-many-").tempdir().expect("temp root");
    let r = root.path();
    let host = env!("CARGO_PKG_VERSION");
    for vsn in ["1", "2"] {
        let lib = r.join(format!("lib/many-{vsn}"));
        std::fs::create_dir_all(&lib).expect("lib dir");
        std::fs::write(
            lib.join("many.app"),
            format!(
                "{{application, many, [{{vsn, \"{vsn}\"}}, {{modules, [many_app, many_sup, \
                 many_srv]}}, {{registered, [many_sup]}}, {{applications, []}}, \
                 {{mod, {{many_app, [{{workers, {n}}}]}}}}]}}.\n"
            ),
        )
        .expect(".app");
        let srv = if vsn == "1" { "fixture-many-srv-v1" } else { "fixture-many-srv-v2" };
        for (module, package) in
            [("many_app", "fixture-many-app"), ("many_sup", "fixture-many-sup"), ("many_srv", srv)]
        {
            std::fs::copy(fixtures::plugin(package), lib.join(format!("{module}.so")))
                .expect(".so");
        }
    }
    let mut entries = Vec::new();
    for (rel, vsn, status) in [("A", "1", "permanent"), ("B", "2", "unpacked")] {
        let dir = r.join("releases").join(rel);
        std::fs::create_dir_all(&dir).expect("release dir");
        std::fs::write(
            dir.join("many.rel"),
            format!("{{release, {{\"many\", \"{rel}\"}}, {{hotcode, \"{host}\"}}, [{{many, \"{vsn}\"}}]}}.\n"),
        )
        .expect(".rel");
        entries.push(format!(
            "{{release, \"many\", \"{rel}\", \"{host}\", [{{many, \"{vsn}\", \"lib/many-{vsn}\"}}], {status}}}"
        ));
        let files: Vec<String> = ["many_app", "many_sup", "many_srv"]
            .iter()
            .map(|m| format!("lib/many-{vsn}/{m}.so"))
            .collect();
        fixtures::record_release(r, rel, &files.iter().map(String::as_str).collect::<Vec<_>>());
    }
    std::fs::write(
        r.join("releases/B/relup"),
        format!(
            "{{\"B\",\n [{{\"A\", [],\n  [{{load_object_code,{{many,\"2\",[many_srv]}}}},\n   \
             point_of_no_return,\n   {{suspend,[many_srv]}},\n   \
             {{load,{{many_srv,brutal_purge,brutal_purge}}}},\n   \
             {{code_change,up,[{{many_srv,{extra}}}]}},\n   {{resume,[many_srv]}}]}}],\n \
             [{{\"A\", [], []}}]}}.\n"
        ),
    )
    .expect("relup");
    std::fs::write(r.join("releases/RELEASES"), format!("[{}].\n", entries.join(",\n ")))
        .expect("RELEASES");
    std::fs::create_dir_all(r.join("run")).expect("run dir");
    std::fs::set_permissions(r.join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("run dir mode");
    root
}

#[test]
fn a_code_change_that_fails_on_one_of_a_thousand_processes_fails_the_install() {
    const N: usize = 1_000;
    let _ = env_logger::builder().is_test(true).try_init();
    // The preflight tries each of the N states once (N calls of code_change, all passing);
    // the real migration's calls follow, on the workers, and the one numbered N + N/2 fails.
    let root = many_root(N, &format!("{{fail_call,{}}}", N + N / 2));
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot A");
    let node = h.node();
    let workers = node.processes_running("many_srv");
    assert_eq!(workers.len(), N);
    for &pid in &workers {
        assert_eq!(node.call(pid, Term::atom("vsn"), LONG).expect("vsn"), Term::Int(1));
    }
    match h.install("B") {
        Err(ReleaseError::AfterPointOfNoReturn { instruction, reason, .. }) => {
            assert!(instruction.starts_with("{code_change,up"), "{instruction}");
            let failed = format!("{{failed_on_call,{}}}", N + N / 2);
            assert!(reason.contains(&failed), "{reason}");
        }
        other => panic!("expected the install to fail at code_change, got {other:?}"),
    }
    assert_eq!(h.current(), "A", "the install did not complete");
    // Exactly one worker crashed on its code_change (its supervisor restarted it); the
    // others migrated, and once resumed (the script stopped before its resume) serve
    // version 2.
    // The crashed one answers its code_change before it unregisters: wait (bounded) for
    // its exit.
    let deadline = Instant::now() + LONG;
    let survivors = loop {
        let alive: Vec<_> = workers.iter().filter(|p| node.is_alive(**p)).collect();
        if alive.len() < N || Instant::now() >= deadline {
            break alive;
        }
        std::thread::yield_now();
    };
    assert_eq!(survivors.len(), N - 1);
    for &&pid in &survivors {
        node.resume(pid).expect("resume");
        assert_eq!(node.call(pid, Term::atom("vsn"), LONG).expect("vsn"), Term::Int(2));
    }
}

#[test]
fn a_code_change_recorded_before_the_load_wakes_nothing_and_runs_before_the_next_callback() {
    let node = node_with(&[("ch3", fixtures::module_lib("ch_app-1", "ch3"))]);
    let pids: Vec<_> = (0..3)
        .map(|_| node.start_gen_server("ch3", Term::List(vec![]), None).expect("start"))
        .collect();
    // Two suspended, as a relup's `suspend` leaves them; the third left out of it.
    for (pid, suspended) in node.suspend_many(&pids[..2], LONG) {
        suspended.unwrap_or_else(|e| panic!("suspend {pid}: {e}"));
    }
    let extra = Term::tuple([Term::atom("served"), Term::Int(40)]);
    node.code().load_object_code("ch3", fixtures::plugin("fixture-ch3-v2")).expect("stage");
    assert_eq!(node.record_code_change(&pids, ChangeMode::Up, &extra, "2"), 3);
    node.code().load("ch3", BrutalPurge, BrutalPurge).expect("load");
    // Recording woke nobody: the suspended states still pin version 1.
    let holders = node.code().holders("ch3").expect("holders");
    let old = holders.old.expect("version 1 is old now");
    for pid in &pids[..2] {
        assert!(
            old.holders.iter().any(|h| h.process == Some(pid.id())),
            "{pid} migrated before anything asked it to: {:?}",
            old.holders
        );
    }
    // The process left out migrates before its next callback, with the recorded Extra.
    assert_eq!(node.call(pids[2], Term::atom("served"), LONG).expect("served"), Term::Int(40));
    // The suspended ones at their first callback after the resume, with the same Extra.
    for (pid, resumed) in node.resume_many(&pids[..2]) {
        resumed.unwrap_or_else(|e| panic!("resume {pid}: {e}"));
    }
    for &pid in &pids {
        assert_eq!(node.call(pid, Term::atom("version"), LONG).expect("version"), Term::Int(2));
        assert_eq!(node.call(pid, Term::atom("served"), LONG).expect("served"), Term::Int(40));
    }
    // Migrated: nothing pins version 1 any more.
    let holders = node.code().holders("ch3").expect("holders");
    assert!(holders.old.as_ref().is_none_or(|v| v.holders.is_empty()), "{holders:?}");
}

#[test]
fn a_code_change_recorded_for_another_version_or_forgotten_is_never_applied() {
    let node = node_with(&[("ch3", fixtures::module_lib("ch_app-1", "ch3"))]);
    let pids: Vec<_> = (0..2)
        .map(|_| node.start_gen_server("ch3", Term::List(vec![]), None).expect("start"))
        .collect();
    let extra = Term::tuple([Term::atom("served"), Term::Int(40)]);
    // One recorded for a vsn that is never loaded (an install that failed before it), one
    // recorded for vsn 2 and then forgotten (the install that recorded it failed).
    node.code().load_object_code("ch3", fixtures::plugin("fixture-ch3-v2")).expect("stage");
    assert_eq!(node.record_code_change(&pids[..1], ChangeMode::Up, &extra, "3"), 1);
    assert_eq!(node.record_code_change(&pids[1..], ChangeMode::Up, &extra, "2"), 1);
    node.forget_code_change(&pids[1..]);
    node.code().load("ch3", BrutalPurge, BrutalPurge).expect("load");
    // Both migrate to version 2 with the implicit Extra `[]`: the counter starts at 0.
    for &pid in &pids {
        assert_eq!(node.call(pid, Term::atom("version"), LONG).expect("version"), Term::Int(2));
        assert_eq!(node.call(pid, Term::atom("served"), LONG).expect("served"), Term::Int(0));
    }
}

#[test]
fn change_code_many_applies_a_recorded_change_on_the_workers_and_reports_each_result() {
    let node = node_with(&[("ch3", fixtures::module_lib("ch_app-1", "ch3"))]);
    let pids: Vec<_> = (0..50)
        .map(|_| node.start_gen_server("ch3", Term::List(vec![]), None).expect("start"))
        .collect();
    for (pid, suspended) in node.suspend_many(&pids, LONG) {
        suspended.unwrap_or_else(|e| panic!("suspend {pid}: {e}"));
    }
    crate::load_version(&node, "ch3", fixtures::plugin("fixture-ch3-v2"));
    let gone = pids[7];
    node.stop(gone, Term::atom("normal"), LONG).expect("stop");
    let extra = Term::tuple([Term::atom("served"), Term::Int(7)]);
    let results = node.change_code_many(&pids, ChangeMode::Up, &extra, LONG);
    assert_eq!(results.iter().map(|(p, _)| *p).collect::<Vec<_>>(), pids, "in the given order");
    for (pid, result) in &results {
        if *pid == gone {
            assert!(matches!(result, Err(ProcessError::NoProc { .. })), "{result:?}");
        } else {
            result.as_ref().unwrap_or_else(|e| panic!("change_code {pid}: {e}"));
        }
    }
    // Applied while still suspended: version 1 is free before any resume.
    let holders = node.code().holders("ch3").expect("holders");
    assert!(holders.old.as_ref().is_none_or(|v| v.holders.is_empty()), "{holders:?}");
    drop(node.resume_many(&pids));
    for &pid in pids.iter().filter(|p| **p != gone) {
        assert_eq!(node.call(pid, Term::atom("served"), LONG).expect("served"), Term::Int(7));
    }
}
