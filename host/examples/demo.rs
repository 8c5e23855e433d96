//! The hotcode demo: hot-swapping a library module under load, narrated.
//!
//! Run with `cargo xtask demo` (which builds the plugins into `target/dist` first), or
//! `cargo run --example demo -- target/dist`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use hotcode::{CodeServer, PurgeMethod, Purged};
use plugin_api::Callback;
use plugin_api::interfaces::Greeter;

const SWAPS: u32 = 20;

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

fn lib(dist: &Path, vsn: u32) -> PathBuf {
    dist.join(format!("lib/greeter-{vsn}/greeter.so"))
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dist = std::env::args().nth(1).map(PathBuf::from).ok_or("usage: demo DIST_DIR")?;
    let server = CodeServer::new()?;

    step("Load greeter version 1 and call it");
    let v1 = server.load_object_code("greeter", lib(&dist, 1))?;
    say(format!("load_object_code: {} (private copy {})", v1.source.display(), v1.copy.display()));
    server.load("greeter", PurgeMethod::SoftPurge, PurgeMethod::SoftPurge)?;
    let greeter = server.handle::<Greeter>("greeter")?;
    say(format!(
        "greeter:greet(\"newcomer\") -> {:?}",
        greeter.call(|g| g.greet("newcomer".into()))?
    ));

    step(&format!("Swap v1 <-> v2 {SWAPS} times while 2 threads call in a loop"));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let failed = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..2)
        .map(|n| {
            let (greeter, stop, counts, failed) =
                (greeter.clone(), stop.clone(), counts.clone(), failed.clone());
            std::thread::Builder::new().name(format!("caller-{n}")).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match greeter.call(|g| g.version()) {
                        Ok(v @ 1..=2) => counts[v as usize].fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect::<Result<_, _>>()?;
    for swap in 0..SWAPS {
        let vsn = if swap % 2 == 0 { 2 } else { 1 };
        server.load_object_code("greeter", lib(&dist, vsn))?;
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
    let (n1, n2) = (counts[1].load(Ordering::Relaxed), counts[2].load(Ordering::Relaxed));
    say(format!(
        "calls answered by v1: {n1}, by v2: {n2}, failed: {}",
        failed.load(Ordering::Relaxed)
    ));
    server.post_purge("greeter");
    let mapped = hotcode::maps::mapped_files_under(server.scratch_dir())?;
    say(format!("greeter copies still mapped: {} (the current version)", mapped.len()));

    step("A thread parked inside v1 keeps it mapped through an upgrade and a purge");
    let current = server.status().modules[0].current.clone().ok_or("greeter not current")?;
    say(format!("current: greeter vsn {} ({})", current.vsn, current.copy.display()));
    let barrier = Barrier::new(2);
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
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
        server.load_object_code("greeter", lib(&dist, 2))?;
        server.load("greeter", PurgeMethod::BrutalPurge, PurgeMethod::SoftPurge)?;
        say(format!("purge greeter -> {}", describe(&server.purge("greeter"))));
        say(format!(
            "v{} still mapped while held: {}",
            current.vsn,
            hotcode::maps::is_mapped(&current.copy)?
        ));
        barrier.wait();
        parked.join().map_err(|_| "parked thread panicked")??;
        Ok(())
    })?;
    say(format!(
        "after the parked call returned, v{} mapped: {}",
        current.vsn,
        hotcode::maps::is_mapped(&current.copy)?
    ));

    step("Summary");
    let status = server.status();
    for m in &status.modules {
        say(format!(
            "{}: current {}, old {}",
            m.name,
            m.current.as_ref().map_or("none".into(), |v| format!("vsn {}", v.vsn)),
            m.old.as_ref().map_or("none".into(), |v| format!("vsn {}", v.vsn))
        ));
    }
    say(format!("detached: {}, leaked: {}", status.detached.len(), status.leaked.len()));
    if failed.load(Ordering::Relaxed) != 0 || n1 == 0 || n2 == 0 || !status.leaked.is_empty() {
        return Err("the demo did not go as it should (see above)".into());
    }
    println!("\nok: {} calls, 0 failed, both versions served", n1 + n2);
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
