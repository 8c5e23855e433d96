//! Verified unloading: held versions stay mapped, unheld ones leave, leaks are reported.

use std::sync::Barrier;

use hotcode::{CodeServer, Purged};
use plugin_api::Callback;
use plugin_api::interfaces::Greeter;

use crate::{SoftPurge, fixtures, mapped, serving, upgrade};

#[test]
fn a_thread_parked_in_v1_keeps_it_mapped_through_load_and_purge() {
    let (server, greeter) = serving(1);
    let v1 = server.status().modules[0].current.clone().unwrap();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let parked = s.spawn(|| {
            let answer = greeter.call(|g| {
                g.park(Callback::new(&|| {
                    barrier.wait(); // parked inside v1
                    barrier.wait(); // main has loaded v2 and purged v1
                    11
                }))
            });
            // Right after the call returned, before this thread does anything else.
            let gone_at_once = !mapped(&v1);
            barrier.wait();
            (answer, gone_at_once)
        });
        barrier.wait();
        assert!(matches!(upgrade(&server, 2), Purged::Pending { .. }));
        assert!(mapped(&v1), "load leaves a held old version mapped");
        match server.purge("greeter") {
            Purged::Pending { holders } => assert_eq!(holders.len(), 1),
            other => panic!("v1 is held, purge must wait for it, got {other:?}"),
        }
        assert!(mapped(&v1), "purge never unmaps code a thread is in");
        assert_eq!(crate::answering(&greeter), 2, "new calls go to v2 meanwhile");
        barrier.wait();
        barrier.wait();
        let (answer, gone_at_once) = parked.join().unwrap();
        assert_eq!(answer.unwrap(), 11);
        assert!(gone_at_once, "v1 was unmapped as its last holder returned");
    });
    assert!(!v1.copy.exists());
    assert!(server.status().detached.is_empty());
}

#[test]
fn a_library_pinned_by_a_tls_destructor_is_reported_as_leaked_then_retried() {
    let _ = env_logger::builder().is_test(true).try_init();
    let server = CodeServer::new().unwrap();
    server.load_object_code("tls_pin", fixtures::plugin("fixture-tls-pin")).unwrap();
    server.load("tls_pin", SoftPurge, SoftPurge).unwrap();
    let pin = server.handle::<Greeter>("tls_pin").unwrap();
    let info = server.status().modules[0].current.clone().unwrap();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let pinning = std::thread::Builder::new()
            .name("tls-pinner".into())
            .spawn_scoped(s, || {
                // This call registers a TLS destructor inside the plugin, on this thread.
                let greeting = pin.call(|g| g.greet("me".into())).unwrap();
                barrier.wait(); // the call is over, but this thread lives on
                barrier.wait();
                greeting
            })
            .unwrap();
        barrier.wait();
        match server.remove("tls_pin", SoftPurge, SoftPurge).unwrap() {
            Purged::Leaked { reason } => assert!(reason.contains("still mapped"), "{reason}"),
            other => panic!("expected the library to be reported as leaked, got {other:?}"),
        }
        assert!(mapped(&info), "glibc keeps it while the pinning thread lives");
        let leaked = server.status().leaked;
        assert_eq!(leaked.len(), 1);
        assert_eq!((leaked[0].module.as_str(), leaked[0].id), ("tls_pin", info.id));
        assert!(server.retry_leaked().is_empty(), "a retry while pinned changes nothing");
        assert!(mapped(&info));
        barrier.wait();
        assert_eq!(pinning.join().unwrap(), "pinned by me");
    });
    // The pinning thread is gone: the retry unloads it.
    server.retry_leaked();
    assert!(!mapped(&info), "unmapped after the pinning thread exited");
    assert!(server.status().leaked.is_empty());
}

#[test]
fn shipped_plugins_do_not_pin_the_threads_that_called_them() {
    let (server, greeter) = serving(2);
    let info = server.status().modules[0].current.clone().unwrap();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            // Every function, including a caught panic, on a thread that stays alive.
            greeter
                .call(|g| {
                    g.greet("x".into())?;
                    g.bump()?;
                    g.add(1, 2)?;
                    g.park(Callback::new(&|| 0))?;
                    Ok(g.fail("expected".into()).is_err())
                })
                .unwrap();
            barrier.wait();
            barrier.wait();
        });
        barrier.wait();
        assert_eq!(server.remove("greeter", SoftPurge, SoftPurge).unwrap(), Purged::Unloaded);
        assert!(!mapped(&info), "unloaded while the calling thread is still alive");
        barrier.wait();
        t.join().unwrap();
    });
}

#[test]
fn dropping_the_code_server_unloads_everything_and_its_scratch_dir() {
    let (server, greeter) = serving(1);
    upgrade(&server, 2);
    let scratch = server.scratch_dir().to_owned();
    let v2 = server.status().modules[0].current.clone().unwrap();
    drop(server);
    assert!(!mapped(&v2));
    assert!(!scratch.exists());
    assert!(matches!(greeter.call(|g| g.version()), Err(hotcode::CallError::NotLoaded { .. })));
}
