//! The code server's OTP semantics: current/old slots, load, remove, purge, fresh statics.

use std::sync::Barrier;

use hotcode::{CallError, CodeServerError, Purged};
use plugin_api::{Callback, PluginErrorKind};

use crate::{BrutalPurge, SoftPurge, answering, fixtures, mapped, serving, upgrade};

#[test]
fn each_call_enters_the_version_current_when_it_starts() {
    let (server, greeter) = serving(1);
    assert_eq!(greeter.call(|g| g.greet("joe".into())).unwrap(), "hello, joe");
    assert_eq!(upgrade(&server, 2), Purged::Unloaded, "v1 was not held: unloaded at once");
    assert_eq!(greeter.call(|g| g.greet("joe".into())).unwrap(), "hi joe, from v2");
    assert_eq!(server.current_vsn("greeter").as_deref(), Some("2"));
    upgrade(&server, 1);
    assert_eq!(answering(&greeter), 1);
}

#[test]
fn load_makes_current_old_and_unloads_it_when_unheld() {
    let (server, _greeter) = serving(1);
    let v1 = server.status().modules[0].current.clone().unwrap();
    assert!(mapped(&v1));
    server.load_object_code("greeter", fixtures::greeter_v2()).unwrap();
    let staged = server.status().modules[0].staged.clone().unwrap();
    assert!(mapped(&staged), "load_object_code maps the new version");
    assert_eq!(server.current_vsn("greeter").as_deref(), Some("1"), "but does not make it current");
    assert_eq!(server.load("greeter", SoftPurge, SoftPurge).unwrap(), Purged::Unloaded);
    assert!(!mapped(&v1), "old v1 left the address space");
    assert!(!v1.copy.exists(), "and its private copy is deleted");
    let status = server.status();
    assert_eq!(status.modules[0].current.as_ref().unwrap().vsn, "2");
    assert_eq!(status.modules[0].old, None);
}

#[test]
fn removed_module_refuses_calls_and_comes_back_on_load() {
    let (server, greeter) = serving(1);
    assert_eq!(server.remove("greeter", SoftPurge, SoftPurge).unwrap(), Purged::Unloaded);
    match greeter.call(|g| g.version()) {
        Err(CallError::NotLoaded { module }) => assert_eq!(module, "greeter"),
        other => panic!("expected NotLoaded, got {other:?}"),
    }
    assert_eq!(
        server.remove("greeter", SoftPurge, SoftPurge).unwrap(),
        Purged::Nothing,
        "removing twice is fine"
    );
    assert_eq!(server.remove("nonexistent", SoftPurge, SoftPurge).unwrap(), Purged::Nothing);
    upgrade(&server, 2);
    assert_eq!(answering(&greeter), 2, "the same handle works again");
}

#[test]
fn every_load_gets_fresh_statics_even_from_the_same_file() {
    let (server, greeter) = serving(1);
    assert_eq!(greeter.call(|g| g.bump()).unwrap(), 1);
    assert_eq!(greeter.call(|g| g.bump()).unwrap(), 2);
    // The same file again, while the first load is still old code: two distinct mappings.
    let first = server.status().modules[0].current.clone().unwrap();
    server.load_object_code("greeter", fixtures::greeter_v1()).unwrap();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        // Keep the first load busy so it stays mapped while the second is loaded.
        let parked = s.spawn(|| {
            greeter.call(|g| {
                g.park(Callback::new(&|| {
                    barrier.wait();
                    barrier.wait();
                    0
                }))
            })
        });
        barrier.wait();
        server.load("greeter", SoftPurge, SoftPurge).unwrap();
        let second = server.status().modules[0].current.clone().unwrap();
        assert_ne!(first.copy, second.copy, "each load maps its own copy");
        assert!(mapped(&first) && mapped(&second));
        assert_eq!(greeter.call(|g| g.bump()).unwrap(), 1, "the second load starts from zero");
        barrier.wait();
        parked.join().unwrap().unwrap();
    });
    // After v2 and back to v1 again, the counter restarts once more.
    upgrade(&server, 2);
    upgrade(&server, 1);
    assert_eq!(greeter.call(|g| g.bump()).unwrap(), 1);
}

#[test]
fn nested_calls_hold_each_version_they_enter() {
    let (server, greeter) = serving(1);
    let barrier = Barrier::new(2);
    let inner = greeter.clone();
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            greeter.call(|g| {
                g.park(Callback::new(&|| {
                    barrier.wait(); // inside v1
                    barrier.wait(); // main loaded v2
                    let nested = inner.call(|g2| {
                        g2.park(Callback::new(&|| {
                            barrier.wait(); // inside v1 (outer) and v2 (inner)
                            barrier.wait();
                            0
                        }))
                    });
                    nested.map(|_| 0).unwrap_or(99)
                        + u64::from(inner.call(|g| g.version()).unwrap_or(0))
                }))
            })
        });
        barrier.wait();
        assert_eq!(
            upgrade(&server, 2),
            Purged::Pending { holders: server_holders(&server, false) }
        );
        barrier.wait();
        barrier.wait();
        let holders = server.holders("greeter").unwrap();
        let current = holders.current.unwrap();
        let old = holders.old.unwrap();
        assert_eq!((current.version.vsn.as_str(), old.version.vsn.as_str()), ("2", "1"));
        assert_eq!(current.holders.len(), 1, "the nested call holds v2");
        assert_eq!(old.holders.len(), 1, "the outer call still holds v1");
        assert_eq!(current.holders[0].thread, old.holders[0].thread);
        barrier.wait();
        assert_eq!(
            t.join().unwrap().unwrap(),
            2,
            "the nested call entered v2, the current version"
        );
    });
    // The outer call returned, so the old version's pending soft post-purge can finish.
    assert_eq!(server.post_purge("greeter"), Purged::Unloaded);
    assert!(server.pending_post_purges().is_empty());
}

/// Holders of greeter's old version right now (helper for exact comparisons).
fn server_holders(server: &hotcode::CodeServer, current: bool) -> Vec<hotcode::Holder> {
    let h = server.holders("greeter").unwrap();
    let v = if current { h.current } else { h.old };
    v.map(|v| v.holders).unwrap_or_default()
}

#[test]
fn panicking_plugin_call_is_an_error_and_the_node_goes_on() {
    let (server, greeter) = serving(1);
    let err = greeter.call(|g| g.fail("boom".into())).unwrap_err();
    match &err {
        CallError::Plugin { module, error } => {
            assert_eq!(module, "greeter");
            assert_eq!(error.kind, PluginErrorKind::Panic);
            assert!(error.message.contains("boom"), "{}", error.message);
            assert!(error.message.contains("src/lib.rs:"), "names where: {}", error.message);
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
    assert_eq!(answering(&greeter), 1, "the same version keeps serving");
    // The panic machinery must not have pinned the library (no TLS destructor).
    let v1 = server.status().modules[0].current.clone().unwrap();
    assert_eq!(server.remove("greeter", SoftPurge, SoftPurge).unwrap(), Purged::Unloaded);
    assert!(!mapped(&v1));
}

#[test]
fn soft_purge_refuses_while_held_and_names_the_holder() {
    let (server, greeter) = serving(1);
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let t = std::thread::Builder::new()
            .name("parked-in-v1".into())
            .spawn_scoped(s, || {
                greeter.call(|g| {
                    g.park(Callback::new(&|| {
                        barrier.wait();
                        barrier.wait();
                        7
                    }))
                })
            })
            .unwrap();
        barrier.wait();
        match upgrade(&server, 2) {
            Purged::Pending { holders } => assert_eq!(holders[0].thread.name, "parked-in-v1"),
            other => panic!("v1 is held, expected Pending, got {other:?}"),
        }
        match server.soft_purge("greeter") {
            Err(CodeServerError::OldProcesses { module, holders }) => {
                assert_eq!(module, "greeter");
                assert_eq!(holders.len(), 1);
                assert_eq!(holders[0].thread.name, "parked-in-v1");
                let msg = CodeServerError::OldProcesses { module, holders }.to_string();
                assert!(msg.contains("parked-in-v1"), "{msg}");
            }
            other => panic!("expected OldProcesses, got {other:?}"),
        }
        // A third version with soft_purge as PrePurge is refused up front, too.
        server.load_object_code("greeter", fixtures::greeter_v1()).unwrap();
        assert!(matches!(
            server.load("greeter", SoftPurge, SoftPurge),
            Err(CodeServerError::OldProcesses { .. })
        ));
        assert_eq!(answering(&greeter), 2, "the refused load changed nothing");
        assert!(server.drop_staged("greeter"));
        barrier.wait();
        assert_eq!(t.join().unwrap().unwrap(), 7);
    });
    assert_eq!(server.soft_purge("greeter").unwrap(), Purged::Unloaded);
}

#[test]
fn brutal_pre_purge_detaches_a_held_old_version_for_a_third() {
    let (server, greeter) = serving(1);
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            greeter.call(|g| {
                g.park(Callback::new(&|| {
                    barrier.wait();
                    barrier.wait();
                    1
                }))
            })
        });
        barrier.wait();
        let v1 = server.status().modules[0].current.clone().unwrap();
        assert!(matches!(upgrade(&server, 2), Purged::Pending { .. }));
        // Third version: v1 (old, held) is purged brutally: detached, not unmapped.
        server.load_object_code("greeter", fixtures::greeter_v1()).unwrap();
        assert_eq!(
            server.load("greeter", BrutalPurge, SoftPurge).unwrap(),
            Purged::Unloaded,
            "v2 was unheld"
        );
        let status = server.status();
        assert_eq!(status.detached.len(), 1);
        assert_eq!(status.detached[0].id, v1.id);
        assert!(mapped(&v1), "a detached version stays mapped while held");
        let holders = server.holders("greeter").unwrap();
        assert_eq!(holders.detached.len(), 1);
        assert_eq!(holders.detached[0].holders.len(), 1);
        barrier.wait();
        t.join().unwrap().unwrap();
        assert!(!mapped(&v1), "unloaded when its last holder returned");
    });
    assert!(server.status().detached.is_empty());
}
