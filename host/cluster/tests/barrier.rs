//! The barrier, and a node's op queue, against a real etcd (a private one on loopback,
//! started and stopped here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hotcode_cluster::local::LocalEtcd;
use hotcode_cluster::{Config, Member, SyncError};

fn join(etcd: &LocalEtcd, node: &str, ttl: u64) -> Member {
    let mut config = Config::new(etcd.url(), node);
    config.ttl = Duration::from_secs(ttl);
    Member::join(&config).expect("join")
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

#[test]
fn every_node_is_released_once_all_arrived() {
    let etcd = LocalEtcd::start().expect("etcd");
    let nodes = names(3);
    let members: Vec<Arc<Member>> = nodes.iter().map(|n| Arc::new(join(&etcd, n, 5))).collect();
    let threads: Vec<_> = members
        .iter()
        .map(|m| {
            let (m, nodes) = (Arc::clone(m), nodes.clone());
            std::thread::spawn(move || m.sync("a1", "id1", &nodes, Some(Duration::from_secs(20))))
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("released");
    }
    let mut seen: Vec<String> = members[0].members().unwrap().into_iter().map(|s| s.node).collect();
    seen.sort();
    assert_eq!(seen, nodes);
}

#[test]
fn a_second_live_node_of_the_same_name_is_refused() {
    let etcd = LocalEtcd::start().expect("etcd");
    let _n1 = join(&etcd, "n1", 5);
    let err = Member::join(&Config::new(etcd.url(), "n1")).err().expect("refused");
    assert!(err.to_string().contains("another live node"), "{err}");
}

#[test]
fn a_node_that_stops_renewing_is_down_within_its_ttl() {
    let etcd = LocalEtcd::start().expect("etcd");
    let nodes = names(2);
    let n1 = join(&etcd, "n1", 5);
    let n2 = join(&etcd, "n2", 1);
    n2.stop_renewing();
    let start = Instant::now();
    match n1.sync("a1", "id1", &nodes, None) {
        Err(SyncError::NodeDown { node, .. }) => assert_eq!(node, "n2"),
        other => panic!("expected n2 down, got {other:?}"),
    }
    // TTL 1 s; etcd checks expiry about every 500 ms.
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());
}

#[test]
fn an_arrival_of_an_aborted_attempt_never_releases_a_later_one() {
    let etcd = LocalEtcd::start().expect("etcd");
    let nodes = names(2);
    let n1 = join(&etcd, "n1", 5);
    let n2 = join(&etcd, "n2", 5);
    // Attempt a1: n2 arrives, then gives up.
    match n2.sync("a1", "id1", &nodes, Some(Duration::from_millis(100))) {
        Err(SyncError::Timeout { missing, .. }) => assert_eq!(missing, ["n1"]),
        other => panic!("expected a timeout, got {other:?}"),
    }
    n2.abort("a1").unwrap();
    // n1 at a1's barrier sees the abort at once.
    match n1.sync("a1", "id1", &nodes, Some(Duration::from_secs(20))) {
        Err(SyncError::Aborted { node, .. }) => assert_eq!(node, "n2"),
        other => panic!("expected n2's abort, got {other:?}"),
    }
    // A node that gives up before it reaches a barrier stops the others there too.
    n2.abort("a3").unwrap();
    match n1.sync("a3", "id1", &nodes, Some(Duration::from_secs(20))) {
        Err(SyncError::Aborted { node, .. }) => assert_eq!(node, "n2"),
        other => panic!("expected n2's abort, got {other:?}"),
    }
    // Attempt a2, same Id: n2's old arrival does not count.
    match n1.sync("a2", "id1", &nodes, Some(Duration::from_millis(300))) {
        Err(SyncError::Timeout { missing, .. }) => assert_eq!(missing, ["n2"]),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn a_wait_without_timeout_ends_when_etcd_stops_answering() {
    let etcd = LocalEtcd::start().expect("etcd");
    let n1 = join(&etcd, "n1", 1);
    let _n2 = join(&etcd, "n2", 1);
    let pid = libc::pid_t::try_from(etcd.pid()).expect("pid fits pid_t");
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        // n2 never arrives, and the barrier has no timeout of its own.
        let result = n1.sync("hang", "id", &names(2), None);
        let _ = tx.send(());
        result
    });
    // SAFETY: kill(2) touches no memory of ours; the pid is our unreaped child etcd's.
    let stopped = unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert_eq!(stopped, 0);
    let started = Instant::now();
    // The lease TTL (1 s) and one request's timeout (10 s), with room for a loaded machine.
    let ended = rx.recv_timeout(Duration::from_secs(40));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    ended.expect("the wait ended while etcd hung");
    let elapsed = started.elapsed();
    match waiter.join().expect("thread") {
        Err(SyncError::Cluster(_)) => {}
        other => panic!("expected etcd unanswered, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

/// Not a barrier, but the same private etcd: a node runs each op of its queue once, and a
/// node that comes back (a new member of the same name) skips the ops already answered.
#[test]
fn an_op_is_run_once_even_by_a_node_that_comes_back() {
    use hotcode_cluster::ops::{Op, OpKind, OpResult};
    use hotcode_cluster::rollout::{Driver, Phase};
    use std::sync::atomic::{AtomicBool, Ordering};

    let etcd = LocalEtcd::start().expect("etcd");
    let driver = Driver::lock(&[etcd.url().to_owned()], "test").expect("lock");
    let op = |id: &str| Op { id: id.to_owned(), kind: OpKind::MakePermanent { vsn: "2".into() } };
    // Serves until one op has run; the ids run.
    let serve = |member: &Member| {
        let stop = AtomicBool::new(false);
        let mut ran = Vec::new();
        member
            .serve_ops(&stop, |op| {
                ran.push(op.id.clone());
                stop.store(true, Ordering::SeqCst);
                OpResult { id: op.id.clone(), ok: true, text: "ok".into() }
            })
            .expect("serve");
        ran
    };
    driver.put_state(&running("t", Phase::Running)).expect("record");
    let first = join(&etcd, "n1", 5);
    driver.submit("n1", &op("t-0")).expect("submit");
    assert_eq!(serve(&first), ["t-0"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let answers = driver.wait(&[("n1".into(), "t-0".into())], deadline).expect("wait");
    let answer = answers[&("n1".to_owned(), "t-0".to_owned())].as_ref().expect("answered");
    assert!(answer.ok && answer.text == "ok", "{answer:?}");
    drop(first);
    let again = join(&etcd, "n1", 5);
    driver.submit("n1", &op("t-1")).expect("submit");
    assert_eq!(serve(&again), ["t-1"], "t-0 was answered already");
}

/// A rollout record `id` in `phase`, with no waves.
fn running(
    id: &str,
    phase: hotcode_cluster::rollout::Phase,
) -> hotcode_cluster::rollout::RolloutState {
    hotcode_cluster::rollout::RolloutState {
        id: id.to_owned(),
        vsn: "2".into(),
        phase,
        waves: Vec::new(),
        wave: 0,
        places: Default::default(),
        failures: 0,
        reason: None,
        plan: serde_json::Value::Null,
        next_op: 0,
    }
}

/// Serves `member`'s queue until `n` ops were answered; the ids `run` was called for, and
/// the answers, by op id.
fn serve_until(
    driver: &hotcode_cluster::rollout::Driver,
    member: &Member,
    ids: &[&str],
) -> (Vec<String>, std::collections::BTreeMap<String, hotcode_cluster::ops::OpResult>) {
    use hotcode_cluster::ops::OpResult;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    let ran = std::sync::Mutex::new(Vec::new());
    let pending: Vec<(String, String)> =
        ids.iter().map(|id| ("n1".to_owned(), (*id).to_owned())).collect();
    let answers = std::thread::scope(|s| {
        let server = s.spawn(|| {
            member.serve_ops(&stop, |op| {
                ran.lock().unwrap().push(op.id.clone());
                OpResult { id: op.id.clone(), ok: true, text: "ok".into() }
            })
        });
        let answers = driver.wait(&pending, Instant::now() + Duration::from_secs(20));
        stop.store(true, Ordering::SeqCst);
        server.join().expect("server").expect("serve");
        answers.expect("wait")
    });
    let answers =
        answers.into_iter().map(|((_, id), a)| (id, a.expect("answered in time"))).collect();
    (ran.into_inner().unwrap(), answers)
}

/// An op of a rollout that is not running (or not the current one) is answered stale and
/// not run; a rollback of a stopped rollout still runs.
#[test]
fn a_node_runs_no_op_of_a_rollout_that_stopped() {
    use hotcode_cluster::ops::{Op, OpKind, STALE};
    use hotcode_cluster::rollout::{Driver, Phase};

    let etcd = LocalEtcd::start().expect("etcd");
    let driver = Driver::lock(&[etcd.url().to_owned()], "test").expect("lock");
    let install = |id: &str| Op {
        id: id.to_owned(),
        kind: OpKind::Install { vsn: "2".into(), attempt: None },
    };
    let n1 = join(&etcd, "n1", 5);
    // No rollout recorded at all.
    driver.submit("n1", &install("r1-0")).expect("submit");
    let (ran, answers) = serve_until(&driver, &n1, &["r1-0"]);
    assert!(ran.is_empty(), "{ran:?}");
    assert!(answers["r1-0"].text.starts_with(STALE) && !answers["r1-0"].ok, "{answers:?}");
    // Rollout r1 paused: its install is stale, its rollback runs; r10's op is not r1's.
    driver.put_state(&running("r1", Phase::Paused)).expect("record");
    driver.submit("n1", &install("r1-1")).expect("submit");
    driver.submit("n1", &Op { id: "r1-2".into(), kind: OpKind::Rollback }).expect("submit");
    driver.submit("n1", &install("r10-0")).expect("submit");
    let (ran, answers) = serve_until(&driver, &n1, &["r1-1", "r1-2", "r10-0"]);
    assert_eq!(ran, ["r1-2"]);
    assert!(answers["r1-1"].text.contains("rollout r1 is paused"), "{answers:?}");
    assert!(answers["r10-0"].text.contains("not of the current rollout r1"), "{answers:?}");
    // Running again: its ops run.
    driver.put_state(&running("r1", Phase::Running)).expect("record");
    driver.submit("n1", &install("r1-3")).expect("submit");
    let (ran, answers) = serve_until(&driver, &n1, &["r1-3"]);
    assert_eq!(ran, ["r1-3"]);
    assert!(answers["r1-3"].ok, "{answers:?}");
}

/// Unanswered ops are withdrawn (an answered one is kept), so a node that comes back after
/// its rollout stopped finds nothing to run; a driver that lost the lock queues nothing;
/// an unreadable record is an error naming its key.
#[test]
fn a_stopped_rollouts_unanswered_ops_are_withdrawn() {
    use hotcode_cluster::ClusterError;
    use hotcode_cluster::Reader;
    use hotcode_cluster::ops::{Op, OpKind};
    use hotcode_cluster::rollout::{Driver, Phase, lock_key, state_key};

    let etcd = LocalEtcd::start().expect("etcd");
    let endpoints = [etcd.url().to_owned()];
    let driver = Driver::lock(&endpoints, "test").expect("lock");
    driver.put_state(&running("r7", Phase::Running)).expect("record");
    let op = |id: &str| Op { id: id.to_owned(), kind: OpKind::MakePermanent { vsn: "2".into() } };
    let n1 = join(&etcd, "n1", 5);
    driver.submit("n1", &op("r7-0")).expect("submit");
    let (ran, _) = serve_until(&driver, &n1, &["r7-0"]);
    assert_eq!(ran, ["r7-0"]);
    drop(n1);
    // n1 is away; two more ops are queued for it, and n2's, of another rollout, stays.
    driver.submit("n1", &op("r7-1")).expect("submit");
    driver.submit("n1", &op("r7-2")).expect("submit");
    driver.submit("n2", &op("r8-0")).expect("submit");
    let mut left = driver.unanswered("r7").expect("unanswered");
    left.sort();
    assert_eq!(left, [("n1".to_owned(), "r7-1".to_owned()), ("n1".to_owned(), "r7-2".to_owned())]);
    let all = [("n1".to_owned(), "r7-0".to_owned()), left[0].clone(), left[1].clone()];
    assert_eq!(driver.withdraw(&all).expect("withdraw"), 2, "r7-0 was answered: kept");
    let reader = Reader::connect(&endpoints).expect("reader");
    assert_eq!(reader.queued_ops("n1").expect("ops"), ["r7-0"]);
    assert_eq!(reader.queued_ops("n2").expect("ops"), ["r8-0"]);
    // n1 comes back: nothing to run.
    let again = join(&etcd, "n1", 5);
    driver.submit("n1", &op("r7-3")).expect("submit");
    let (ran, _) = serve_until(&driver, &again, &["r7-3"]);
    assert_eq!(ran, ["r7-3"], "the withdrawn r7-1 and r7-2 were not run");

    // An unreadable record, and a driver whose lock is gone, by a plain etcd client.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut client = rt.block_on(etcd_client::Client::connect([etcd.url()], None)).expect("client");
    rt.block_on(client.put(state_key(), "{not json", None)).expect("put");
    match reader.rollout() {
        Err(e @ ClusterError::BadRecord { .. }) => {
            assert!(e.to_string().contains(&state_key()), "{e}");
        }
        other => panic!("expected an unreadable record, got {other:?}"),
    }
    assert!(matches!(driver.state(), Err(ClusterError::BadRecord { .. })));
    rt.block_on(client.delete(lock_key(), None)).expect("delete");
    match driver.submit("n1", &op("r7-4")) {
        Err(ClusterError::Locked { .. }) => {}
        other => panic!("expected the lock lost, got {other:?}"),
    }
    assert_eq!(reader.queued_ops("n1").expect("ops"), ["r7-0", "r7-3"]);
}
