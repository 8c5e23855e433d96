//! The call path, measured against the baselines it must beat, in the same run.
//!
//! Every variant calls the same function (`Greeter::add`) in the same release-built
//! `greeter` plugin; only the way the caller reaches the table differs:
//!
//! - `bare_fn_ptr`: a plain `extern "C"` fn pointer (`hotcode_bench_bare_add`, which greeter
//!   v1 exports for this benchmark) looked up once in a library opened by hand: no
//!   interface shim, no versioning, the floor;
//! - `shim_fn_ptr`: a `&'static` table read once from a library opened by hand: the
//!   interface's shim (panic guard, error slot) but no versioning;
//! - `handle`: `Handle::call`, hotcode's per-thread hold slots;
//! - `lock_and_lookup_per_call`: an `RwLock` around the library and a `dlsym` on every
//!   call, as popular hot-reload crates do;
//! - `arc_clone_per_call`: a reference count taken and dropped on every call;
//! - `hot_lib_reloader`: the real hot-lib-reloader crate (a dev-dependency, not an
//!   imitation), its `#[hot_module]` calling `hotcode_bench_hlr_add` (the bare add with the
//!   Rust ABI, which is how that crate calls) in its own copy of greeter v1: per call it
//!   clones an `Arc`, takes an `RwLock` read and looks the symbol up.
//!
//! Each runs on one thread, then on two threads at once (time per call per thread), where
//! any shared write on the call path shows up as contention. Criterion measures each
//! variant on its own (`target/criterion/call_{1,2}thread/<variant>/`); then `call/paired`
//! measures the ratios SPEC §10 sets targets for (handle ÷ bare pointer on one thread, as a
//! throughput loop of independent calls and as a latency chain where each call takes the
//! previous result; and the handle's one-thread ÷ two-thread time per call), plus handle ÷
//! shim and hot-lib-reloader ÷ bare pointer (throughput), in interleaved batches, so that
//! both sides of each ratio run under the same machine conditions (see [`paired`]), and
//! writes them to `target/bench-results/call_paired.json`.
//!
//! Needs the release-built plugins: run through `cargo xtask bench`.

#[allow(dead_code)] // each benchmark uses part of the shared helpers
mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, OnceLock, RwLock, mpsc};
use std::time::{Duration, Instant};

use common::{Mode, percentile, plugin};
use criterion::Criterion;
use hotcode::{CodeServer, PurgeMethod};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use plugin_api::ModuleHeader;
use plugin_api::interfaces::Greeter;

/// The bare function greeter v1 exports beside its table (no interface shim).
type BareAdd = extern "C" fn(u64, u64) -> u64;

fn bare_of(lib: &Library) -> BareAdd {
    // SAFETY: greeter v1 exports `hotcode_bench_bare_add` as `extern "C" fn(u64, u64) ->
    // u64`; the library stays open for the whole benchmark.
    unsafe { *lib.get::<BareAdd>(b"hotcode_bench_bare_add").expect("bare symbol") }
}

/// Opens a private copy of greeter v1 by hand and returns its table, for the baselines.
fn open_by_hand(scratch: &Path, tag: &str) -> (Library, &'static Greeter) {
    let copy = scratch.join(format!("greeter-{tag}.so"));
    std::fs::copy(plugin("greeter_v1"), &copy).expect("copy plugin");
    // SAFETY: a hotcode plugin built from this workspace; its initialisers are std's.
    let lib = unsafe { Library::open(Some(&copy), RTLD_NOW | RTLD_LOCAL) }.expect("dlopen");
    let table = table_of(&lib);
    (lib, table)
}

fn table_of(lib: &Library) -> &'static Greeter {
    // SAFETY: HOTCODE_MODULE is a ModuleHeader in every plugin of this workspace, and
    // greeter exports a Greeter table; the library stays open for the whole benchmark.
    unsafe {
        let header = *lib.get::<*const ModuleHeader>("HOTCODE_MODULE").expect("symbol");
        let export = (*header).descriptor.interface.as_ref().unwrap();
        &*(export.table.as_ptr() as *const Greeter)
    }
}

/// Where hot-lib-reloader finds its library: set once by [`hlr_stage`] before the first call.
static HLR_LIB_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The directory the `#[hot_module]` below reads its library from, when first called.
fn hlr_lib_dir() -> &'static Path {
    HLR_LIB_DIR.get().expect("hlr_stage runs before the first hot-lib-reloader call")
}

/// greeter v1 as hot-lib-reloader sees it: the crate's own attribute macro, as its users
/// write it. The first call of `hotcode_bench_hlr_add` creates the crate's `LibReloader`
/// (copying `lib_dir/libgreeter_v1.so` beside itself and loading the copy, and starting its
/// file-watch threads); every call after that clones the loader's `Arc`, takes its `RwLock`
/// for reading and looks the symbol up in the library.
#[hot_lib_reloader::hot_module(dylib = "greeter_v1", lib_dir = super::hlr_lib_dir())]
mod hlr_greeter {
    #[hot_functions]
    unsafe extern "Rust" {
        pub fn hotcode_bench_hlr_add(a: u64, b: u64) -> u64;
    }
}

/// Gives hot-lib-reloader a directory of its own holding greeter v1 under the name it builds
/// from `dylib` (`libgreeter_v1.so`): pointed at the plugin directory it would write its
/// loaded copy there and, its loader being a static that is never dropped, leave it behind.
fn hlr_stage(scratch: &Path) {
    let dir = scratch.join("hot-lib-reloader");
    std::fs::create_dir_all(&dir).expect("create hot-lib-reloader's directory");
    std::fs::copy(plugin("greeter_v1"), dir.join("libgreeter_v1.so")).expect("copy plugin");
    HLR_LIB_DIR.set(dir).expect("staged once");
}

/// Which of a pool's four jobs a batch runs, and how.
#[derive(Clone, Copy)]
enum Job {
    A(Loop),
    B(Loop),
    C(Loop),
    D(Loop),
}

/// How a batch calls.
#[derive(Clone, Copy)]
enum Loop {
    /// Independent calls (each argument is the loop counter): throughput.
    Throughput,
    /// Each call's argument is the previous call's result: latency.
    Chain,
}

/// Times `iters` calls of `call` on this thread.
#[inline(always)]
fn timed<F: Fn(u64) -> u64>(call: &F, iters: u64, how: Loop) -> Duration {
    let start = Instant::now();
    match how {
        Loop::Throughput => {
            for i in 0..iters {
                black_box(call(black_box(i)));
            }
        }
        Loop::Chain => {
            let mut x = black_box(0);
            for _ in 0..iters {
                x = call(x);
            }
            black_box(x);
        }
    }
    start.elapsed()
}

/// Pins the calling thread to the `n`-th CPU it may run on (modulo their number), so that
/// a worker stays on one CPU for the whole benchmark: this machine's CPUs do not run at
/// quite the same speed, and a measurement should not depend on where the scheduler
/// happened to put a thread. Best effort: if the affinity calls fail, the thread floats.
fn pin_to_nth_cpu(n: usize) {
    // SAFETY: cpu_set_t is plain data, valid when zeroed; sched_getaffinity and
    // sched_setaffinity read or write exactly `size_of::<cpu_set_t>()` bytes of it, and
    // CPU_ISSET/CPU_SET index within it (CPU numbers below CPU_SETSIZE).
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> =
            (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &allowed)).collect();
        if cpus.is_empty() {
            return;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[n % cpus.len()], &mut one);
        libc::sched_setaffinity(0, size, &one);
    }
}

/// Worker threads that live for one whole benchmark, each pinned to its own CPU, so thread
/// start-up and each thread's first-call set-up (registering its hold slots) never land in
/// a sample, and a thread never moves between CPUs.
///
/// A pool has four jobs (`A` to `D`: the bare, shim, handle and hot-lib-reloader calls) so
/// that both sides of a ratio can run on the very same thread. [`Workers::run`] hands the first
/// `threads` workers the same batch; they start together (a barrier), each times only its
/// own loop, and the result is the mean time per thread: for two threads, the time per
/// call *per thread*, which is what the scaling target compares with the one-thread time.
struct Workers {
    starts: Vec<mpsc::Sender<(Job, u64, usize)>>,
    done: mpsc::Receiver<Duration>,
}

impl Workers {
    /// One worker per barrier; `barriers[k - 1]` must have `k` parties (it starts a batch
    /// run on `k` workers).
    fn spawn<'scope, 'env, FA, FB, FC, FD>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        barriers: &'env [Barrier],
        (a, b, c, d): (&'env FA, &'env FB, &'env FC, &'env FD),
    ) -> Workers
    where
        FA: Fn(u64) -> u64 + Sync,
        FB: Fn(u64) -> u64 + Sync,
        FC: Fn(u64) -> u64 + Sync,
        FD: Fn(u64) -> u64 + Sync,
    {
        let (done_tx, done) = mpsc::channel();
        let starts = (0..barriers.len())
            .map(|n| {
                let (start_tx, start_rx) = mpsc::channel::<(Job, u64, usize)>();
                let done_tx = done_tx.clone();
                scope.spawn(move || {
                    pin_to_nth_cpu(n);
                    // Set-up outside any sample: the first call registers this thread.
                    black_box(a(black_box(0)));
                    black_box(b(black_box(0)));
                    black_box(c(black_box(0)));
                    black_box(d(black_box(0)));
                    for (job, iters, threads) in start_rx {
                        barriers[threads - 1].wait();
                        let took = match job {
                            Job::A(how) => timed(a, iters, how),
                            Job::B(how) => timed(b, iters, how),
                            Job::C(how) => timed(c, iters, how),
                            Job::D(how) => timed(d, iters, how),
                        };
                        if done_tx.send(took).is_err() {
                            break;
                        }
                    }
                });
                start_tx
            })
            .collect();
        Workers { starts, done }
    }

    /// Runs `iters` calls of `job` on each of the first `threads` workers at once; the mean
    /// of their times.
    fn run(&self, job: Job, iters: u64, threads: usize) -> Duration {
        for start in &self.starts[..threads] {
            start.send((job, iters, threads)).expect("worker alive");
        }
        let total: Duration = (0..threads).map(|_| self.done.recv().expect("worker alive")).sum();
        total / threads as u32
    }
}

/// Barriers for a pool of `threads` workers (see [`Workers::spawn`]).
fn barriers(threads: usize) -> Vec<Barrier> {
    (1..=threads).map(Barrier::new).collect()
}

/// Benchmarks `call` on `threads` threads as `name` in `group`.
fn bench_on<F: Fn(u64) -> u64 + Sync>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    threads: usize,
    call: &F,
) {
    let barriers = barriers(threads);
    std::thread::scope(|s| {
        let workers = Workers::spawn(s, &barriers, (call, call, call, call));
        group.bench_function(name, |b| {
            b.iter_custom(|n| workers.run(Job::A(Loop::Throughput), n, threads))
        });
        // Dropping `workers` closes the start channels: the threads end with the scope.
    });
}

/// Out of line so its machine code can be inspected (`objdump -d --no-show-raw-insn`).
/// That costs the handle a call and a return the inlined baselines do not pay; with
/// `#[inline]` instead the paired ratio did not move (2.1 to 2.5 either way, 2026-11-21).
#[inline(never)]
fn handle_add(handle: &hotcode::Handle<Greeter>, i: u64) -> u64 {
    handle.call(|g| g.add(i, 1)).unwrap_or(0)
}

/// Rounds of the paired measurement, and calls per batch (a few milliseconds each).
const PAIRED_ROUNDS: usize = 150;
const PAIRED_BATCH: u64 = 500_000;

/// The ratios, measured in interleaved batches on the same threads rather than read off
/// criterion runs made seconds apart on threads of their own.
///
/// This machine's speed changes under the benchmark: it runs in (at least) two modes, one
/// about 1.6 times slower than the other, switching every few seconds (another tenant on
/// the host, presumably), and its two CPUs differ a little. Two variants measured by
/// criterion seconds apart can land in different modes, and their ratio is then off by
/// that factor either way. Here each round runs a batch of each kind back to back
/// (hot-lib-reloader, bare, shim and handle throughput loops and bare and handle latency
/// chains on worker 0, then handle and bare on workers 0 and 1 at once), reversing the
/// order every other round, and takes the ratios within the round; the medians over the
/// rounds are what `cargo xtask bench` reports as the ratios.
fn paired<B, S, H, R>(bare_call: &B, shim_call: &S, handle_call: &H, hlr_call: &R)
where
    B: Fn(u64) -> u64 + Sync,
    S: Fn(u64) -> u64 + Sync,
    H: Fn(u64) -> u64 + Sync,
    R: Fn(u64) -> u64 + Sync,
{
    let mode = common::mode("call/paired");
    let (rounds, batch) = match mode {
        Mode::Skip => return,
        Mode::Smoke => (2, 1_000),
        Mode::Bench => (PAIRED_ROUNDS, PAIRED_BATCH),
    };
    let barriers = barriers(2);
    use Loop::{Chain, Throughput};
    // Per round, ns per call of each kind, on 1 or 2 threads.
    let kinds = [
        (Job::A(Throughput), 1), // 0: bare
        (Job::B(Throughput), 1), // 1: shim
        (Job::C(Throughput), 1), // 2: handle
        (Job::A(Chain), 1),      // 3: bare, latency chain
        (Job::C(Chain), 1),      // 4: handle, latency chain
        (Job::C(Throughput), 2), // 5: handle on two threads
        (Job::A(Throughput), 2), // 6: bare on two threads
        (Job::D(Throughput), 1), // 7: hot-lib-reloader
    ];
    let mut ns: [Vec<f64>; 8] = Default::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        let workers = Workers::spawn(s, &barriers, (bare_call, shim_call, handle_call, hlr_call));
        for round in 0..rounds {
            // Each ratio's batches are neighbours or near; reversing the order every other
            // round makes a drift within a round favour neither side.
            let forward = [7, 0, 2, 1, 3, 4, 5, 6];
            let mut order = forward;
            if round % 2 == 1 {
                order.reverse();
            }
            for k in order {
                let (job, threads) = kinds[k];
                let took = workers.run(job, batch, threads);
                ns[k].push(took.as_secs_f64() * 1e9 / batch as f64);
            }
        }
    });
    let [bare_1, shim_1, handle_1, bare_chain, handle_chain, handle_2, bare_2, hlr_1] = &ns;
    let each = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut v: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let vs_bare = each(handle_1, bare_1);
    let vs_bare_chain = each(handle_chain, bare_chain);
    let vs_shim = each(handle_1, shim_1);
    let hlr_vs_bare = each(hlr_1, bare_1);
    let scaling = each(handle_1, handle_2);
    let bare_scaling = each(bare_1, bare_2);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    let fields = [
        ("rounds", rounds as f64),
        ("batch", batch as f64),
        ("ratio_handle_vs_bare", percentile(&vs_bare, 0.5)),
        ("ratio_handle_vs_bare_p10", percentile(&vs_bare, 0.1)),
        ("ratio_handle_vs_bare_p90", percentile(&vs_bare, 0.9)),
        ("ratio_handle_vs_bare_chain", percentile(&vs_bare_chain, 0.5)),
        ("ratio_handle_vs_bare_chain_p10", percentile(&vs_bare_chain, 0.1)),
        ("ratio_handle_vs_bare_chain_p90", percentile(&vs_bare_chain, 0.9)),
        ("ratio_handle_vs_shim", percentile(&vs_shim, 0.5)),
        ("ratio_handle_vs_shim_p10", percentile(&vs_shim, 0.1)),
        ("ratio_handle_vs_shim_p90", percentile(&vs_shim, 0.9)),
        ("ratio_hot_lib_reloader_vs_bare", percentile(&hlr_vs_bare, 0.5)),
        ("ratio_hot_lib_reloader_vs_bare_p10", percentile(&hlr_vs_bare, 0.1)),
        ("ratio_hot_lib_reloader_vs_bare_p90", percentile(&hlr_vs_bare, 0.9)),
        ("two_thread_scaling", percentile(&scaling, 0.5)),
        ("two_thread_scaling_p10", percentile(&scaling, 0.1)),
        ("two_thread_scaling_p90", percentile(&scaling, 0.9)),
        ("bare_two_thread_scaling", percentile(&bare_scaling, 0.5)),
        ("ns_median.bare_1thread", median(bare_1)),
        ("ns_median.shim_1thread", median(shim_1)),
        ("ns_median.handle_1thread", median(handle_1)),
        ("ns_median.hot_lib_reloader_1thread", median(hlr_1)),
        ("ns_median.bare_chain", median(bare_chain)),
        ("ns_median.handle_chain", median(handle_chain)),
        ("ns_median.bare_2thread", median(bare_2)),
        ("ns_median.handle_2thread", median(handle_2)),
        ("duration_s", started.elapsed().as_secs_f64()),
    ];
    for (key, value) in &fields {
        eprintln!("call/paired: {key:<36} {value:.3}");
    }
    if matches!(mode, Mode::Bench) {
        let path = common::write_results("call_paired", &fields);
        eprintln!("call/paired: wrote {}", path.display());
    }
}

fn main() {
    let server = CodeServer::new().expect("code server");
    server.load_object_code("greeter", plugin("greeter_v1")).expect("load_object_code");
    server.load("greeter", PurgeMethod::SoftPurge, PurgeMethod::SoftPurge).expect("load");
    let handle = server.handle::<Greeter>("greeter").expect("handle");

    let scratch = tempfile::tempdir().expect("scratch");
    let (bare_lib, _) = open_by_hand(scratch.path(), "bare");
    let bare = bare_of(&bare_lib);
    let (shim_lib, shim) = open_by_hand(scratch.path(), "shim");
    let (locked_lib, _) = open_by_hand(scratch.path(), "locked");
    let locked = RwLock::new(locked_lib);
    let (arc_lib, arc_table) = open_by_hand(scratch.path(), "arc");
    let shared: Arc<(Library, &'static Greeter)> = Arc::new((arc_lib, arc_table));
    hlr_stage(scratch.path());
    // The first call loads the library (and fails here, not inside a sample, if it cannot).
    assert_eq!(hlr_greeter::hotcode_bench_hlr_add(2, 3), 5, "hot-lib-reloader's greeter v1");

    let bare_call = |i| bare(i, 1);
    let shim_call = |i| shim.add(i, 1).unwrap_or(0);
    let handle_call = |i| handle_add(&handle, i);
    let locked_call = |i| {
        let lib = locked.read().unwrap();
        table_of(&lib).add(i, 1).unwrap_or(0)
    };
    let arc_call = |i| {
        let version = Arc::clone(&shared);
        version.1.add(i, 1).unwrap_or(0)
    };
    let hlr_call = |i| hlr_greeter::hotcode_bench_hlr_add(i, 1);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    for threads in [1usize, 2] {
        // Criterion turns the `/` into `_` on disk: target/criterion/call_1thread/<name>/.
        let mut group = c.benchmark_group(format!("call/{threads}thread"));
        bench_on(&mut group, "bare_fn_ptr", threads, &bare_call);
        bench_on(&mut group, "shim_fn_ptr", threads, &shim_call);
        bench_on(&mut group, "handle", threads, &handle_call);
        bench_on(&mut group, "lock_and_lookup_per_call", threads, &locked_call);
        bench_on(&mut group, "arc_clone_per_call", threads, &arc_call);
        bench_on(&mut group, "hot_lib_reloader", threads, &hlr_call);
        group.finish();
    }
    paired(&bare_call, &shim_call, &handle_call, &hlr_call);
    c.final_summary();
    drop(shim_lib);
    drop(bare_lib);
}
