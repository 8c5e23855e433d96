//! `sync_nodes` on etcd, measured (feature `cluster`): five members of one cluster (a
//! private etcd on loopback, started and stopped here) meet at a barrier again and again,
//! each round a new attempt.
//!
//! - `sync_release_ms_p99`: per round, from the moment the last node called `sync` (its
//!   arrival is the one that completes the barrier) to the moment every node was
//!   released; the p99 over the rounds. What the nodes wait for beyond the last arrival.
//! - `node_loss_detect_ms`: a sixth member with a 1 s lease stops renewing it (a killed
//!   node) and the five wait for it at a barrier: from the kill to the moment every one of
//!   them returned the node-down error; the median of three runs. etcd raises a lease
//!   below its minimum (1.5 s by default) and checks expiry twice a second.
//!
//! Results go to `target/bench-results/fleet.json` for `cargo xtask bench`.
//! `HOTCODE_FLEET_ROUNDS` overrides the number of measured rounds (default 200).

#[allow(dead_code)] // each benchmark uses part of the shared helpers
mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::Mode;
use hotcode::cluster::local::LocalEtcd;
use hotcode::cluster::{Config, Member, SyncError};

const NODES: usize = 5;
const DEFAULT_ROUNDS: usize = 200;

fn join(etcd: &LocalEtcd, name: &str, ttl: Duration) -> Member {
    let mut config = Config::new(etcd.url(), name);
    config.ttl = ttl;
    Member::join(&config).expect("join")
}

/// One round: every member syncs at once; the time from the last call to the last return.
fn round(members: &[Arc<Member>], names: &[String], attempt: &str) -> Duration {
    let start = Arc::new(Barrier::new(members.len()));
    let threads: Vec<_> = members
        .iter()
        .map(|m| {
            let (m, names, start, attempt) =
                (Arc::clone(m), names.to_vec(), Arc::clone(&start), attempt.to_owned());
            std::thread::spawn(move || {
                start.wait();
                let called = Instant::now();
                m.sync(&attempt, "bench", &names, Some(Duration::from_secs(30))).expect("sync");
                (called, Instant::now())
            })
        })
        .collect();
    let times: Vec<(Instant, Instant)> =
        threads.into_iter().map(|t| t.join().expect("sync thread")).collect();
    let last_call = times.iter().map(|t| t.0).max().expect("a node");
    let last_release = times.iter().map(|t| t.1).max().expect("a node");
    last_release.saturating_duration_since(last_call)
}

fn main() {
    let rounds = match common::mode("fleet") {
        Mode::Skip => return,
        Mode::Smoke => 2,
        Mode::Bench => std::env::var("HOTCODE_FLEET_ROUNDS")
            .ok()
            .map(|v| v.parse::<usize>().expect("HOTCODE_FLEET_ROUNDS: a number"))
            .unwrap_or(DEFAULT_ROUNDS),
    };
    let etcd = LocalEtcd::start().expect("etcd");
    let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    let members: Vec<Arc<Member>> =
        names.iter().map(|n| Arc::new(join(&etcd, n, Duration::from_secs(5)))).collect();
    let mut release: Vec<Duration> =
        (0..rounds).map(|r| round(&members, &names, &format!("round-{r}"))).collect();
    release.sort();

    let mut detect = Vec::new();
    for run in 0..3 {
        let lost_name = format!("lost{run}");
        let lost = join(&etcd, &lost_name, Duration::from_secs(1));
        let mut listed = names.clone();
        listed.push(lost_name.clone());
        lost.stop_renewing();
        let killed = Instant::now();
        let threads: Vec<_> = members
            .iter()
            .map(|m| {
                let (m, listed, lost_name) = (Arc::clone(m), listed.clone(), lost_name.clone());
                std::thread::spawn(move || {
                    match m.sync(&format!("loss-{run}"), "bench", &listed, None) {
                        Err(SyncError::NodeDown { node, .. }) => assert_eq!(node, lost_name),
                        // A node that saw it first and gave up is not this benchmark's
                        // business: the members here never abort.
                        other => panic!("expected {lost_name} down, got {other:?}"),
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("loss thread");
        }
        detect.push(killed.elapsed());
        drop(lost);
    }
    detect.sort();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p50 = ms(common::percentile(&release, 0.5));
    let p99 = ms(common::percentile(&release, 0.99));
    let detect_ms = ms(detect[1]);
    println!(
        "fleet: {NODES} nodes, {rounds} rounds: release after the last arrival p50 {p50:.2} ms, \
         p99 {p99:.2} ms; node loss (1 s lease) seen by all in {detect_ms:.0} ms (median of 3)"
    );
    let path = common::write_results(
        "fleet",
        &[
            ("nodes", NODES as f64),
            ("sync_release_ms_p50", p50),
            ("sync_release_ms_p99", p99),
            ("node_loss_detect_ms", detect_ms),
        ],
    );
    println!("fleet: wrote {}", path.display());
}
