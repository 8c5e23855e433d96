//! The call path, measured against the baselines it must beat, in the same run.
//!
//! Every variant calls the same function (`Greeter::add`) in the same release-built
//! `greeter` plugin; only the way the caller reaches the table differs:
//!
//! - `raw_fn_ptr`: a `&'static` table read once from a library opened by hand: no
//!   versioning at all, the floor;
//! - `handle`: `Handle::call`, hotcode's per-thread hold slots;
//! - `lock_and_lookup_per_call`: an `RwLock` around the library and a `dlsym` on every
//!   call, as popular hot-reload crates do;
//! - `arc_clone_per_call`: a reference count taken and dropped on every call.
//!
//! Each runs on one thread, then on two threads at once (time per call per thread), where
//! any shared write on the call path shows up as contention.
//!
//! Needs the release-built plugins: run through `cargo xtask bench`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Arc, Barrier, RwLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hotcode::{CodeServer, PurgeMethod};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use plugin_api::ModuleHeader;
use plugin_api::interfaces::Greeter;

fn plugin(name: &str) -> PathBuf {
    let dir = std::env::var_os("HOTCODE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"));
    let path = dir.join(format!("lib{name}.so"));
    assert!(path.exists(), "{} missing: run `cargo xtask bench`", path.display());
    path
}

/// Opens a private copy of greeter v1 by hand and returns its table, for the baselines.
fn open_by_hand(scratch: &std::path::Path, tag: &str) -> (Library, &'static Greeter) {
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

/// Runs `call` `iters` times on each of `threads` threads at once; returns the mean time
/// per call per thread, times `iters` (what criterion's `iter_custom` expects).
fn on_threads<F: Fn(u64) -> u64 + Sync>(threads: usize, iters: u64, call: &F) -> Duration {
    let barrier = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(call(black_box(i)));
                    }
                    start.elapsed()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    total / threads as u32
}

/// Out of line so its machine code can be inspected (`objdump -d --no-show-raw-insn`).
#[inline(never)]
fn handle_add(handle: &hotcode::Handle<Greeter>, i: u64) -> u64 {
    handle.call(|g| g.add(i, 1)).unwrap_or(0)
}

fn call_path(c: &mut Criterion) {
    let server = CodeServer::new().expect("code server");
    server.load_object_code("greeter", plugin("greeter_v1")).expect("load_object_code");
    server.load("greeter", PurgeMethod::SoftPurge, PurgeMethod::SoftPurge).expect("load");
    let handle = server.handle::<Greeter>("greeter").expect("handle");

    let scratch = tempfile::tempdir().expect("scratch");
    let (raw_lib, raw) = open_by_hand(scratch.path(), "raw");
    let (locked_lib, _) = open_by_hand(scratch.path(), "locked");
    let locked = RwLock::new(locked_lib);
    let (arc_lib, arc_table) = open_by_hand(scratch.path(), "arc");
    let shared: Arc<(Library, &'static Greeter)> = Arc::new((arc_lib, arc_table));

    let raw_call = |i| raw.add(i, 1).unwrap_or(0);
    let handle_call = |i| handle_add(&handle, i);
    let locked_call = |i| {
        let lib = locked.read().unwrap();
        table_of(&lib).add(i, 1).unwrap_or(0)
    };
    let arc_call = |i| {
        let version = Arc::clone(&shared);
        version.1.add(i, 1).unwrap_or(0)
    };

    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("call/{threads}thread"));
        group
            .bench_function("raw_fn_ptr", |b| b.iter_custom(|n| on_threads(threads, n, &raw_call)));
        group.bench_function("handle", |b| b.iter_custom(|n| on_threads(threads, n, &handle_call)));
        group.bench_function("lock_and_lookup_per_call", |b| {
            b.iter_custom(|n| on_threads(threads, n, &locked_call))
        });
        group.bench_function("arc_clone_per_call", |b| {
            b.iter_custom(|n| on_threads(threads, n, &arc_call))
        });
        group.finish();
    }
    drop(raw_lib);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = call_path
}
criterion_main!(benches);
