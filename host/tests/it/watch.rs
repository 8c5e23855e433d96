//! Watch mode: a rebuilt library file is loaded once it has settled, while threads keep
//! calling the module, and a broken rebuild is rejected while the running version serves.
//!
//! Each test "rebuilds" a real plugin file in a temporary directory the ways build tools
//! do: a new file renamed over the old one, or the new content written into the file in
//! place, in chunks. The pauses between chunks are part of the scenario (a slow writer);
//! the tests synchronise only on the watcher's events and on atomics they wait on, each
//! with a bounded deadline.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotcode::watch::{
    ReloadError, Reloaded, WatchError, WatchEvent, WatchOptions, WatchedModule, Watcher,
};
use hotcode::{Handle, LoadErrorKind, Node, Purged};
use plugin_api::Term;
use plugin_api::interfaces::Greeter;

use crate::{LONG, fixtures};

/// The watcher's quiet period in these tests: short, to keep them quick.
const QUIET: Duration = Duration::from_millis(50);

/// How long a test waits for anything that must happen.
const DEADLINE: Duration = Duration::from_secs(30);

/// A node watching a temporary directory that holds one module's library. Fields drop in
/// order: the watcher stops before the node shuts down, and the directory goes last.
struct Watched {
    watcher: Watcher,
    node: Arc<Node>,
    /// The watched library file.
    file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Puts `first` as `lib<module>.so` in a fresh directory and starts a node watching it.
fn watching(module: &str, first: &Path) -> Watched {
    watching_with(module, first, WatchOptions::default())
}

/// [`watching`] with `options` (the quiet period is always [`QUIET`]).
fn watching_with(module: &str, first: &Path, mut options: WatchOptions) -> Watched {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().expect("temp dir");
    let file_name = format!("lib{module}.so");
    std::fs::copy(first, dir.path().join(&file_name)).expect("copy the first build");
    let node = Arc::new(Node::new().expect("node"));
    options.quiet = QUIET;
    let modules = vec![WatchedModule::new(module, &file_name)];
    let watcher =
        Watcher::start(Arc::clone(&node), dir.path(), modules, options).expect("start watching");
    let file = watcher.dir().join(&file_name);
    Watched { watcher, node, file, _dir: dir }
}

/// Replaces `file` the way a linker writing elsewhere does: a new file beside it, renamed
/// over it.
fn rename_over(file: &Path, bytes: &[u8]) {
    let partial = file.with_extension("partial");
    std::fs::write(&partial, bytes).expect("write the new build");
    std::fs::rename(&partial, file).expect("rename it over the library");
}

/// Writes `bytes` into `file` in place, as a copying build step does: truncate, then one
/// chunk after another, with `pauses` between them (one chunk more than pauses).
fn write_in_chunks(file: &Path, bytes: &[u8], pauses: &[Duration]) {
    let mut out = OpenOptions::new().write(true).truncate(true).open(file).expect("open");
    let chunk = bytes.len().div_ceil(pauses.len() + 1);
    for (at, part) in bytes.chunks(chunk).enumerate() {
        out.write_all(part).expect("write a chunk");
        if let Some(pause) = pauses.get(at) {
            std::thread::sleep(*pause);
        }
    }
}

/// The next event, within the deadline.
fn next_event(watcher: &Watcher) -> WatchEvent {
    watcher.events().recv_timeout(DEADLINE).expect("a watch event within the deadline")
}

/// The next event, which must be a reload.
fn expect_reloaded(watcher: &Watcher) -> Reloaded {
    match next_event(watcher) {
        WatchEvent::Reloaded(r) => r,
        other => panic!("expected a reload, got: {other}"),
    }
}

/// The next event, which must reject `file` as not loadable; returns the error's text.
fn expect_rejected(watcher: &Watcher, file: &Path) -> String {
    match next_event(watcher) {
        WatchEvent::Rejected { module, file: rejected, error } => {
            assert_eq!(rejected, file, "the event names the file");
            assert_eq!(module, "greeter");
            let ReloadError::Load(load) = &error else { panic!("not a load error: {error}") };
            assert_eq!(load.path, file, "the error names the file");
            assert!(matches!(load.kind, LoadErrorKind::NotSharedObject(_)), "{error}");
            error.to_string()
        }
        other => panic!("expected a rejection, got: {other}"),
    }
}

/// Whether the private copy mapped for the current version of `module` held `bytes`: the
/// loaded file was exactly that build, not a torn mix. (The copy's file is gone once it is
/// open; the loader kept the digest of what it mapped.)
fn current_copy_holds(node: &Node, module: &str, bytes: &[u8]) -> bool {
    let status = node.code().status();
    let current = status
        .modules
        .iter()
        .find(|m| m.name == module)
        .and_then(|m| m.current.clone())
        .expect("a current version");
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(bytes).into();
    current.sha256 == digest
}

/// Two threads calling `version()` in a loop.
#[derive(Default)]
struct Callers {
    stop: AtomicBool,
    /// The version each caller saw last.
    seen: [AtomicU32; 2],
    calls: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Callers {
    /// Calls until told to stop. Every call must be answered, by version 1 or 2, and a
    /// caller never goes back to an older version once it saw a newer one.
    fn run(&self, me: usize, greeter: &Handle<Greeter>) {
        let mut last = 0;
        while !self.stop.load(Ordering::Relaxed) {
            match greeter.call(|g| g.version()) {
                Ok(vsn) if (1..=2).contains(&vsn) && vsn >= last => {
                    last = vsn;
                    self.seen[me].store(vsn, Ordering::Release);
                    self.calls.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    let failure = format!("caller {me}: {other:?} after version {last}");
                    self.failures.lock().unwrap_or_else(|p| p.into_inner()).push(failure);
                }
            }
        }
    }

    /// Waits until every caller's last answer came from `vsn`.
    fn wait_all_answered_by(&self, vsn: u32) {
        let deadline = Instant::now() + DEADLINE;
        while !self.seen.iter().all(|s| s.load(Ordering::Acquire) == vsn) {
            assert!(Instant::now() < deadline, "callers not all answered by version {vsn}");
            std::thread::yield_now();
        }
    }

    /// Waits until the callers made `n` more calls, so a check covers calls made after it.
    fn wait_more_calls(&self, n: u64) {
        let target = self.calls.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + DEADLINE;
        while self.calls.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "callers stopped making calls");
            std::thread::yield_now();
        }
    }
}

/// Stops the callers even if the scenario panics, so that the scope can join them.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `scenario` while two threads call `greeter` in a loop; then checks that no call
/// failed. Returns the scenario's result.
fn with_callers<R>(greeter: &Handle<Greeter>, scenario: impl FnOnce(&Callers) -> R) -> R {
    let callers = Callers::default();
    let result = std::thread::scope(|s| {
        for me in 0..2 {
            let greeter = greeter.clone();
            let callers = &callers;
            s.spawn(move || callers.run(me, &greeter));
        }
        let _stop = StopOnDrop(&callers.stop);
        scenario(&callers)
    });
    let failures = callers.failures.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    assert!(callers.calls.load(Ordering::Relaxed) > 0);
    result
}

fn report(what: &str, r: &Reloaded) {
    eprintln!(
        "{what}: vsn {:?} -> {}: current {:.1} ms after the file settled, all done in {:.1} ms",
        r.old_vsn,
        r.new_vsn,
        r.to_current.as_secs_f64() * 1e3,
        r.elapsed.as_secs_f64() * 1e3
    );
}

#[test]
fn a_rebuild_renamed_over_the_library_is_loaded_while_threads_call_it() {
    let w = watching("greeter", &fixtures::greeter_v1());
    let greeter = w.node.code().handle::<Greeter>("greeter").expect("handle");
    let v2 = std::fs::read(fixtures::greeter_v2()).expect("read v2");
    let reloaded = with_callers(&greeter, |callers| {
        callers.wait_all_answered_by(1);
        rename_over(&w.file, &v2);
        let reloaded = expect_reloaded(&w.watcher);
        callers.wait_all_answered_by(2);
        reloaded
    });
    report("renamed over", &reloaded);
    assert_eq!(reloaded.module, "greeter");
    assert_eq!(reloaded.file, w.file);
    assert_eq!((reloaded.old_vsn.as_deref(), reloaded.new_vsn.as_str()), (Some("1"), "2"));
    assert!(reloaded.to_current < Duration::from_secs(1), "{:?}", reloaded.to_current);
    assert_eq!(reloaded.old_code, Purged::Unloaded, "version 1 is gone once its calls end");
    assert!(!reloaded.brutal_purge);
    assert!(current_copy_holds(&w.node, "greeter", &v2));
}

#[test]
fn a_library_written_in_place_in_chunks_is_loaded_only_once_complete() {
    let w = watching("greeter", &fixtures::greeter_v1());
    let greeter = w.node.code().handle::<Greeter>("greeter").expect("handle");
    let v2 = std::fs::read(fixtures::greeter_v2()).expect("read v2");
    // Short pauses (within the quiet period) and long ones (past two quiet periods, so
    // the watcher does look at the half-written file and must refuse it).
    let (short, long) = (QUIET / 10, QUIET * 4);
    let pauses = [short, long, short, long, short];
    let (reloaded, rejected) = with_callers(&greeter, |callers| {
        callers.wait_all_answered_by(1);
        write_in_chunks(&w.file, &v2, &pauses);
        let mut rejected = Vec::new();
        let reloaded = loop {
            match next_event(&w.watcher) {
                WatchEvent::Reloaded(r) => break r,
                // A half-written file that settled during a long pause.
                WatchEvent::Rejected { module, file, error } => {
                    assert_eq!((module.as_str(), file.as_path()), ("greeter", w.file.as_path()));
                    rejected.push(error.to_string());
                }
                other => panic!("unexpected event: {other}"),
            }
        };
        callers.wait_all_answered_by(2);
        (reloaded, rejected)
    });
    report("written in chunks", &reloaded);
    eprintln!("half-written versions rejected on the way: {rejected:#?}");
    assert_eq!((reloaded.old_vsn.as_deref(), reloaded.new_vsn.as_str()), (Some("1"), "2"));
    assert!(
        current_copy_holds(&w.node, "greeter", &v2),
        "the version loaded is the complete file, never a half-written one"
    );
    assert!(reloaded.to_current < Duration::from_secs(1), "{:?}", reloaded.to_current);
}

#[test]
fn broken_rebuilds_are_rejected_and_the_running_version_keeps_serving() {
    let w = watching("greeter", &fixtures::greeter_v2());
    let greeter = w.node.code().handle::<Greeter>("greeter").expect("handle");
    let v2 = std::fs::read(fixtures::greeter_v2()).expect("read v2");
    // Bytes from a fixed-seed generator: no ELF header, nothing a loader would take.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    let truncated = &v2[..v2.len() / 2];
    let recovered = with_callers(&greeter, |callers| {
        callers.wait_all_answered_by(2);
        for (what, bytes) in [("garbage", garbage.as_slice()), ("a truncated copy", truncated)] {
            rename_over(&w.file, bytes);
            let why = expect_rejected(&w.watcher, &w.file);
            eprintln!("{what}: {why}");
            callers.wait_more_calls(1000);
            callers.wait_all_answered_by(2);
            assert_eq!(w.node.code().current_vsn("greeter").as_deref(), Some("2"));
        }
        // The next good build is loaded as usual.
        rename_over(&w.file, &v2);
        expect_reloaded(&w.watcher)
    });
    report("after broken builds", &recovered);
    assert_eq!((recovered.old_vsn.as_deref(), recovered.new_vsn.as_str()), (Some("2"), "2"));
    assert!(w.node.code().status().modules.iter().all(|m| m.staged.is_none()), "nothing staged");
}

#[test]
fn a_gen_server_keeps_its_state_across_a_rebuild() {
    let w = watching("ch3", &fixtures::module_lib("ch_app-1", "ch3"));
    let node = &w.node;
    let pid = node.start_gen_server("ch3", Term::List(vec![]), Some("ch3")).expect("start ch3");
    let call = |request: Term| node.call("ch3", request, LONG).expect("call ch3");
    for _ in 0..3 {
        call(Term::atom("alloc")); // channels 1, 2, 3
    }
    call(Term::tuple([Term::atom("free"), Term::Int(2)]));

    let v2 = std::fs::read(fixtures::plugin("fixture-ch3-v2")).expect("read ch3 v2");
    rename_over(&w.file, &v2);
    let reloaded = expect_reloaded(&w.watcher);
    report("gen_server", &reloaded);
    assert_eq!((reloaded.old_vsn.as_deref(), reloaded.new_vsn.as_str()), (Some("1"), "2"));
    assert_eq!(reloaded.migrated, vec![pid], "the process moved to version 2 by code_change");
    assert_eq!(reloaded.old_code, Purged::Unloaded, "nothing holds version 1 any more");
    assert!(!reloaded.brutal_purge);
    assert!(node.is_alive(pid), "the same process, not a restart");
    assert_eq!(call(Term::atom("version")), Term::Int(2));
    assert_eq!(call(Term::atom("count")), Term::tuple([Term::Int(2), Term::Int(98)]));
    assert_eq!(call(Term::atom("alloc")), Term::Int(2), "the channel freed under version 1");
}

#[test]
fn old_code_held_past_the_purge_bound_is_purged_brutally_and_unloaded_when_released() {
    let mut options = WatchOptions::default();
    options.purge_timeout = Duration::from_millis(200);
    let w = watching_with("greeter", &fixtures::greeter_v1(), options);
    let greeter = w.node.code().handle::<Greeter>("greeter").expect("handle");
    let (parked_tx, parked) = crossbeam::channel::bounded::<()>(1);
    let (release, released) = crossbeam::channel::bounded::<()>(1);
    std::thread::scope(|s| {
        let holder = s.spawn(|| {
            greeter.call(|g| {
                g.park(plugin_api::Callback::new(&|| {
                    let _ = parked_tx.send(());
                    // Inside version 1 until the test lets go (bounded, should it fail).
                    let _ = released.recv_timeout(DEADLINE);
                    11
                }))
            })
        });
        parked.recv_timeout(DEADLINE).expect("the thread is parked inside version 1");
        rename_over(&w.file, &std::fs::read(fixtures::greeter_v2()).expect("read v2"));
        let reloaded = expect_reloaded(&w.watcher);
        let _ = release.send(());
        report("held past the bound", &reloaded);
        assert!(reloaded.brutal_purge, "the thread kept version 1 past the bound");
        match &reloaded.old_code {
            Purged::Pending { holders } => assert_eq!(holders.len(), 1, "{holders:?}"),
            other => panic!("version 1 is held, it must be detached: {other:?}"),
        }
        assert_eq!(crate::answering(&greeter), 2, "new calls went to version 2 meanwhile");
        assert_eq!(holder.join().expect("holder thread").expect("the parked call"), 11);
    });
    let status = w.node.code().status();
    assert!(status.detached.is_empty(), "version 1 left with its last holder");
    assert!(status.modules.iter().all(|m| m.old.is_none()));
}

#[test]
fn start_refuses_what_it_cannot_watch_or_load() {
    let _ = env_logger::builder().is_test(true).try_init();
    let node = Arc::new(Node::new().expect("node"));
    let dir = tempfile::tempdir().expect("temp dir");
    let start = |dir: &Path, modules: &[(&str, &str)]| {
        let modules = modules.iter().map(|(m, f)| WatchedModule::new(*m, *f)).collect();
        Watcher::start(Arc::clone(&node), dir, modules, WatchOptions::default())
            .err()
            .expect("start refused")
    };
    let err = start(&dir.path().join("missing"), &[("greeter", "libgreeter.so")]);
    assert!(matches!(err, WatchError::NotADirectory { .. }), "{err:?}");
    let err = start(dir.path(), &[("greeter", "a.so"), ("greeter", "b.so")]);
    assert!(matches!(err, WatchError::BadModule { .. }), "{err:?}");
    let err = start(dir.path(), &[("greeter", "../libgreeter.so")]);
    assert!(matches!(err, WatchError::BadModule { .. }), "{err:?}");

    let err = start(dir.path(), &[("greeter", "libgreeter.so")]);
    let WatchError::InitialLoad { module, source } = &err else {
        panic!("expected an initial load error: {err:?}");
    };
    let ReloadError::Load(load) = &**source else { panic!("not a load error: {err:?}") };
    assert_eq!(module, "greeter");
    assert!(matches!(load.kind, LoadErrorKind::NotFound), "{err:?}");

    std::fs::write(dir.path().join("libgreeter.so"), b"not a library").expect("write");
    let err = start(dir.path(), &[("greeter", "libgreeter.so")]);
    assert!(matches!(err, WatchError::InitialLoad { .. }), "{err:?}");
    assert_eq!(node.code().current_vsn("greeter"), None, "nothing was loaded");
}
