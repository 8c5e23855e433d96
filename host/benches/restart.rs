//! Host restarts under load (SPEC §10, §11): 20 `hotcode ctl ROOT restart`s of a node of
//! the `hotcode` binary serving the service example over TCP while two [`LoadGen`] clients
//! send `INCR` without pause and check every answer.
//!
//! Each restart starts a new `hotcode` process, which takes over the root's lock, the
//! control socket and the TCP listener; the old one drains its connections and hands the
//! counters of `svc_handler` (which opts in) to its successor. A client whose connection
//! the drain closed reconnects and sends its request again; a counter that did not move by
//! exactly one, an error or a refused connection would count.
//!
//! The results, in `target/bench-results/restart.json`:
//!
//! - `cycles`: restarts made;
//! - `failed_requests`: requests not answered right (SPEC: 0);
//! - `refused_connections`: connection attempts refused (SPEC: 0);
//! - `handover_ms_median`: from the restart request to the new process reporting ready
//!   (when `ctl restart` returns);
//! - `unavailable_ms_max`: the slowest request of the run, from its first send to its
//!   answer: for a request caught by a restart, the drain, the reconnection and the wait
//!   in the socket's queue until the new process accepts.
//!
//! `HOTCODE_RESTART_CYCLES` overrides the number of restarts (default 20).

#[allow(dead_code)] // each benchmark uses part of the shared helpers
mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Mode;
use hotcode::release::assemble::{self, Libraries, ReleaseSource};
use hotcode::service::LoadGen;

const DEFAULT_CYCLES: usize = 20;
/// Generous: a timeout here is a failure, never a measurement.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Answers each restart waits for from the new process.
const ANSWERS: u64 = 20;

/// The `hotcode` binary cargo built with this benchmark.
fn hotcode() -> PathBuf {
    std::env::var_os("CARGO_BIN_EXE_hotcode")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hotcode")), PathBuf::from)
}

/// A release root of the service example, release 1 permanent, made as `hotcode release
/// new` makes one, from the release-built plugins.
fn service_root(parent: &Path) -> PathBuf {
    let root = parent.join("service");
    let modules: BTreeMap<String, PathBuf> =
        [("svc_app", "svc_app_v1"), ("svc_sup", "svc_sup_v1"), ("svc_handler", "svc_handler_v1")]
            .into_iter()
            .map(|(module, lib)| (module.to_owned(), common::plugin(lib)))
            .collect();
    let source = ReleaseSource {
        name: "svc".into(),
        vsn: "1".into(),
        host_vsn: hotcode::release_handler::HOST_VSN.into(),
        apps: vec![common::workspace().join("plugins/svc-1/svc.app")],
        libraries: Libraries { dirs: Vec::new(), modules },
        host_binary: None,
    };
    assemble::new_root(&root, &source, &|_| Ok(())).expect("the service root");
    root
}

fn ctl(root: &Path, args: &[&str]) -> String {
    let out = Command::new(hotcode()).arg("ctl").arg(root).args(args).output().expect("ctl");
    assert!(out.status.success(), "ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `load` has `more` answers beyond `since`.
fn answers(load: &LoadGen, since: u64, more: u64) -> u64 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let n = load.answered();
        if n >= since + more {
            return n;
        }
        assert!(Instant::now() < deadline, "only {} answers", n - since);
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    let cycles = match common::mode("restart") {
        Mode::Skip => return,
        Mode::Smoke => 2,
        Mode::Bench => std::env::var("HOTCODE_RESTART_CYCLES")
            .ok()
            .map(|v| v.parse::<usize>().expect("HOTCODE_RESTART_CYCLES: a number"))
            .unwrap_or(DEFAULT_CYCLES),
    };
    let scratch = tempfile::Builder::new().prefix("hotcode-restart-").tempdir().expect("tmp");
    let root = service_root(scratch.path());
    let mut node = Command::new(hotcode())
        .arg("boot")
        .arg(&root)
        .args(["--tcp", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hotcode boot");
    let stdout = node.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || lines.recv_timeout(TIMEOUT).expect("a line from the node");
    next_line();
    let addr: std::net::SocketAddr = next_line()
        .strip_prefix("hotcode: service on ")
        .expect("the service line")
        .parse()
        .expect("an address");
    let load = LoadGen::start(addr, 2, "restart").expect("load generator");
    let mut seen = answers(&load, 0, ANSWERS);
    eprintln!("restart: {cycles} host restarts under load from 2 clients");
    let mut handovers = Vec::with_capacity(cycles);
    let mut pid = node.id();
    for n in 1..=cycles {
        let started = Instant::now();
        let out = ctl(&root, &["restart"]);
        handovers.push(started.elapsed());
        let new: u32 = out
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {out:?}"));
        assert_ne!(new, pid, "a new process");
        pid = new;
        next_line();
        next_line();
        seen = answers(&load, seen, ANSWERS);
        if n % 5 == 0 || n == cycles {
            eprintln!("restart: {n:>3} restarts, {seen} answers");
        }
    }
    let report = load.finish();
    // SAFETY: kill(2) touches no memory; `pid` is the node's, which answered just now.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + TIMEOUT;
    while root.join("run/hotcode.sock").exists() {
        assert!(Instant::now() < deadline, "the node did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = node.wait();
    handovers.sort();
    let median = common::percentile(&handovers, 0.5);
    eprintln!(
        "restart: {} requests, {} failed, {} refused, {} reconnections; handover median {:.1} ms \
         (max {:.1} ms); slowest request {:.1} ms",
        report.requests,
        report.failed,
        report.refused,
        report.reconnects,
        common::ms(median),
        common::ms(*handovers.last().expect("a restart")),
        report.max_latency_us as f64 / 1e3
    );
    if !report.problems.is_empty() {
        eprintln!("restart: problems: {}", report.problems.join("; "));
    }
    if matches!(common::mode("restart"), Mode::Bench) {
        let path = common::write_results(
            "restart",
            &[
                ("cycles", cycles as f64),
                ("failed_requests", report.failed as f64),
                ("refused_connections", report.refused as f64),
                ("handover_ms_median", common::ms(median)),
                ("unavailable_ms_max", report.max_latency_us as f64 / 1e3),
                ("requests", report.requests as f64),
                ("reconnects", report.reconnects as f64),
            ],
        );
        eprintln!("restart: wrote {}", path.display());
    }
    assert_eq!(report.failed, 0, "{:?}", report.problems);
    assert_eq!(report.refused, 0);
}
