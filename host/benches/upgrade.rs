//! The cost of one upgrade while the module is busy: what a relup's steps cost in wall
//! time, and how long the processes are frozen.
//!
//! A node runs 100 gen_server processes of `svc_handler` while 2 threads call them
//! without pause (then, on fresh nodes, 1,000 and 10,000 processes, with fewer cycles). Each cycle moves the module to the other version (2, then back to 1) in
//! the order a relup does it:
//!
//! 0. (untimed) the previous cycle's old version is purged, as `make_permanent` does after
//!    an install: nothing holds it any more;
//! 1. `load_object_code` (before the point of no return, nothing is suspended yet);
//! 2. `suspend_many` of all 100 processes;
//! 3. `load` with brutal pre- and post-purge (`{load, {svc_handler, brutal_purge,
//!    brutal_purge}}`), which finds no old version left to purge;
//! 4. `change_code_many`: `up` going to 2; `down` going to 1, issued after the load so
//!    every process migrates its state right away (through version 2's
//!    `downgrade_state`), inside the window;
//! 5. `resume_many` of all of them (a flag each, in one pass).
//!
//! The *suspend window* runs from the start of 2 to the end of 5: the time during which a
//! call to any of the processes waits. It ends when every process has *handled* its resume,
//! as OTP's synchronous `sys:resume` does: `Node::resume_many` returns once every process
//! has resumed (on a runtime where it only sent the message, the window would end early). The
//! *load time* is 1 plus 3. SPEC §10 asks for a window p99 ≤ 0.5 ms at 100 processes and
//! ≤ 25 ms at 10,000, and a load median ≤ 1 ms, on the 2-core reference machine.
//!
//! The callers' rate is measured over one second before the cycles (*steady*) and over the
//! windows (the calls completed between each window's start and end): SPEC §10 asks that
//! the callers keep at least half their steady rate during upgrades.
//!
//! Every reply is checked: each process is called by one caller only, so the caller
//! knows the exact counter value each reply must carry, whichever version answers. A
//! single failed or wrong call fails the run. Results go to
//! `target/bench-results/upgrade{,_1k,_10k}.json` for `cargo xtask bench`.
//!
//! `HOTCODE_UPGRADE_CYCLES` overrides the number of measured cycles at 100 processes
//! (default 200; 40 at 1,000 and 10 at 10,000).

#[allow(dead_code)] // each benchmark uses part of the shared helpers
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Mode, ms, percentile, us};
use hotcode::{ChangeMode, Node, NodeRef, Pid, PurgeMethod};
use plugin_api::Term;

const MODULE: &str = "svc_handler";
const CALLERS: usize = 2;
/// Each run: its result file, its processes, its default number of measured cycles and
/// its unmeasured warm-up cycles (the first loads fault in the files and fill the
/// allocator).
const SIZES: [(&str, usize, usize, usize); 3] =
    [("upgrade", 100, 200, 6), ("upgrade_1k", 1_000, 40, 4), ("upgrade_10k", 10_000, 10, 2)];
/// How long the callers' steady rate is measured before the cycles.
const STEADY: Duration = Duration::from_secs(1);
/// Generous: a timeout here is a failure, never a measurement.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What one caller saw.
#[derive(Default)]
struct CallerReport {
    calls: u64,
    failed: u64,
    problems: Vec<String>,
}

/// Calls its own processes round robin until `stop`, checking every reply: process `p`'s
/// counter `k` must read exactly one more than after the previous call to `p`.
fn caller(
    node: NodeRef,
    pids: Vec<Pid>,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
) -> CallerReport {
    let mut report = CallerReport::default();
    let mut expected = vec![1i64; pids.len()];
    let request = Term::Str("INCR k".into());
    while !stop.load(Ordering::Relaxed) {
        for (pid, expect) in pids.iter().zip(expected.iter_mut()) {
            let reply = node.call(*pid, request.clone(), TIMEOUT);
            let value = match &reply {
                Ok(Term::Str(text)) => match text.split_whitespace().collect::<Vec<_>>()[..] {
                    ["OK", n, "v1" | "v2"] => n.parse::<i64>().ok(),
                    _ => None,
                },
                _ => None,
            };
            if value == Some(*expect) {
                report.calls += 1;
                calls.fetch_add(1, Ordering::Relaxed);
                *expect += 1;
            } else {
                report.failed += 1;
                if report.problems.len() < 5 {
                    report.problems.push(format!("{pid}: expected OK {expect}, got {reply:?}"));
                }
                if let Some(n) = value {
                    *expect = n + 1;
                }
            }
        }
    }
    report
}

/// The timings of one measured cycle.
struct Cycle {
    object_code: Duration,
    suspend: Duration,
    load: Duration,
    change_code: Duration,
    resume: Duration,
    window: Duration,
    /// The callers' calls completed during the window.
    calls: u64,
}

/// Moves every process to the version in `path`, the way a relup does; see the module docs.
fn upgrade(
    node: &Node,
    pids: &[Pid],
    path: &std::path::Path,
    mode: ChangeMode,
    calls: &AtomicU64,
) -> Cycle {
    // The previous install's post-purge, as make_permanent runs it: every process moved to
    // the current version, so the old one is free and goes now, not inside the next window.
    node.purge(MODULE);
    let t = Instant::now();
    node.code().load_object_code(MODULE, path).expect("load_object_code");
    let object_code = t.elapsed();

    let calls_before = calls.load(Ordering::Relaxed);
    let window_start = Instant::now();
    for (pid, answer) in node.suspend_many(pids, TIMEOUT) {
        answer.unwrap_or_else(|e| panic!("suspend {pid}: {e}"));
    }
    let suspend = window_start.elapsed();

    let t = Instant::now();
    node.load_module(MODULE, PurgeMethod::BrutalPurge, PurgeMethod::BrutalPurge).expect("load");
    let load = t.elapsed();

    let t = Instant::now();
    for (pid, answer) in node.change_code_many(pids, mode, &Term::List(vec![]), TIMEOUT) {
        answer.unwrap_or_else(|e| panic!("change_code {pid}: {e}"));
    }
    let change_code = t.elapsed();

    let t = Instant::now();
    for (pid, answer) in node.resume_many(pids) {
        answer.unwrap_or_else(|e| panic!("resume {pid}: {e}"));
    }
    let resume = t.elapsed();
    let window = window_start.elapsed();
    let calls = calls.load(Ordering::Relaxed) - calls_before;
    Cycle { object_code, suspend, load, change_code, resume, window, calls }
}

/// The median of one measure over the measured cycles.
fn median(cycles: &[Cycle], measure: impl Fn(&Cycle) -> Duration) -> Duration {
    percentile(&sorted(cycles, measure), 0.5)
}

/// One measure over the measured cycles, sorted.
fn sorted(cycles: &[Cycle], measure: impl Fn(&Cycle) -> Duration) -> Vec<Duration> {
    let mut samples: Vec<Duration> = cycles.iter().map(measure).collect();
    samples.sort();
    samples
}

fn main() {
    let mode = common::mode("upgrade");
    let (sizes, cycles_100) = match mode {
        Mode::Skip => return,
        Mode::Smoke => (&SIZES[..2], 2),
        Mode::Bench => (
            &SIZES[..],
            std::env::var("HOTCODE_UPGRADE_CYCLES")
                .ok()
                .map(|v| v.parse::<usize>().expect("HOTCODE_UPGRADE_CYCLES: a number"))
                .unwrap_or(SIZES[0].2),
        ),
    };
    let mut failed = 0;
    for &(name, processes, cycles, warm_up) in sizes {
        let cycles = match mode {
            Mode::Smoke => 2,
            _ if processes == SIZES[0].1 => cycles_100,
            _ => cycles,
        };
        failed += run(&mode, name, processes, cycles, warm_up);
    }
    if failed > 0 {
        eprintln!("upgrade: FAILED: {failed} calls failed");
        std::process::exit(1);
    }
}

/// One run at `processes` processes on a fresh node; returns the number of failed calls.
fn run(mode: &Mode, name: &str, processes: usize, cycles: usize, warm_up: usize) -> u64 {
    let v1 = common::plugin("svc_handler_v1");
    let v2 = common::plugin("svc_handler_v2");

    let node = Node::new().expect("node");
    node.code().load_object_code(MODULE, &v1).expect("load_object_code v1");
    node.code().load(MODULE, PurgeMethod::SoftPurge, PurgeMethod::SoftPurge).expect("load v1");
    let pids: Vec<Pid> = (0..processes)
        .map(|_| node.start_gen_server(MODULE, Term::List(vec![]), None).expect("start"))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let callers: Vec<JoinHandle<CallerReport>> = (0..CALLERS)
        .map(|c| {
            // Caller c owns every CALLERS-th process, so each process has one caller.
            let own: Vec<Pid> = pids.iter().skip(c).step_by(CALLERS).copied().collect();
            let (node, stop, calls) = (node.reference(), stop.clone(), calls.clone());
            std::thread::Builder::new()
                .name(format!("caller-{c}"))
                .spawn(move || caller(node, own, stop, calls))
                .expect("spawn caller")
        })
        .collect();
    // The callers must be busy before the steady rate is taken.
    while calls.load(Ordering::Relaxed) < 200 {
        std::thread::yield_now();
    }
    let (steady_start, steady_calls) = (Instant::now(), calls.load(Ordering::Relaxed));
    std::thread::sleep(STEADY);
    let steady_rate = (calls.load(Ordering::Relaxed) - steady_calls) as f64
        / steady_start.elapsed().as_secs_f64();

    eprintln!(
        "{name}: {processes} processes, {CALLERS} busy callers, {warm_up} warm-up + {cycles} \
         measured cycles"
    );
    let started = Instant::now();
    let calls_before = calls.load(Ordering::Relaxed);
    let mut measured = Vec::with_capacity(cycles);
    for n in 0..warm_up + cycles {
        let cycle = if n % 2 == 0 {
            upgrade(&node, &pids, &v2, ChangeMode::Up, &calls)
        } else {
            upgrade(&node, &pids, &v1, ChangeMode::Down, &calls)
        };
        if n >= warm_up {
            measured.push(cycle);
        }
    }
    let elapsed = started.elapsed();
    let calls_during = calls.load(Ordering::Relaxed) - calls_before;

    stop.store(true, Ordering::Relaxed);
    let reports: Vec<CallerReport> =
        callers.into_iter().map(|c| c.join().expect("caller panicked")).collect();
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    let total: u64 = reports.iter().map(|r| r.calls).sum();
    for problem in reports.iter().flat_map(|r| &r.problems) {
        eprintln!("{name}: failed call: {problem}");
    }
    assert!(
        node.processes().len() == processes,
        "a process died during the upgrades: {} left",
        node.processes().len()
    );
    drop(node);

    let windows = sorted(&measured, |c| c.window);
    let loads = sorted(&measured, |c| c.object_code + c.load);
    let window_s: f64 = measured.iter().map(|c| c.window.as_secs_f64()).sum();
    let in_windows: u64 = measured.iter().map(|c| c.calls).sum();
    let fields = [
        ("processes", processes as f64),
        ("cycles", cycles as f64),
        ("load_ms_median", ms(percentile(&loads, 0.5))),
        ("load_ms_p99", ms(percentile(&loads, 0.99))),
        ("suspend_window_us_p50", us(percentile(&windows, 0.5))),
        ("suspend_window_us_p99", us(percentile(&windows, 0.99))),
        ("suspend_window_us_max", us(percentile(&windows, 1.0))),
        ("window_ms_p50", ms(percentile(&windows, 0.5))),
        ("window_ms_p99", ms(percentile(&windows, 0.99))),
        ("phase_us_median.load_object_code", us(median(&measured, |c| c.object_code))),
        ("phase_us_median.suspend_many", us(median(&measured, |c| c.suspend))),
        ("phase_us_median.load", us(median(&measured, |c| c.load))),
        ("phase_us_median.change_code_many", us(median(&measured, |c| c.change_code))),
        ("phase_us_median.resume", us(median(&measured, |c| c.resume))),
        ("steady_calls_per_s", steady_rate),
        ("calls_per_cycle_during_window", in_windows as f64 / cycles as f64),
        ("steady_calls_per_window", steady_rate * window_s / cycles as f64),
        ("callers_rate_during_vs_steady", in_windows as f64 / window_s / steady_rate),
        ("calls", total as f64),
        ("calls_during_cycles", calls_during as f64),
        ("failed_calls", failed as f64),
        ("duration_s", elapsed.as_secs_f64()),
    ];
    for (key, value) in &fields {
        eprintln!("{name}: {key:<36} {value:.3}");
    }
    if matches!(mode, Mode::Bench) {
        let path = common::write_results(name, &fields);
        eprintln!("{name}: wrote {}", path.display());
    }
    if failed > 0 {
        eprintln!("{name}: {failed} of {} calls failed", failed + total);
    }
    failed
}
