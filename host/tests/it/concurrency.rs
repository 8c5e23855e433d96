//! Swapping versions while threads call in a loop: every call answered by exactly one
//! version, none lost. Synchronised with atomics the test waits on, never with sleeps.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::{serving, upgrade};

const CALLERS: usize = 2;
const SWAPS: u32 = 40;

struct Caller {
    /// The version the last call saw.
    seen: AtomicU32,
    /// Calls answered by v1 and by v2.
    by_v1: AtomicU64,
    by_v2: AtomicU64,
}

#[test]
fn v1_v2_v1_swaps_while_two_threads_call_in_a_loop() {
    let (server, greeter) = serving(1);
    let stop = AtomicBool::new(false);
    let callers: Vec<Caller> = (0..CALLERS)
        .map(|_| Caller {
            seen: AtomicU32::new(0),
            by_v1: AtomicU64::new(0),
            by_v2: AtomicU64::new(0),
        })
        .collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = callers
            .iter()
            .map(|me| {
                let greeter = greeter.clone();
                let stop = &stop;
                s.spawn(move || {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        // Two functions in one call: both must come from the same version.
                        let answer = greeter.call(|g| Ok((g.version()?, g.greet("x".into())?)));
                        match answer {
                            Ok((1, greeting)) if greeting == "hello, x" => {
                                me.by_v1.fetch_add(1, Ordering::Relaxed);
                                me.seen.store(1, Ordering::Release);
                            }
                            Ok((2, greeting)) if greeting == "hi x, from v2" => {
                                me.by_v2.fetch_add(1, Ordering::Relaxed);
                                me.seen.store(2, Ordering::Release);
                            }
                            other => failures.push(format!("{other:?}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        for swap in 0..SWAPS {
            let vsn = if swap % 2 == 0 { 2 } else { 1 };
            upgrade(&server, vsn);
            // Wait until every caller has been answered by the new version.
            for me in &callers {
                while me.seen.load(Ordering::Acquire) != vsn {
                    std::hint::spin_loop();
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let failures = w.join().unwrap();
            assert!(failures.is_empty(), "calls lost or answered wrongly: {failures:?}");
        }
    });
    for me in &callers {
        assert!(me.by_v1.load(Ordering::Relaxed) > 0 && me.by_v2.load(Ordering::Relaxed) > 0);
    }
    // Every replaced version was unloaded (now or when its last caller returned).
    let status = server.status();
    assert!(status.detached.is_empty(), "{:?}", status.detached);
    assert!(status.leaked.is_empty());
    let mapped = hotcode::code::maps::mapped_files_under(server.scratch_dir()).unwrap();
    assert!(mapped.len() <= 2, "at most current and a pending old stay mapped: {mapped:?}");
    server.post_purge("greeter");
    let mapped = hotcode::code::maps::mapped_files_under(server.scratch_dir()).unwrap();
    assert_eq!(mapped.len(), 1, "only the current version remains: {mapped:?}");
}
