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
    use hotcode_cluster::rollout::Driver;
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
