//! Rollouts over a fleet (SPEC §12) against a real etcd: each test starts a private etcd
//! on loopback and real `hotcode boot --cluster` nodes, each on its own root of the
//! service example (svc 1 → 2, and back by the relup's down entry), and drives them with
//! the `hotcode fleet` command. Every wait is bounded (the commands' own deadlines and the
//! harness's `DEADLINE`); nothing sleeps.

use std::path::Path;

use hotcode::cluster::local::LocalEtcd;
use hotcode::cluster::{Reader, rollout::Driver};

use crate::cli::{self, Node};
use crate::fixtures;

/// `n` nodes `n1..`, booted on their own roots and joined to `etcd`.
struct Fleet {
    roots: Vec<tempfile::TempDir>,
    _nodes: Vec<Node>,
    _scratch: tempfile::TempDir,
}

fn fleet(etcd: &LocalEtcd, n: usize) -> Fleet {
    let scratch = cli::scratch();
    let roots: Vec<tempfile::TempDir> = (0..n).map(|_| fixtures::service_root()).collect();
    let nodes = roots
        .iter()
        .enumerate()
        .map(|(i, root)| {
            let name = format!("n{}", i + 1);
            let args = ["--cluster", etcd.url(), "--node", &name, "--error-action", "return"];
            Node::boot_with_args(root.path(), scratch.path(), "info", &args)
        })
        .collect();
    Fleet { roots, _nodes: nodes, _scratch: scratch }
}

fn root(f: &Fleet, i: usize) -> &Path {
    f.roots[i].path()
}

fn fleet_cmd(etcd: &LocalEtcd, args: &[&str]) -> cli::Output {
    let mut all = vec!["fleet", "--cluster", etcd.url()];
    all.extend_from_slice(args);
    cli::hotcode(&all)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

/// `fleet status --json`.
fn status(etcd: &LocalEtcd) -> serde_json::Value {
    let out = fleet_cmd(etcd, &["status", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).expect("status JSON")
}

/// Each node's place in the rollout, by name, from `fleet status --json`.
fn places(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            assert_eq!(n["live"], true, "{n}");
            (
                n["node"].as_str().unwrap_or("?").to_owned(),
                n["place"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_rollout_in_waves_makes_every_node_permanent_on_the_release() {
    let etcd = LocalEtcd::start().expect("etcd");
    let f = fleet(&etcd, 4);
    let out = fleet_cmd(
        &etcd,
        &[
            "install",
            "2",
            "--canary",
            "1",
            "--wave",
            "50%",
            "--health-call",
            "svc_handler:\"GET k\"",
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("canary: n1 -> release 2"), "{}", out.stdout);
    assert!(out.stdout.contains("wave 2: n2 n3 -> release 2"), "{}", out.stdout);
    assert!(out.stdout.contains("wave 3: n4 -> release 2"), "{}", out.stdout);
    for i in 0..4 {
        assert_eq!(
            cli::releases(root(&f, i)),
            pairs(&[("1", "old"), ("2", "permanent")]),
            "n{}",
            i + 1
        );
    }
    let doc = status(&etcd);
    assert_eq!(doc["rollout"]["phase"], "done", "{doc}");
    assert_eq!(
        places(&doc),
        pairs(&[
            ("n1", "permanent"),
            ("n2", "permanent"),
            ("n3", "permanent"),
            ("n4", "permanent")
        ])
    );
    // The same release again: no node needs it.
    let again = fleet_cmd(&etcd, &["install", "2"]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("no live node in the cluster needs release 2"), "{again:?}");
}

#[test]
fn a_canary_failing_its_health_gate_rolls_back_and_the_other_nodes_never_start() {
    let etcd = LocalEtcd::start().expect("etcd");
    let f = fleet(&etcd, 3);
    let before: Vec<_> = (0..3).map(|i| cli::releases(root(&f, i))).collect();
    let out = fleet_cmd(
        &etcd,
        &["install", "2", "--wave", "2", "--health-cmd", "test \"$HOTCODE_NODE\" != n1"],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("n1: health failed"), "{}", out.stdout);
    assert!(out.stdout.contains("n1: rolled-back"), "{}", out.stdout);
    // The canary went back to release 1 by the relup's down entry; 2 is no longer current.
    let n1 = cli::releases(root(&f, 0));
    assert!(n1.contains(&("1".to_owned(), "permanent".to_owned())), "{n1:?}");
    assert!(!n1.iter().any(|(_, s)| s == "current"), "{n1:?}");
    let held = cli::ctl_ok(root(&f, 0), &["call", "svc_handler", "\"GET k\""]);
    assert!(!held.contains("v2"), "n1's handler is version 1 again: {held}");
    // n2 and n3 were never sent anything: the same releases, an empty op queue.
    let reader = Reader::connect(&[etcd.url().to_owned()]).expect("reader");
    for (i, before) in before.iter().enumerate().skip(1) {
        assert_eq!(&cli::releases(root(&f, i)), before, "n{}", i + 1);
        assert_eq!(reader.queued_ops(&format!("n{}", i + 1)).expect("ops"), Vec::<String>::new());
    }
    assert_eq!(reader.queued_ops("n1").expect("ops").len(), 2, "install, rollback");
    let doc = status(&etcd);
    assert_eq!(doc["rollout"]["phase"], "rolled_back", "{doc}");
    assert_eq!(
        places(&doc),
        pairs(&[("n1", "rolled-back"), ("n2", "not-started"), ("n3", "not-started")])
    );
}

#[test]
fn a_paused_rollout_is_promoted_and_a_second_rollout_waits_for_it() {
    let etcd = LocalEtcd::start().expect("etcd");
    let f = fleet(&etcd, 3);
    let out = fleet_cmd(
        &etcd,
        &[
            "install",
            "2",
            "--wave",
            "2",
            "--on-failure",
            "pause",
            "--health-cmd",
            "test \"$HOTCODE_NODE\" != n2",
        ],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("paused"), "{}", out.stdout);
    // The canary passed and is permanent; the second wave is installed, not permanent.
    assert_eq!(cli::releases(root(&f, 0)), pairs(&[("1", "old"), ("2", "permanent")]));
    for i in 1..3 {
        assert_eq!(cli::releases(root(&f, i)), pairs(&[("1", "permanent"), ("2", "current")]));
    }
    let doc = status(&etcd);
    assert_eq!(doc["rollout"]["phase"], "paused", "{doc}");
    let text = fleet_cmd(&etcd, &["status"]);
    assert!(
        text.stdout.contains(
            "n2: live, current 2; releases: 1 permanent, 2 current; rollout: failed: health"
        ),
        "{text:?}"
    );
    // Another rollout is refused while this one is paused.
    let second = fleet_cmd(&etcd, &["install", "2"]);
    assert_eq!(second.code, Some(1), "{second:?}");
    assert!(second.stderr.contains("is paused"), "{second:?}");
    let promoted = fleet_cmd(&etcd, &["promote"]);
    assert_eq!(promoted.code, Some(0), "{promoted:?}");
    for i in 0..3 {
        assert_eq!(cli::releases(root(&f, i)), pairs(&[("1", "old"), ("2", "permanent")]));
    }
    assert_eq!(status(&etcd)["rollout"]["phase"], "done");
    // Nothing is paused any more.
    let again = fleet_cmd(&etcd, &["promote"]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("no paused rollout"), "{again:?}");
}

#[test]
fn a_paused_rollout_is_aborted_as_it_stands() {
    let etcd = LocalEtcd::start().expect("etcd");
    let f = fleet(&etcd, 3);
    let out = fleet_cmd(
        &etcd,
        &["install", "2", "--on-failure", "pause", "--health-cmd", "false", "--wave", "1"],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    let aborted = fleet_cmd(&etcd, &["abort"]);
    assert_eq!(aborted.code, Some(0), "{aborted:?}");
    // The canary keeps release 2 installed, not permanent; the others were never started.
    assert_eq!(cli::releases(root(&f, 0)), pairs(&[("1", "permanent"), ("2", "current")]));
    let reader = Reader::connect(&[etcd.url().to_owned()]).expect("reader");
    for i in 1..3 {
        assert_eq!(cli::releases(root(&f, i)), pairs(&[("1", "permanent"), ("2", "unpacked")]));
        assert_eq!(reader.queued_ops(&format!("n{}", i + 1)).expect("ops"), Vec::<String>::new());
    }
    let doc = status(&etcd);
    assert_eq!(doc["rollout"]["phase"], "aborted", "{doc}");
    assert_eq!(
        places(&doc),
        pairs(&[
            ("n1", "failed: health: `false` failed (exit status: 1)"),
            ("n2", "not-started"),
            ("n3", "not-started")
        ])
    );
    // Run again: n1, on release 2 already (current), counts as installed.
    let again = fleet_cmd(&etcd, &["install", "2", "--canary", "0", "--wave", "3"]);
    assert_eq!(again.code, Some(0), "{again:?}");
    for i in 0..3 {
        assert_eq!(cli::releases(root(&f, i)), pairs(&[("1", "old"), ("2", "permanent")]));
    }
}

#[test]
fn one_rollout_at_a_time_the_lock_refuses_a_second() {
    let etcd = LocalEtcd::start().expect("etcd");
    let f = fleet(&etcd, 3);
    // Bad input is refused before anything is taken or sent.
    for (flag, value) in [
        ("--wave", "0%"),
        ("--health-call", "no-request"),
        ("--progress-deadline", "18446744073709551615"),
    ] {
        let out = fleet_cmd(&etcd, &["install", "2", flag, value]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains(value), "{out:?}");
    }
    for vsn in ["../2", ".hidden", ".."] {
        let out = fleet_cmd(&etcd, &["install", vsn]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains(&format!("release {vsn:?}")), "{out:?}");
    }
    assert!(
        Reader::connect(&[etcd.url().to_owned()])
            .expect("reader")
            .rollout()
            .expect("read")
            .is_none()
    );
    // A driver holds the lock (a rollout under way in another command).
    let driver = Driver::lock(&[etcd.url().to_owned()], "the test's rollout").expect("lock");
    let out = fleet_cmd(&etcd, &["install", "2"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("the lock is held by the test's rollout"), "{out:?}");
    for i in 0..3 {
        assert_eq!(cli::releases(root(&f, i)), pairs(&[("1", "permanent"), ("2", "unpacked")]));
    }
    // Released with its lease: the next rollout runs.
    drop(driver);
    let out = fleet_cmd(&etcd, &["install", "2", "--canary", "0", "--wave", "3"]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// Release 2's relup with no way back down.
const UP_ONLY: &str = "{\"2\",\n [{\"1\", [],\n   [{load_object_code,{svc,\"2\",[svc_handler]}},\n    \
    point_of_no_return,\n    {suspend,[svc_handler]},\n    \
    {load,{svc_handler,brutal_purge,brutal_purge}},\n    \
    {code_change,up,[{svc_handler,[]}]},\n    {resume,[svc_handler]}]}],\n []}.\n";

#[test]
fn a_node_with_no_relup_back_restarts_to_its_permanent_release() {
    let etcd = LocalEtcd::start().expect("etcd");
    let scratch = cli::scratch();
    let root = fixtures::service_root();
    std::fs::write(root.path().join("releases/2/relup"), UP_ONLY).expect("relup");
    let args = ["--cluster", etcd.url(), "--node", "n1", "--error-action", "return"];
    let node = Node::boot_with_args(root.path(), scratch.path(), "info", &args);
    let out = fleet_cmd(&etcd, &["install", "2", "--health-cmd", "false"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("n1: rolled-back"), "{}", out.stdout);
    // The node answered the rollback, then exited 3 for its service manager to start it
    // again, on release 1: release 2 was installed, never permanent.
    let status = node.wait_exit();
    assert_eq!(status.code(), Some(3), "{status:?}");
    let record = std::fs::read_to_string(root.path().join("run/last-exit")).expect("last-exit");
    assert!(record.contains("fleet rollback: no downgrade from 2 back to 1"), "{record}");
    let releases =
        hotcode::release::read_releases(&root.path().join("releases/RELEASES")).expect("RELEASES");
    let permanent: Vec<&str> = releases
        .iter()
        .filter(|r| r.status == hotcode::release::ReleaseStatus::Permanent)
        .map(|r| r.vsn.as_str())
        .collect();
    assert_eq!(permanent, ["1"]);
}

#[test]
fn a_wave_not_through_its_gate_by_the_progress_deadline_fails_the_rollout() {
    let etcd = LocalEtcd::start().expect("etcd");
    let f = fleet(&etcd, 2);
    // The gate never answers: it is killed at the deadline, and the canary rolled back. The
    // deadline leaves the install (well under a second) room on a loaded machine; the gate
    // blocks until it is killed, so only the deadline ends the wave.
    let out = fleet_cmd(
        &etcd,
        &["install", "2", "--progress-deadline", "8", "--health-cmd", "sleep 600"],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("killed"), "{}", out.stdout);
    assert!(out.stdout.contains("within the progress deadline"), "{}", out.stdout);
    assert_eq!(cli::releases(root(&f, 1)), pairs(&[("1", "permanent"), ("2", "unpacked")]));
    let n1 = cli::releases(root(&f, 0));
    assert!(!n1.iter().any(|(_, s)| s == "current"), "{n1:?}");
    assert_eq!(places(&status(&etcd)), pairs(&[("n1", "rolled-back"), ("n2", "not-started")]));
}

/// A release of the service example as `hotcode release` makes it, from the test build.
fn svc_source(vsn: &str) -> hotcode::release::assemble::ReleaseSource {
    use hotcode::release::assemble::{Libraries, ReleaseSource};
    let app_vsn = format!("svc-{vsn}");
    ReleaseSource {
        name: "svc".into(),
        vsn: vsn.into(),
        host_vsn: hotcode::release_handler::HOST_VSN.into(),
        apps: vec![fixtures::app_file(&app_vsn)],
        libraries: Libraries {
            dirs: Vec::new(),
            modules: ["svc_app", "svc_sup", "svc_handler"]
                .into_iter()
                .map(|m| (m.to_owned(), fixtures::module_lib(&app_vsn, m)))
                .collect(),
        },
        host_binary: None,
    }
}

#[test]
fn a_package_given_to_the_rollout_is_unpacked_by_every_node() {
    use hotcode::release::assemble::{self, RelupSource};
    let etcd = LocalEtcd::start().expect("etcd");
    let scratch = cli::scratch();
    // The build root has releases 1 and 2; each node's root only release 1.
    let build = scratch.path().join("build");
    assemble::new_root(&build, &svc_source("1"), &|_| Ok(())).expect("release 1");
    assemble::add_release(&build, &svc_source("2"), &RelupSource::Make { from: None }, &|_| Ok(()))
        .expect("release 2");
    let package = scratch.path().join("svc-2.tar.gz");
    assemble::make_tar(&build, "2", &package).expect("package");
    let roots: Vec<std::path::PathBuf> = (1..=3)
        .map(|i| {
            let root = scratch.path().join(format!("node{i}"));
            assemble::new_root(&root, &svc_source("1"), &|_| Ok(())).expect("node root");
            root
        })
        .collect();
    let _nodes: Vec<Node> = roots
        .iter()
        .enumerate()
        .map(|(i, root)| {
            let name = format!("n{}", i + 1);
            let args = ["--cluster", etcd.url(), "--node", &name];
            Node::boot_with_args(root, scratch.path(), "info", &args)
        })
        .collect();
    for root in &roots {
        assert_eq!(cli::releases(root), pairs(&[("1", "permanent")]));
    }
    let pkg = package.display().to_string();
    // A first rollout fails at the canary and is rolled back: n1 keeps release 2 unpacked.
    let failed = fleet_cmd(&etcd, &["install", "2", "--package", &pkg, "--health-cmd", "false"]);
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(failed.stdout.contains("n1: rolled-back"), "{}", failed.stdout);
    assert!(cli::releases(&roots[0]).iter().any(|(v, _)| v == "2"), "n1 unpacked release 2");
    // Run again: n1 is not asked to unpack what it has.
    let out = fleet_cmd(&etcd, &["install", "2", "--package", &pkg, "--wave", "2"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for root in &roots {
        assert_eq!(cli::releases(root), pairs(&[("1", "old"), ("2", "permanent")]));
    }
}

#[test]
fn any_failure_of_the_canary_fails_the_rollout_whatever_the_threshold() {
    let etcd = LocalEtcd::start().expect("etcd");
    let f = fleet(&etcd, 2);
    let out = fleet_cmd(
        &etcd,
        &["install", "2", "--max-failures", "1", "--health-cmd", "test \"$HOTCODE_NODE\" != n1"],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("any failure of the canary fails the rollout"), "{}", out.stdout);
    assert_eq!(cli::releases(root(&f, 1)), pairs(&[("1", "permanent"), ("2", "unpacked")]));
    let doc = status(&etcd);
    assert_eq!(doc["rollout"]["phase"], "rolled_back", "{doc}");
    assert_eq!(places(&doc), pairs(&[("n1", "rolled-back"), ("n2", "not-started")]));
    // Rolled back, the same release again: n1 has it unpacked, the rollout goes through.
    let again = fleet_cmd(&etcd, &["install", "2", "--canary", "0", "--wave", "2"]);
    assert_eq!(again.code, Some(0), "{again:?}");
}

#[test]
fn a_rollout_whose_driver_died_running_is_not_promoted() {
    use hotcode::cluster::rollout::{Phase, RolloutState};
    let etcd = LocalEtcd::start().expect("etcd");
    let driver = Driver::lock(&[etcd.url().to_owned()], "a driver that dies").expect("lock");
    let plan = serde_json::json!({
        "vsn": "2", "package": null, "canary": 1, "wave": {"nodes": 1}, "health": null,
        "max_failures": 0, "progress_deadline": {"secs": 5, "nanos": 0}, "on_failure": "rollback"
    });
    let state = RolloutState {
        id: "r1".into(),
        vsn: "2".into(),
        phase: Phase::Running,
        waves: vec![vec!["n1".into()]],
        wave: 0,
        places: [("n1".to_owned(), "checking".to_owned())].into_iter().collect(),
        failures: 0,
        reason: None,
        plan,
        next_op: 1,
    };
    driver.put_state(&state).expect("record");
    drop(driver);
    let out = fleet_cmd(&etcd, &["promote"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot be promoted"), "{out:?}");
    let reader = Reader::connect(&[etcd.url().to_owned()]).expect("reader");
    assert_eq!(reader.rollout().expect("read").expect("recorded").phase, Phase::Running);
    // Abort takes it.
    let out = fleet_cmd(&etcd, &["abort"]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// The `--health-call` gate is bounded by the deadline even when the node never answers:
/// a stopped (SIGSTOP) node fails the check by the deadline.
#[test]
fn a_health_call_to_a_stopped_node_ends_at_the_deadline() {
    use hotcode::fleet::gate::Health;
    use std::time::{Duration, Instant};
    let scratch = cli::scratch();
    let root = fixtures::service_root();
    let node = Node::boot(root.path(), scratch.path());
    let pid = libc::pid_t::try_from(node.pid()).expect("pid fits pid_t");
    // SAFETY: kill(2) touches no memory of ours; the pid is our unreaped child's.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let gate = Health::parse_call("svc_handler:\"GET k\"").expect("gate");
    let started = Instant::now();
    let checked = gate.check("n1", Some(root.path()), "2", started + Duration::from_secs(2));
    let took = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let why = checked.expect_err("a stopped node is not healthy");
    assert!(why.contains("no answer within"), "{why}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    drop(node);
}
