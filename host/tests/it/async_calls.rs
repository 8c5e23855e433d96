//! Async plugin calls: a future holds the version it entered until it completes or is
//! dropped, across threads; soft purge waits for it, brutal purge drops it then unloads.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hotcode::{AsyncCall, CallError, CodeServer, CodeServerError, Handle, Purged};
use plugin_api::interfaces::Napper;

use crate::{BrutalPurge, SoftPurge, fixtures, mapped};

fn napping() -> (CodeServer, Handle<Napper>, hotcode::VersionInfo) {
    let _ = env_logger::builder().is_test(true).try_init();
    let server = CodeServer::new().expect("code server");
    server.load_object_code("napper", fixtures::napper()).expect("load_object_code");
    server.load("napper", SoftPurge, SoftPurge).expect("load");
    let handle = server.handle::<Napper>("napper").expect("handle");
    let first = server.status().modules[0].current.clone().expect("current");
    (server, handle, first)
}

/// Loads the napper library again: a second, separately mapped version becomes current.
fn reload(server: &CodeServer, pre: hotcode::PurgeMethod) -> Purged {
    server.load_object_code("napper", fixtures::napper()).expect("load_object_code");
    server.load("napper", pre, SoftPurge).expect("load")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn future_holders(server: &CodeServer) -> usize {
    let holders = server.holders("napper").expect("holders");
    holders.old.map_or(0, |old| old.holders.iter().filter(|h| h.future.is_some()).count())
}

/// Polls `call` once, inside `rt`'s context, with a waker that does nothing.
fn poll_once(
    rt: &tokio::runtime::Runtime,
    call: &mut AsyncCall<u64>,
) -> Poll<Result<u64, CallError>> {
    let _inside = rt.enter();
    Pin::new(call).poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn an_async_handler_awaits_the_hosts_sleep() {
    let (_server, napper, _) = napping();
    let rt = runtime();
    let started = Instant::now();
    let slept = rt.block_on(napper.call_async(|n| n.nap(30))).expect("nap");
    assert_eq!(slept, 30);
    assert!(started.elapsed() >= Duration::from_millis(30), "slept on the host's timer");
}

#[test]
fn a_future_in_flight_keeps_its_version_through_load_and_soft_purge() {
    let (server, napper, first) = napping();
    let rt = runtime();
    let mut in_flight = napper.call_async(|n| n.nap(20));
    assert!(poll_once(&rt, &mut in_flight).is_pending(), "inside the host's sleep");

    let purged = reload(&server, SoftPurge);
    assert!(
        matches!(purged, Purged::Pending { .. }),
        "the future holds the old version: {purged:?}"
    );
    assert_eq!(future_holders(&server), 1, "holders lists the in-flight future");
    let refused = server.soft_purge("napper");
    assert!(matches!(refused, Err(CodeServerError::OldProcesses { .. })), "{refused:?}");
    assert!(mapped(&first));

    // New calls run the new version meanwhile; the old future completes in its own.
    assert_eq!(rt.block_on(napper.call_async(|n| n.nap(1))).expect("new call"), 1);
    assert_eq!(rt.block_on(in_flight).expect("the old future completes"), 20);
    assert_eq!(future_holders(&server), 0);
    assert_eq!(server.soft_purge("napper").expect("soft purge"), Purged::Unloaded);
    assert!(!mapped(&first), "unloaded once its last future completed");
}

#[test]
fn a_brutal_purge_drops_in_flight_futures_then_unloads() {
    let (server, napper, first) = napping();
    let rt = runtime();
    let mut in_flight = napper.call_async(|n| n.nap(60_000));
    assert!(poll_once(&rt, &mut in_flight).is_pending());
    let mut not_started = napper.call_async(|n| n.nap(60_000));

    assert!(matches!(reload(&server, SoftPurge), Purged::Pending { .. }));
    assert_eq!(future_holders(&server), 2);
    // The purge drops both plugin futures (in their version), then unloads it.
    assert_eq!(server.purge("napper"), Purged::Unloaded);
    assert!(!mapped(&first), "nothing of the purged version is mapped");
    for call in [&mut in_flight, &mut not_started] {
        let answer = poll_once(&rt, call);
        assert!(matches!(answer, Poll::Ready(Err(CallError::Purged { .. }))), "{answer:?}");
    }
    // Dropping the wrappers afterwards is harmless: their plugin futures are gone.
    drop((in_flight, not_started));
    assert_eq!(rt.block_on(napper.call_async(|n| n.nap(1))).expect("current still serves"), 1);
}

#[test]
fn a_brutal_pre_purge_on_load_drops_the_old_futures_too() {
    let (server, napper, first) = napping();
    let rt = runtime();
    let in_flight = napper.call_async(|n| n.nap(60_000));
    assert!(matches!(reload(&server, SoftPurge), Purged::Pending { .. }));
    // A third version with brutal pre-purge: the old version's future goes.
    reload(&server, BrutalPurge);
    assert!(!mapped(&first));
    assert!(matches!(rt.block_on(in_flight), Err(CallError::Purged { .. })));
}

#[test]
fn a_future_moved_across_threads_keeps_its_hold() {
    let (server, napper, first) = napping();
    // Started on a thread that then exits: its slots are gone, the future's hold is not.
    let starter = napper.clone();
    let in_flight = std::thread::spawn(move || starter.call_async(|n| n.nap(5)))
        .join()
        .expect("starter thread");
    assert!(matches!(reload(&server, SoftPurge), Purged::Pending { .. }));
    assert_eq!(future_holders(&server), 1);
    assert!(matches!(server.soft_purge("napper"), Err(CodeServerError::OldProcesses { .. })));
    // Awaited on the runtime's workers (spawned: it may migrate between them).
    let rt = runtime();
    let done = rt.block_on(async { tokio::spawn(in_flight).await.expect("task") });
    assert_eq!(done.expect("completes in its version"), 5);
    assert_eq!(server.soft_purge("napper").expect("soft purge"), Purged::Unloaded);
    assert!(!mapped(&first));
}

#[test]
fn a_panic_inside_poll_fails_that_call_only() {
    let (server, napper, _) = napping();
    let rt = runtime();
    let failed = rt.block_on(napper.call_async(|n| n.boom(1)));
    match failed {
        Err(CallError::Plugin { error, .. }) => {
            assert!(error.message.contains("boom after 1 ms"), "{}", error.message)
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }
    assert_eq!(rt.block_on(napper.call_async(|n| n.nap(1))).expect("still serving"), 1);
    assert_eq!(
        server.holders("napper").expect("holders").current.expect("current").holders,
        vec![]
    );
}

#[test]
fn a_gen_server_call_from_async_code_does_not_block_the_worker() {
    let node = crate::node_with(&[("stubborn", fixtures::plugin("fixture-stubborn"))]);
    node.start_gen_server("stubborn", plugin_api::Term::list([]), Some("sleepy"))
        .expect("start stubborn");
    // One worker thread: if the call blocked it, the task that releases the call could
    // never run, and the call would time out instead.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("rt");
    let node_ref = node.reference();
    let (reply, ()) = rt.block_on(async {
        let call = node_ref.call_async("sleepy", plugin_api::Term::atom("block"), crate::LONG);
        let release = async {
            while node.code().apply("stubborn", "waiting", vec![]).expect("waiting/0")
                != plugin_api::Term::Int(1)
            {
                tokio::task::yield_now().await;
            }
            node.code().apply("stubborn", "release", vec![]).expect("release/0");
        };
        tokio::join!(call, release)
    });
    assert_eq!(reply.expect("reply"), plugin_api::Term::atom("released"));
    // The call's future is Send: a multi-threaded runtime may move it between workers.
    fn send<T: Send>(_: &T) {}
    send(&node_ref.call_async("sleepy", plugin_api::Term::atom("ping"), crate::LONG));
}

#[test]
fn a_request_started_in_v1_completes_in_v1_while_new_ones_run_v2() {
    use plugin_api::interfaces::WebRoutes;
    let _ = env_logger::builder().is_test(true).try_init();
    let server = CodeServer::new().expect("code server");
    server.load_object_code("web_routes", fixtures::plugin("web_routes-v1")).expect("stage v1");
    server.load("web_routes", SoftPurge, SoftPurge).expect("load v1");
    let routes = server.handle::<WebRoutes>("web_routes").expect("handle");
    let v1 = server.status().modules[0].current.clone().expect("v1");
    let rt = runtime();
    let mut started = routes.call_async(|r| r.hello("early".into()));
    {
        let _inside = rt.enter();
        let polled = Pin::new(&mut started).poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending(), "inside the host's sleep, in v1");
    }
    server.load_object_code("web_routes", fixtures::plugin("web_routes-v2")).expect("stage v2");
    assert!(matches!(server.load("web_routes", SoftPurge, SoftPurge), Ok(Purged::Pending { .. })));
    let late = rt.block_on(routes.call_async(|r| r.hello("late".into()))).expect("v2 answers");
    assert_eq!(late, "hi late, welcome back (v2)");
    assert!(mapped(&v1));
    assert_eq!(rt.block_on(started).expect("v1 answers"), "hello, early (v1)");
    assert_eq!(server.soft_purge("web_routes").expect("soft purge"), Purged::Unloaded);
    assert!(!mapped(&v1), "v1 is unloaded once its last request completed");
}
