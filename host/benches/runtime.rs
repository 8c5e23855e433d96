//! The process runtime on its own: call throughput, spawn time, memory per idle process,
//! and many processes spawned, called and stopped; the same work `xtask/otp/bench.erl`
//! has Erlang/OTP do in the same `cargo xtask bench` run.
//!
//! - *calls*: 100 `svc_handler` gen_servers, 2 threads calling their own half round robin
//!   without pause, each reply checked (the process's counter must move by exactly one);
//!   calls per second over three 1 s windows, the median;
//! - *spawn, memory, spawn + call + stop*: up to 100,000 idle gen_servers started one at a
//!   time (`start_gen_server` returns after `init`), each start timed; the resident set
//!   (`VmRSS`) before and after, per process; then each answers one call and is stopped.
//!
//! How many processes the second part starts depends on what a process costs the machine:
//! a probe of 200 processes counts the OS threads they add. If each takes a thread (the
//! thread-per-process runtime), the count is capped below the machine's task limits
//! (`pid_max`, `threads-max`, `RLIMIT_NPROC`, less what already runs and a margin for the
//! rest of the machine), since using them all up would make every other program on the
//! machine fail to fork. A start that fails also ends the spawning. Either way the count
//! reached is reported (`processes_measured`) and everything is measured at that count.
//!
//! Results go to `target/bench-results/runtime.json` for `cargo xtask bench`.

#[allow(dead_code)] // each benchmark uses part of the shared helpers
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mode, percentile, us};
use hotcode::{Node, NodeRef, Pid, PurgeMethod};
use plugin_api::Term;

const MODULE: &str = "svc_handler";
const CALL_PROCESSES: usize = 100;
const CALLERS: usize = 2;
const TARGET_PROCESSES: usize = 100_000;
/// Tasks left free for the rest of the machine when processes are threads.
const TASK_MARGIN: usize = 4_096;
/// Generous: a timeout here is a failure, never a measurement.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `svc_handler`'s reply to the `n`-th `INCR k`, in either version.
fn counter_of(reply: &Result<Term, hotcode::ProcessError>) -> Option<i64> {
    match reply {
        Ok(Term::Str(text)) => match text.split_whitespace().collect::<Vec<_>>()[..] {
            ["OK", n, "v1" | "v2"] => n.parse::<i64>().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Calls `pids` round robin until `stop`, counting good calls in `calls`; returns the
/// number of bad ones.
fn caller(node: NodeRef, pids: Vec<Pid>, stop: Arc<AtomicBool>, calls: Arc<AtomicU64>) -> u64 {
    let mut expected = vec![1i64; pids.len()];
    let mut failed = 0;
    let request = Term::Str("INCR k".into());
    while !stop.load(Ordering::Relaxed) {
        for (pid, expect) in pids.iter().zip(expected.iter_mut()) {
            let got = counter_of(&node.call(*pid, request.clone(), TIMEOUT));
            if got == Some(*expect) {
                calls.fetch_add(1, Ordering::Relaxed);
                *expect += 1;
            } else {
                failed += 1;
                if failed <= 5 {
                    eprintln!("runtime: {pid}: expected OK {expect}, got {got:?}");
                }
                if let Some(n) = got {
                    *expect = n + 1;
                }
            }
        }
    }
    failed
}

/// Calls per second at 100 processes with 2 callers (median of three windows of `window`),
/// and the failed calls.
fn calls(node: &Node, window: Duration) -> (f64, u64) {
    let pids = start(node, CALL_PROCESSES);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let own: Vec<Pid> = pids.iter().skip(c).step_by(CALLERS).copied().collect();
            let (node, stop, calls) = (node.reference(), stop.clone(), calls.clone());
            std::thread::spawn(move || caller(node, own, stop, calls))
        })
        .collect();
    while calls.load(Ordering::Relaxed) < 200 {
        std::thread::yield_now();
    }
    std::thread::sleep(window / 2);
    let mut rates: Vec<f64> = (0..3)
        .map(|_| {
            let (t, c) = (Instant::now(), calls.load(Ordering::Relaxed));
            std::thread::sleep(window);
            (calls.load(Ordering::Relaxed) - c) as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    let failed = callers.into_iter().map(|c| c.join().expect("caller panicked")).sum();
    for pid in pids {
        node.stop(pid, Term::atom("normal"), TIMEOUT).expect("stop");
    }
    rates.sort_by(f64::total_cmp);
    (rates[1], failed)
}

fn start(node: &Node, n: usize) -> Vec<Pid> {
    (0..n)
        .map(|_| node.start_gen_server(MODULE, Term::List(vec![]), None).expect("start"))
        .collect()
}

/// A field of `/proc/self/status` (the first number on its line).
fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

fn rss_bytes() -> u64 {
    status_field("VmRSS:") * 1024
}

fn threads() -> u64 {
    status_field("Threads:")
}

/// A number from a file under /proc, if it reads as one.
fn proc_number(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.split_whitespace().next()?.parse().ok()
}

/// How many more threads this process may start without taking the machine's last tasks:
/// the smallest of the task limits, less the tasks already running, less a margin.
fn thread_headroom() -> usize {
    // SAFETY: getrlimit writes one rlimit struct, which lives on this stack.
    let nproc = unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) == 0 {
            usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
        } else {
            usize::MAX
        }
    };
    let limit = [
        proc_number("/proc/sys/kernel/pid_max"),
        proc_number("/proc/sys/kernel/threads-max"),
        Some(nproc),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(usize::MAX);
    // /proc/loadavg's fourth field is "running/total" tasks on the machine.
    let running = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse::<usize>().ok())
        .unwrap_or(0);
    limit.saturating_sub(running).saturating_sub(TASK_MARGIN)
}

/// What spawning many processes measured.
struct Many {
    processes: usize,
    threads_per_process: f64,
    spawn_us_median: f64,
    spawn_us_p99: f64,
    rss_bytes_per_process: f64,
    spawn_call_stop_s: f64,
    clean: bool,
}

/// Starts up to `wanted` idle processes (fewer if they are threads and the machine would
/// run out of tasks, or a start fails), measures, calls each once and stops each.
fn many(node: &Node, wanted: usize) -> Many {
    // The probe: how many threads does a process add?
    let threads_before = threads();
    let probe = start(node, 200);
    let threads_per_process = threads().saturating_sub(threads_before) as f64 / probe.len() as f64;
    let some_pid = probe[0];
    for pid in probe {
        node.stop(pid, Term::atom("normal"), TIMEOUT).expect("stop probe");
    }
    let cap = if threads_per_process >= 0.5 {
        let cap = (thread_headroom() as f64 / threads_per_process) as usize;
        if cap < wanted {
            eprintln!(
                "runtime: each process is {threads_per_process:.2} OS threads; the machine's \
                 task limits leave room for {cap} of the {wanted} processes wanted"
            );
        }
        cap.min(wanted)
    } else {
        wanted
    };

    // The bench's own lists, written once before the first reading so that their pages
    // are not counted as the processes'.
    let mut pids = vec![some_pid; cap];
    pids.clear();
    let mut spawn = vec![Duration::from_nanos(1); cap]; // not zero: zeroed memory is untouched
    spawn.clear();
    let rss_before = rss_bytes();
    let started = Instant::now();
    while pids.len() < cap {
        let t = Instant::now();
        match node.start_gen_server(MODULE, Term::List(vec![]), None) {
            Ok(pid) => {
                spawn.push(t.elapsed());
                pids.push(pid);
            }
            Err(e) => {
                eprintln!(
                    "runtime: start {} failed ({e}); measuring at {}",
                    pids.len(),
                    pids.len()
                );
                break;
            }
        }
    }
    let rss_after = rss_bytes();
    let n = pids.len();
    let request = Term::Str("INCR k".into());
    let answered = pids
        .iter()
        .filter(|&&pid| counter_of(&node.call(pid, request.clone(), TIMEOUT)) == Some(1))
        .count();
    let stopped =
        pids.iter().filter(|&&pid| node.stop(pid, Term::atom("normal"), TIMEOUT).is_ok()).count();
    let spawn_call_stop_s = started.elapsed().as_secs_f64();
    let clean = answered == n && stopped == n && node.processes().is_empty();
    if !clean {
        eprintln!(
            "runtime: of {n} processes {answered} answered, {stopped} stopped, {} still run",
            node.processes().len()
        );
    }
    spawn.sort();
    Many {
        processes: n,
        threads_per_process,
        spawn_us_median: us(percentile(&spawn, 0.5)),
        spawn_us_p99: us(percentile(&spawn, 0.99)),
        rss_bytes_per_process: rss_after.saturating_sub(rss_before) as f64 / n as f64,
        spawn_call_stop_s,
        clean,
    }
}

fn main() {
    let mode = common::mode("runtime");
    let (window, wanted) = match mode {
        Mode::Skip => return,
        Mode::Smoke => (Duration::from_millis(100), 1_000),
        Mode::Bench => (Duration::from_secs(1), TARGET_PROCESSES),
    };
    let node = Node::new().expect("node");
    node.code().load_object_code(MODULE, common::plugin("svc_handler_v1")).expect("object code");
    node.code().load(MODULE, PurgeMethod::SoftPurge, PurgeMethod::SoftPurge).expect("load");

    let started = Instant::now();
    let (calls_per_s, failed) = calls(&node, window);
    let many = many(&node, wanted);
    let fields = [
        ("calls_per_s_100", calls_per_s),
        ("failed_calls", failed as f64),
        ("processes_wanted", wanted as f64),
        ("processes_measured", many.processes as f64),
        ("threads_per_process", many.threads_per_process),
        ("spawn_us_median", many.spawn_us_median),
        ("spawn_us_p99", many.spawn_us_p99),
        ("rss_bytes_per_process", many.rss_bytes_per_process),
        ("spawn_call_stop_s", many.spawn_call_stop_s),
        ("spawn_call_stop_clean", if many.clean { 1.0 } else { 0.0 }),
        ("duration_s", started.elapsed().as_secs_f64()),
    ];
    for (key, value) in &fields {
        eprintln!("runtime: {key:<24} {value:.3}");
    }
    if matches!(mode, Mode::Bench) {
        let path = common::write_results("runtime", &fields);
        eprintln!("runtime: wrote {}", path.display());
    }
    if failed > 0 || !many.clean {
        eprintln!("runtime: FAILED: {failed} failed calls; clean shutdown: {}", many.clean);
        std::process::exit(1);
    }
}
