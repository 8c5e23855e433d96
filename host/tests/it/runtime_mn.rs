//! The M:N process runtime: gen_servers are control blocks run by a pool of worker threads,
//! not threads of their own. A node holds 100,000 of them; a callback that blocks does not
//! stop the others; code_change of many processes runs on the pool, and one failure among
//! them is reported.

use std::time::{Duration, Instant};

use hotcode::Node;
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
    let start = Instant::now();
    node.shutdown();
    assert_eq!(monitor.wait(Duration::ZERO), Some(Term::atom("shutdown")));
    assert!(node.processes().is_empty(), "every process stopped");
    assert!(node.abandoned().is_empty(), "none abandoned: {:?}", node.abandoned());
    assert!(start.elapsed() < Duration::from_secs(60), "shutdown took {:?}", start.elapsed());
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

fn node_call(node: &Node, pid: hotcode::Pid, request: &str) -> Result<Term, String> {
    node.call(pid, Term::atom(request), LONG).map_err(|e| e.to_string())
}
