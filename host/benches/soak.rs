//! The soak: 10,000 upgrade/downgrade cycles under load, and nothing may grow or fail.
//!
//! The service example runs as an application (`svc`: `svc_app`, `svc_sup`, one
//! `svc_handler` process) behind the TCP front end ([`LineServer`]), with two
//! [`LoadGen`] clients sending `INCR` without pause. Each client owns one key, so it
//! knows the exact value every reply must carry: a lost, doubled or garbled update, an
//! error or a dropped connection is a failed call.
//!
//! A cycle is an upgrade to version 2 and a downgrade back to 1, each done the way a
//! relup does it (`load_object_code`, suspend, `load` with brutal purges, `code_change`,
//! resume; the `down` change comes after the load, so the state moves at once), and each
//! waits until the clients got at least one answer from the new version's era, so every
//! version really serves. After a warm-up of 50 cycles the process's resident set
//! (`VmRSS`), its open file descriptors and the plugin copies mapped from the code
//! server's scratch directory are recorded, and again after the last cycle. Steady state
//! has one extra mapped copy (the old version, purged only by the next load), so growth
//! is measured against the warm-up baseline, not against a fresh node. SPEC §10 asks for
//! 0 failed calls, no growth in mapped files and fds, and RSS growth under 2 MiB.
//!
//! `HOTCODE_SOAK_CYCLES` overrides the number of cycles (default 10,000). Results go to
//! `target/bench-results/soak.json` for `cargo xtask bench`.

#[allow(dead_code)] // each benchmark uses part of the shared helpers
mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Mode;
use hotcode::release::files::AppSpec;
use hotcode::service::{LineServer, LoadGen};
use hotcode::{ChangeMode, Node, Pid, PurgeMethod, RestartType};
use plugin_api::Term;

const MODULE: &str = "svc_handler";
const DEFAULT_CYCLES: usize = 10_000;
const WARM_UP: usize = 50;
const PROGRESS_EVERY: usize = 1_000;
/// Generous: a timeout here is a failure, never a measurement.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What is measured at the start and at the end.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss_kib: i64,
    fds: i64,
    mapped_plugin_files: i64,
}

impl Footprint {
    fn now(scratch: &Path) -> Footprint {
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .expect("VmRSS in /proc/self/status");
        // The directory listing's own descriptor is counted both times alike.
        let fds = std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count() as i64;
        let mapped =
            hotcode::code::maps::mapped_files_under(scratch).expect("read /proc/self/maps");
        Footprint { rss_kib, fds, mapped_plugin_files: mapped.len() as i64 }
    }
}

/// Moves the handler to the version in `path`, the way a relup does (see the module docs).
fn install(node: &Node, pid: Pid, path: &Path, mode: ChangeMode) {
    node.code().load_object_code(MODULE, path).expect("load_object_code");
    node.suspend(pid, TIMEOUT).expect("suspend");
    node.load_module(MODULE, PurgeMethod::BrutalPurge, PurgeMethod::BrutalPurge).expect("load");
    node.change_code(pid, mode, Term::List(vec![]), TIMEOUT).expect("change_code");
    node.resume(pid).expect("resume");
}

/// Waits until the clients have `answered` more than `before` answers.
fn wait_for_answer(load: &LoadGen, before: u64) {
    let deadline = Instant::now() + TIMEOUT;
    while load.answered() <= before {
        assert!(Instant::now() < deadline, "no answer for {TIMEOUT:?}: the service is stuck");
        std::thread::yield_now();
    }
}

fn main() {
    let mode = common::mode("soak");
    let (cycles, warm_up) = match mode {
        Mode::Skip => return,
        Mode::Smoke => (3, 2),
        Mode::Bench => (
            std::env::var("HOTCODE_SOAK_CYCLES")
                .ok()
                .map(|v| v.parse::<usize>().expect("HOTCODE_SOAK_CYCLES: a number"))
                .unwrap_or(DEFAULT_CYCLES),
            WARM_UP,
        ),
    };
    let v1 = common::plugin("svc_handler_v1");
    let v2 = common::plugin("svc_handler_v2");

    // Release 1 of the service, booted by hand: its modules, its .app, the application.
    let node = Node::new().expect("node");
    for (module, lib) in
        [("svc_app", "svc_app_v1"), ("svc_sup", "svc_sup_v1"), (MODULE, "svc_handler_v1")]
    {
        node.code().load_object_code(module, common::plugin(lib)).expect("load_object_code");
        node.code().load(module, PurgeMethod::SoftPurge, PurgeMethod::SoftPurge).expect("load");
    }
    let app = AppSpec::read(&common::workspace().join("plugins/svc-1/svc.app")).expect("svc.app");
    node.load_application(app).expect("load_application");
    node.start_application("svc", RestartType::Temporary).expect("start_application");
    let handler = *node.processes_running(MODULE).first().expect("a svc_handler process");

    let server =
        LineServer::start(node.reference(), "127.0.0.1:0", MODULE, 2).expect("line server");
    let load = LoadGen::start(server.addr(), 2, "soak").expect("load generator");
    let scratch = node.code().scratch_dir().to_owned();

    let cycle = || {
        let before = load.answered();
        install(&node, handler, &v2, ChangeMode::Up);
        wait_for_answer(&load, before);
        let before = load.answered();
        install(&node, handler, &v1, ChangeMode::Down);
        wait_for_answer(&load, before);
    };

    eprintln!("soak: {warm_up} warm-up + {cycles} cycles, 2 clients over TCP");
    for _ in 0..warm_up {
        cycle();
    }
    let start = Footprint::now(&scratch);
    eprintln!("soak: baseline after warm-up: {start:?}");
    let started = Instant::now();
    for n in 1..=cycles {
        cycle();
        if n % PROGRESS_EVERY == 0 || n == cycles {
            let now = Footprint::now(&scratch);
            eprintln!(
                "soak: {n:>6} cycles, {:>6.1} s, {} answers, RSS {} KiB, {} fds, {} mapped copies",
                started.elapsed().as_secs_f64(),
                load.answered(),
                now.rss_kib,
                now.fds,
                now.mapped_plugin_files
            );
        }
    }
    let elapsed = started.elapsed();
    let end = Footprint::now(&scratch);

    let report = load.finish();
    let server_failed = server.stats().failed.load(Ordering::Relaxed);
    drop(server);
    let same_handler = node.processes_running(MODULE) == [handler];
    for problem in &report.problems {
        eprintln!("soak: failed call: {problem}");
    }
    let failed = report.failed + server_failed + u64::from(!same_handler);
    if !same_handler {
        eprintln!("soak: the handler process was restarted: a cycle crashed it");
    }

    let fields = [
        ("cycles", cycles as f64),
        ("failed_calls", failed as f64),
        ("rss_growth_kib", (end.rss_kib - start.rss_kib) as f64),
        (
            "mapped_plugin_files_growth",
            (end.mapped_plugin_files - start.mapped_plugin_files) as f64,
        ),
        ("fd_growth", (end.fds - start.fds) as f64),
        ("rss_start_kib", start.rss_kib as f64),
        ("rss_end_kib", end.rss_kib as f64),
        ("fds_start", start.fds as f64),
        ("mapped_plugin_files_start", start.mapped_plugin_files as f64),
        ("answered", report.requests as f64),
        ("answered_by_v1", report.by_version[0] as f64),
        ("answered_by_v2", report.by_version[1] as f64),
        ("max_latency_us", report.max_latency_us as f64),
        ("duration_s", elapsed.as_secs_f64()),
    ];
    for (key, value) in &fields {
        eprintln!("soak: {key:<28} {value}");
    }
    if matches!(mode, Mode::Bench) {
        let path = common::write_results("soak", &fields);
        eprintln!("soak: wrote {}", path.display());
    }
    if failed > 0 {
        eprintln!("soak: FAILED: {failed} failed calls");
        std::process::exit(1);
    }
}
