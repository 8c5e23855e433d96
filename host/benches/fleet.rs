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
//! - `rollout_s`: `hotcode fleet install 2` (the library's `rollout::install`: a canary,
//!   then waves of two, a `svc_handler` call as the health gate) over five in-process
//!   nodes, each serving its control socket and its op queue as a booted node does, from
//!   the command's start until the last node is permanent on release 2.
//! - `failed_requests`: one client per node calling it over TCP without pause for the
//!   whole rollout, every answer checked (SPEC: 0).
//!
//! Results go to `target/bench-results/fleet.json` for `cargo xtask bench`.
//! `HOTCODE_FLEET_ROUNDS` overrides the number of measured rounds (default 200).

#[allow(dead_code)] // each benchmark uses part of the shared helpers
mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::Mode;
use hotcode::cluster::local::LocalEtcd;
use hotcode::cluster::{Config, EtcdCluster, Member, SyncError};
use hotcode::fleet::gate::Health;
use hotcode::fleet::rollout::{self, OnFailure, Plan, WaveSize};
use hotcode::release::assemble::{self, Libraries, ReleaseSource, RelupSource};
use hotcode::release_handler::cluster::Cluster;
use hotcode::release_handler::{ErrorAction, ReleaseHandler};
use hotcode::service::{LineServer, LoadGen};

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

/// A root of the service example: release 1 permanent, release 2 unpacked with the relup
/// made from the appups (up and back down), from the release-built plugins.
fn service_root(root: &std::path::Path) {
    let source = |vsn: &str, v: &str| ReleaseSource {
        name: "svc".into(),
        vsn: vsn.into(),
        host_vsn: hotcode::release_handler::HOST_VSN.into(),
        apps: vec![common::workspace().join(format!("plugins/svc-{vsn}/svc.app"))],
        libraries: Libraries {
            dirs: Vec::new(),
            modules: ["svc_app", "svc_sup", "svc_handler"]
                .into_iter()
                .map(|m| (m.to_owned(), common::plugin(&format!("{m}_{v}"))))
                .collect(),
        },
        host_binary: None,
    };
    assemble::new_root(root, &source("1", "v1"), &|_| Ok(())).expect("release 1");
    assemble::add_release(root, &source("2", "v2"), &RelupSource::Make { from: None }, &|_| Ok(()))
        .expect("release 2");
}

/// Five nodes served as booted ones, a client on each, one rollout: its duration and the
/// clients' failed requests.
fn rollout_under_load(etcd: &LocalEtcd) -> (Duration, u64, u64) {
    let dir = tempfile::Builder::new().prefix("hotcode-fleet-bench-").tempdir().expect("dir");
    let mut nodes = Vec::new();
    for i in 1..=NODES {
        let name = format!("r{i}");
        let root = dir.path().join(&name);
        service_root(&root);
        let handler = Arc::new(ReleaseHandler::boot(&root, ErrorAction::Return).expect("boot"));
        let cluster =
            Arc::new(EtcdCluster::join(etcd.url(), &name, Duration::from_secs(5)).expect("join"));
        cluster.set_root(&root);
        handler.join_cluster(Arc::clone(&cluster) as Arc<dyn Cluster>);
        let served = hotcode::fleet::agent::serve_in_process(Arc::clone(&handler), cluster)
            .expect("control socket");
        let server = LineServer::start(handler.node().reference(), "127.0.0.1:0", "svc_handler", 2)
            .expect("service");
        let load = LoadGen::start(server.addr(), 1, &name).expect("client");
        nodes.push((load, server, served, handler));
    }
    let plan = Plan {
        vsn: "2".into(),
        package: None,
        canary: 1,
        wave: WaveSize::Nodes(2),
        health: Some(Health::Call { name: "svc_handler".into(), request: "\"GET k\"".into() }),
        max_failures: 0,
        progress_deadline: Duration::from_secs(60),
        on_failure: OnFailure::Rollback,
    };
    let started = Instant::now();
    let state = rollout::install(&[etcd.url().to_owned()], &plan, &mut |_| {}).expect("rollout");
    let took = started.elapsed();
    assert_eq!(state.phase, hotcode::cluster::rollout::Phase::Done, "{state:?}");
    let (mut failed, mut requests) = (0, 0);
    for (load, server, served, handler) in nodes {
        let report = load.finish();
        // A refused connection is a failed request too.
        failed += report.failed + report.refused;
        requests += report.requests;
        let permanent = handler
            .which_releases()
            .into_iter()
            .any(|r| r.vsn == "2" && r.status == hotcode::release::ReleaseStatus::Permanent);
        assert!(permanent, "release 2 permanent on every node");
        drop((served, server));
    }
    (took, failed, requests)
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

    // A cluster of its own: the barrier's members run no op queue.
    drop(members);
    drop(etcd);
    let etcd = LocalEtcd::start().expect("etcd");
    let (rollout_took, failed_requests, requests) = rollout_under_load(&etcd);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p50 = ms(common::percentile(&release, 0.5));
    let p99 = ms(common::percentile(&release, 0.99));
    let detect_ms = ms(detect[1]);
    println!(
        "fleet: {NODES} nodes, {rounds} rounds: release after the last arrival p50 {p50:.2} ms, \
         p99 {p99:.2} ms; node loss (1 s lease) seen by all in {detect_ms:.0} ms (median of 3)"
    );
    println!(
        "fleet: rollout of {NODES} nodes (canary 1, waves of 2, health gate) in {:.2} s; \
         clients of every node: {requests} requests, {failed_requests} failed",
        rollout_took.as_secs_f64()
    );
    let path = common::write_results(
        "fleet",
        &[
            ("nodes", NODES as f64),
            ("sync_release_ms_p50", p50),
            ("sync_release_ms_p99", p99),
            ("node_loss_detect_ms", detect_ms),
            ("rollout_s", rollout_took.as_secs_f64()),
            ("failed_requests", failed_requests as f64),
        ],
    );
    println!("fleet: wrote {}", path.display());
}
