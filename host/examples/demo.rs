//! The hotcode demo: OTP release handling for native code, narrated.
//!
//! Run with `cargo xtask demo`, which builds every plugin and assembles the example release
//! roots under `target/dist` first (`cargo run --example demo -- target/dist` afterwards).
//!
//! Part 1 is the included-application example of the seed documents: release A runs
//! `prim_app` 1; release B includes `ch_app` (channel allocator `ch3` under `ch_sup`) in
//! `prim_app` 2. The node goes A → B → A with each of the two seed relup scripts, verbatim.
//! Part 2 is the service example: a TCP counter service on 127.0.0.1 whose request handler
//! is a plugin, upgraded and downgraded again and again while clients hammer it.
//! Part 3 swaps a library module back and forth while threads call it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hotcode::release_handler::{ErrorAction, ReleaseHandler};
use hotcode::{CodeServer, PurgeMethod, Purged, VersionInfo};
use plugin_api::interfaces::Greeter;
use plugin_api::{Callback, Term};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(line: impl AsRef<str>) {
    println!("  {}", line.as_ref());
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn run() -> Result<()> {
    let dist = std::env::args().nth(1).map(PathBuf::from).ok_or("usage: demo DIST_DIR")?;
    for script in ["included-app-restart", "included-app-supervisor"] {
        included_app(&dist.join(script), script)?;
    }
    service(&dist.join("service"))?;
    library_under_load(&dist)?;
    println!("\nok: the demo ran to the end");
    Ok(())
}

/// Copies a dist root to a scratch directory, so the demo leaves `target/dist` as built.
fn scratch_root(root: &Path) -> Result<tempfile::TempDir> {
    let tmp = tempfile::Builder::new().prefix("hotcode-demo-").tempdir()?;
    copy_dir(root, tmp.path())?;
    Ok(tmp)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        let dest = to.join(item.file_name());
        if item.file_type()?.is_dir() {
            copy_dir(&item.path(), &dest)?;
        } else {
            std::fs::copy(item.path(), dest)?;
        }
    }
    Ok(())
}

fn show_apps(h: &ReleaseHandler) {
    for app in h.node().which_applications() {
        let top = app.top.map(|p| format!(", top supervisor {p}")).unwrap_or_default();
        say(format!("application {} {} running{top}", app.name, app.vsn));
    }
}

fn show_releases(h: &ReleaseHandler) {
    for r in h.which_releases() {
        let apps: Vec<String> = r.apps.iter().map(|(a, v)| format!("{a}-{v}")).collect();
        say(format!(
            "release {} {:<2} {:<10} [{}]",
            r.name,
            r.vsn,
            r.status.as_str(),
            apps.join(", ")
        ));
    }
}

fn module_version(h: &ReleaseHandler, module: &str) -> Option<VersionInfo> {
    h.node().code().status().modules.into_iter().find(|m| m.name == module).and_then(|m| m.current)
}

fn included_app(root: &Path, script: &str) -> Result<()> {
    step(&format!("Included application, by relups/{script}.relup"));
    let tmp = scratch_root(root)?;
    let h = ReleaseHandler::boot(tmp.path(), ErrorAction::Return)?;
    say(format!("$ hotcode boot {}   (booted release {})", root.display(), h.current()));
    show_releases(&h);
    show_apps(&h);

    say(format!("$ hotcode ctl {} install B", root.display()));
    let up = h.install("B")?;
    say(format!("installed B, upgrading from {}: {:?}", up.from, up.direction));
    show_apps(&h);
    let ch3 = *h.node().processes_running("ch3").first().ok_or("ch3 is not running")?;
    let mut channels = Vec::new();
    for _ in 0..3 {
        channels.push(h.node().call(ch3, Term::atom("alloc"), Duration::from_secs(5))?);
    }
    say(format!("ch3 {ch3} allocates channels: {}", Term::list(channels.clone())));
    for ch in channels {
        h.node().call(ch3, Term::tuple([Term::atom("free"), ch]), Duration::from_secs(5))?;
    }
    say(format!(
        "and frees them: count = {}",
        h.node().call(ch3, Term::atom("count"), Duration::from_secs(5))?
    ));
    let ch_libs: Vec<(String, VersionInfo)> = ["ch_sup", "ch3"]
        .iter()
        .filter_map(|m| module_version(&h, m).map(|v| (m.to_string(), v)))
        .collect();
    for (m, v) in &ch_libs {
        say(format!("{m} vsn {} mapped from {}", v.vsn, v.copy.display()));
    }
    h.make_permanent("B")?;
    say("$ hotcode ctl ROOT make-permanent B");
    show_releases(&h);

    say("$ hotcode ctl ROOT install A   (downgrade)");
    let down = h.install("A")?;
    say(format!("installed A, downgrading from {}: {:?}", down.from, down.direction));
    show_apps(&h);
    say(format!("processes running ch3: {}", h.node().processes_running("ch3").len()));
    let mut all_gone = true;
    for (m, v) in &ch_libs {
        let mapped = hotcode::code::maps::is_mapped(&v.copy)?;
        all_gone &= !mapped;
        say(format!("{m} still in the node's memory map: {mapped}"));
    }
    h.make_permanent("A")?;
    show_releases(&h);
    if !all_gone {
        return Err("ch_app's libraries stayed mapped after the downgrade".into());
    }
    Ok(())
}

const SERVICE_CYCLES: usize = 25;

fn service(root: &Path) -> Result<()> {
    step(&format!("The service example: {SERVICE_CYCLES} upgrade/downgrade cycles under load"));
    let tmp = scratch_root(root)?;
    let h = ReleaseHandler::boot(tmp.path(), ErrorAction::Return)?;
    show_apps(&h);
    let server =
        hotcode::service::LineServer::start(h.node().reference(), "127.0.0.1:0", "svc_handler", 4)?;
    say(format!(
        "service listening on {} (request handler: gen_server svc_handler)",
        server.addr()
    ));
    let load = hotcode::service::LoadGen::start(server.addr(), 2, "demo")?;
    say("2 client threads send `INCR <own key>` in a loop and check every answer");
    let mut windows = Vec::new();
    let mut install_ms = Vec::new();
    for cycle in 0..SERVICE_CYCLES {
        for vsn in ["2", "1"] {
            let before = load.answered();
            let started = std::time::Instant::now();
            let done = h.install(vsn)?;
            install_ms.push(started.elapsed().as_secs_f64() * 1e3);
            windows.extend(done.suspend_window);
            if cycle == 0 {
                let window = done.suspend_window.map_or("-".into(), |w| format!("{w:?}"));
                say(format!(
                    "install {vsn}: {:?} from {}, handler suspended for {window}",
                    done.direction, done.from
                ));
            }
            // Let the clients make progress in each version before the next change.
            while load.answered() < before + 5 {
                std::thread::yield_now();
            }
        }
        if cycle == 1 {
            say("...");
        }
    }
    let report = load.finish();
    windows.sort();
    install_ms.sort_by(f64::total_cmp);
    let p50 = windows.get(windows.len() / 2).copied().unwrap_or_default();
    let max = windows.last().copied().unwrap_or_default();
    say(format!(
        "summary: {} requests, {} failed, answered by v1: {}, by v2: {}",
        report.requests, report.failed, report.by_version[0], report.by_version[1]
    ));
    say(format!(
        "suspend window: median {p50:?}, max {max:?}; install: median {:.1} ms; slowest request {} us",
        install_ms[install_ms.len() / 2],
        report.max_latency_us
    ));
    if report.failed != 0 || report.by_version.contains(&0) {
        return Err(format!("the service lost requests: {:?}", report.problems).into());
    }
    Ok(())
}

fn lib(dist: &Path, vsn: u32) -> PathBuf {
    dist.join(format!("lib/greeter-{vsn}/greeter.so"))
}

const SWAPS: u32 = 20;

fn library_under_load(dist: &Path) -> Result<()> {
    step(&format!("A library module swapped v1 <-> v2 {SWAPS} times while 2 threads call it"));
    let server = CodeServer::new()?;
    server.load_object_code("greeter", lib(dist, 1))?;
    server.load("greeter", PurgeMethod::SoftPurge, PurgeMethod::SoftPurge)?;
    let greeter = server.handle::<Greeter>("greeter")?;
    say(format!(
        "greeter:greet(\"newcomer\") -> {:?}",
        greeter.call(|g| g.greet("newcomer".into()))?
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let callers: Vec<_> = (0..2)
        .map(|n| {
            let (greeter, stop, counts) = (greeter.clone(), stop.clone(), counts.clone());
            std::thread::Builder::new().name(format!("caller-{n}")).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let slot = match greeter.call(|g| g.version()) {
                        Ok(v @ 1..=2) => v as usize,
                        _ => 0,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect::<std::result::Result<_, _>>()?;
    for swap in 0..SWAPS {
        let vsn = if swap % 2 == 0 { 2 } else { 1 };
        server.load_object_code("greeter", lib(dist, vsn))?;
        let old = server.load("greeter", PurgeMethod::BrutalPurge, PurgeMethod::SoftPurge)?;
        if swap < 2 || swap == SWAPS - 1 {
            say(format!("swap {:>2}: v{vsn} current; old version: {}", swap + 1, describe(&old)));
        } else if swap == 2 {
            say("...");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().map_err(|_| "a caller thread panicked")?;
    }
    let [failed, n1, n2] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    say(format!("calls answered by v1: {n1}, by v2: {n2}, failed: {failed}"));

    let current = server.status().modules[0].current.clone().ok_or("greeter not current")?;
    let barrier = Barrier::new(2);
    std::thread::scope(|s| -> Result<()> {
        let parked = std::thread::Builder::new().name("parked".into()).spawn_scoped(s, || {
            greeter.call(|g| {
                g.park(Callback::new(&|| {
                    barrier.wait();
                    barrier.wait();
                    0
                }))
            })
        })?;
        barrier.wait();
        server.load_object_code("greeter", lib(dist, 2))?;
        server.load("greeter", PurgeMethod::BrutalPurge, PurgeMethod::SoftPurge)?;
        say(format!(
            "a thread parked inside v{}; upgrade, then purge -> {}",
            current.vsn,
            describe(&server.purge("greeter"))
        ));
        say(format!(
            "v{} still mapped while held: {}",
            current.vsn,
            hotcode::code::maps::is_mapped(&current.copy)?
        ));
        barrier.wait();
        parked.join().map_err(|_| "parked thread panicked")??;
        Ok(())
    })?;
    say(format!(
        "after the parked call returned, v{} mapped: {}",
        current.vsn,
        hotcode::code::maps::is_mapped(&current.copy)?
    ));
    if failed != 0 || n1 == 0 || n2 == 0 || !server.status().leaked.is_empty() {
        return Err("the library swap did not go as it should (see above)".into());
    }
    Ok(())
}

fn describe(p: &Purged) -> String {
    match p {
        Purged::Nothing => "none".into(),
        Purged::Unloaded => "unloaded (verified gone from /proc/self/maps)".into(),
        Purged::Leaked { reason } => format!("LEAKED: {reason}"),
        Purged::Pending { holders } => {
            let names: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
            format!("still held by {}, unloaded when it returns", names.join(", "))
        }
    }
}
