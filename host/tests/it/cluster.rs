//! `sync_nodes` across nodes (SPEC §12) against a real etcd: each test starts a private
//! etcd on loopback (Debian's `etcd-server`) and stops it at the end. The nodes are
//! in-process release handlers, each on its own root of the service example (svc 1 → 2),
//! each a member of the cluster under its own lease.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hotcode::cluster::local::LocalEtcd;
use hotcode::cluster::{EtcdCluster, NodeStatus};
use hotcode::release_handler::cluster::{Cluster, SyncFailure};
use hotcode::release_handler::{ErrorAction, InstallOptions, ReleaseError, ReleaseHandler};

use crate::cli::{self, Node};
use crate::fixtures;

/// The service relup's upgrade with `sync` between staging and the point of no return.
fn relup_with(sync: &str) -> String {
    format!(
        "{{\"2\",\n [{{\"1\", [],\n   [{{load_object_code,{{svc,\"2\",[svc_handler]}}}},\n    \
         {sync},\n    point_of_no_return,\n    {{suspend,[svc_handler]}},\n    \
         {{load,{{svc_handler,brutal_purge,brutal_purge}}}},\n    \
         {{code_change,up,[{{svc_handler,[]}}]}},\n    {{resume,[svc_handler]}}]}}],\n []}}.\n"
    )
}

/// A node: its root, its handler, its membership.
struct TestNode {
    name: String,
    handler: ReleaseHandler,
    cluster: Arc<EtcdCluster>,
    releases: Vec<u8>,
    _root: tempfile::TempDir,
}

fn node(etcd: &LocalEtcd, name: &str, relup: &str, ttl: Duration) -> TestNode {
    let _ = env_logger::builder().is_test(true).try_init();
    let root = fixtures::service_root();
    std::fs::write(root.path().join("releases/2/relup"), relup).expect("relup");
    let handler = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot 1");
    let cluster = Arc::new(EtcdCluster::join(etcd.url(), name, ttl).expect("join"));
    assert!(handler.join_cluster(Arc::clone(&cluster) as Arc<dyn Cluster>));
    let releases = std::fs::read(root.path().join("releases/RELEASES")).expect("RELEASES");
    TestNode { name: name.to_owned(), handler, cluster, releases, _root: root }
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

fn attempt(id: &str) -> InstallOptions {
    InstallOptions { attempt: Some(id.to_owned()) }
}

/// Installs release 2 on every node at once, in attempt `id`; the results by node.
fn install_all(nodes: &[TestNode], id: &str) -> Vec<Result<(), ReleaseError>> {
    let start = Barrier::new(nodes.len());
    let start = &start;
    std::thread::scope(|s| {
        let threads: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    start.wait();
                    n.handler.install_with("2", &attempt(id), &mut |_| {}).map(drop)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("install thread")).collect()
    })
}

fn handler_vsn(n: &TestNode) -> Option<String> {
    n.handler
        .node()
        .code()
        .status()
        .modules
        .into_iter()
        .find(|m| m.name == "svc_handler")
        .and_then(|m| m.current)
        .map(|v| v.vsn)
}

/// Exactly as before the install: release 1, svc_handler 1, nothing staged, RELEASES as
/// it was, and the handler process answering.
fn unchanged(n: &TestNode) {
    assert_eq!(n.handler.current(), "1", "{}", n.name);
    assert_eq!(handler_vsn(n).as_deref(), Some("1"), "{}", n.name);
    assert_eq!(n.handler.node().code().staged_vsn("svc_handler"), None, "{}", n.name);
    let releases = std::fs::read(n.handler.root().join("releases/RELEASES")).unwrap();
    assert_eq!(releases, n.releases, "{}: RELEASES changed", n.name);
    assert_eq!(n.handler.node().processes_running("svc_handler").len(), 1, "{}", n.name);
}

fn published(n: &TestNode) -> Vec<NodeStatus> {
    let mut members = n.cluster.member().members().expect("members");
    members.sort_by(|a, b| a.node.cmp(&b.node));
    members
}

#[test]
fn five_nodes_meet_at_sync_nodes_and_all_upgrade() {
    let etcd = LocalEtcd::start().expect("etcd");
    let relup = relup_with("{sync_nodes, ready, [n1, n2, n3, n4, n5]}");
    let nodes: Vec<TestNode> =
        names(5).iter().map(|n| node(&etcd, n, &relup, Duration::from_secs(5))).collect();
    for (n, result) in nodes.iter().zip(install_all(&nodes, "t1")) {
        result.unwrap_or_else(|e| panic!("{}: {e}", n.name));
        assert_eq!(n.handler.current(), "2");
        assert_eq!(handler_vsn(n).as_deref(), Some("2"), "{}", n.name);
    }
    let statuses = published(&nodes[0]);
    assert_eq!(statuses.len(), 5);
    for s in statuses {
        assert!(s.status.contains(r#""current":"2""#), "{}: {}", s.node, s.status);
    }
}

#[test]
fn the_mfa_form_syncs_the_nodes_a_function_returns() {
    let etcd = LocalEtcd::start().expect("etcd");
    let relup = relup_with("{sync_nodes, {ready, 1}, {hotcode, nodes, []}, 30000}");
    let nodes: Vec<TestNode> =
        names(3).iter().map(|n| node(&etcd, n, &relup, Duration::from_secs(5))).collect();
    for (n, result) in nodes.iter().zip(install_all(&nodes, "mfa")) {
        result.unwrap_or_else(|e| panic!("{}: {e}", n.name));
        assert_eq!(handler_vsn(n).as_deref(), Some("2"), "{}", n.name);
    }
}

#[test]
fn a_node_lost_at_the_barrier_stops_the_others_before_the_point_of_no_return() {
    let etcd = LocalEtcd::start().expect("etcd");
    let relup = relup_with("{sync_nodes, ready, [n1, n2, n3, n4, n5]}");
    let ttl = Duration::from_secs(1);
    let nodes: Vec<TestNode> = names(5).iter().map(|n| node(&etcd, n, &relup, ttl)).collect();
    let (alive, lost) = nodes.split_at(4);
    // n5 dies as a killed process does: its lease is no longer renewed, and it never
    // reaches the barrier.
    lost[0].cluster.member().stop_renewing();
    let killed = Instant::now();
    let results = install_all(alive, "t1");
    let detected = killed.elapsed();
    let mut saw_down = false;
    for (n, result) in alive.iter().zip(results) {
        match result {
            Err(ReleaseError::Sync { reason, .. }) => match *reason {
                SyncFailure::NodeDown { node } => {
                    assert_eq!(node, "n5", "{}", n.name);
                    saw_down = true;
                }
                // A node that gave up first ends the wait of the others too.
                SyncFailure::Aborted { .. } => {}
                other => panic!("{}: expected n5 down or an abort, got {other:?}", n.name),
            },
            other => panic!("{}: expected a sync error, got {other:?}", n.name),
        }
        unchanged(n);
    }
    assert!(saw_down, "some node saw n5 down");
    eprintln!("node loss (TTL {ttl:?}) seen by every other node after {detected:?}");
    // Within the lease TTL, plus etcd's expiry check and the cascade.
    assert!(detected < ttl + Duration::from_secs(3), "node loss seen after {detected:?}");
}

#[test]
fn an_arrival_left_by_an_aborted_attempt_does_not_release_the_next() {
    let etcd = LocalEtcd::start().expect("etcd");
    let relup = relup_with("{sync_nodes, ready, [n1, n2], 500}");
    let nodes: Vec<TestNode> =
        names(2).iter().map(|n| node(&etcd, n, &relup, Duration::from_secs(5))).collect();
    // Attempt t1: n2 reaches the barrier and its arrival stays there (it never aborts).
    match nodes[1].cluster.member().sync("t1", "ready", &names(2), Some(Duration::from_millis(50)))
    {
        Err(hotcode::cluster::SyncError::Timeout { .. }) => {}
        other => panic!("expected n2 alone to time out, got {other:?}"),
    }
    // Attempt t2: n1 alone is not released by n2's arrival of t1, and times out.
    match nodes[0].handler.install_with("2", &attempt("t2"), &mut |_| {}) {
        Err(ReleaseError::Sync { reason, attempt, .. }) => match *reason {
            SyncFailure::Timeout { missing, .. } => {
                assert_eq!((missing, attempt.as_str()), (vec!["n2".to_owned()], "t2"));
            }
            other => panic!("expected a timeout, got {other:?}"),
        },
        other => panic!("expected n1 to time out in t2, got {other:?}"),
    }
    unchanged(&nodes[0]);
    // Attempt t3 with both: done.
    for (n, result) in nodes.iter().zip(install_all(&nodes, "t3")) {
        result.unwrap_or_else(|e| panic!("{}: {e}", n.name));
        assert_eq!(handler_vsn(n).as_deref(), Some("2"), "{}", n.name);
    }
}

#[test]
fn sync_nodes_needs_a_cluster_and_an_attempt() {
    let _ = env_logger::builder().is_test(true).try_init();
    let root = fixtures::service_root();
    std::fs::write(root.path().join("releases/2/relup"), relup_with("{sync_nodes, x, [a, b]}"))
        .unwrap();
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).unwrap();
    let err = h.check_install("2").unwrap_err().to_string();
    assert!(err.contains("sync_nodes needs a cluster"), "{err}");

    let etcd = LocalEtcd::start().expect("etcd");
    let n = node(&etcd, "n1", &relup_with("{sync_nodes, x, [n1, n2]}"), Duration::from_secs(5));
    n.handler.check_install("2").expect("in a cluster, the check passes");
    let err = n.handler.install("2").unwrap_err().to_string();
    assert!(err.contains("--attempt"), "{err}");
    unchanged(&n);
}

#[test]
fn booted_nodes_join_publish_and_upgrade_together_through_ctl() {
    let etcd = LocalEtcd::start().expect("etcd");
    let relup = relup_with("{sync_nodes, ready, [n1, n2, n3]}");
    let scratch = cli::scratch();
    let roots: Vec<tempfile::TempDir> = (0..3)
        .map(|_| {
            let root = fixtures::service_root();
            std::fs::write(root.path().join("releases/2/relup"), &relup).expect("relup");
            root
        })
        .collect();
    let _nodes: Vec<Node> = roots
        .iter()
        .zip(names(3))
        .map(|(root, name)| {
            let args = ["--cluster", etcd.url(), "--node", &name, "--error-action", "return"];
            Node::boot_with_args(root.path(), scratch.path(), "info", &args)
        })
        .collect();
    // `hotcode fleet status --json` reads what each node published, without joining.
    let current = |vsn: &str| {
        let out = cli::hotcode(&["fleet", "--cluster", etcd.url(), "status", "--json"]);
        assert_eq!(out.code, Some(0), "{out:?}");
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        let mut found: Vec<(String, bool)> = doc["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                let node = n["node"].as_str().expect("node").to_owned();
                (node, n["status"]["current"] == vsn)
            })
            .collect();
        found.sort();
        found
    };
    let all = |yes: bool| names(3).into_iter().map(|n| (n, yes)).collect::<Vec<_>>();
    // Each node published its releases when it joined (before its "node up" line).
    assert_eq!(current("1"), all(true));
    // Without an attempt the install is refused, nothing changed.
    let out = cli::ctl(roots[0].path(), &["install", "2"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("--attempt") || out.stderr.contains("--attempt"), "{out:?}");
    // The three installs meet at the barrier.
    std::thread::scope(|s| {
        for root in &roots {
            s.spawn(move || cli::ctl_ok(root.path(), &["install", "2", "--attempt", "up-1"]));
        }
    });
    assert_eq!(current("2"), all(true));
    let text = cli::hotcode(&["fleet", "--cluster", etcd.url(), "status"]);
    let expected = "n2: live, current 2; releases: 1 permanent, 2 current";
    assert!(text.stdout.contains(expected), "{text:?}");
}

#[test]
fn a_node_refused_before_the_barrier_stops_the_others_there() {
    let etcd = LocalEtcd::start().expect("etcd");
    let relup = relup_with("{sync_nodes, ready, [n1, n2, n3], 30000}");
    let nodes: Vec<TestNode> =
        names(3).iter().map(|n| node(&etcd, n, &relup, Duration::from_secs(5))).collect();
    // n3's svc_handler 2 is not the file release 2 recorded: n3's install is refused at
    // its check, before it reaches the barrier.
    let r3 = nodes[2].handler.root();
    std::fs::copy(fixtures::plugin("greeter-v1"), r3.join("lib/svc-2/svc_handler.so")).unwrap();
    let started = Instant::now();
    let results = install_all(&nodes, "t1");
    let mut saw_n3 = false;
    for (n, result) in nodes.iter().zip(results) {
        match (n.name.as_str(), result) {
            ("n3", Err(ReleaseError::Check { problems, .. })) => {
                assert!(problems.concat().contains("svc_handler.so"), "{problems:?}");
            }
            // n3's abort, or that of a node that stopped because of it first.
            (_, Err(ReleaseError::Sync { reason, .. })) => match *reason {
                SyncFailure::Aborted { node } => saw_n3 |= node == "n3",
                other => panic!("{}: expected an abort, got {other:?}", n.name),
            },
            (name, other) => panic!("{name}: unexpected {other:?}"),
        }
        unchanged(n);
    }
    assert!(saw_n3, "some node saw n3 give up");
    // Not the barrier's 30 s timeout: n3's abort ended the wait.
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}
