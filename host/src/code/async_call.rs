//! Async calls: the host-side future that owns a plugin's [`FfiFuture`] and the hold on the
//! version that made it.
//!
//! [`Handle::call_async`](crate::Handle::call_async) enters the current version through the
//! calling thread's slot, starts the plugin's future, and hands the hold over to a
//! `FutureHold` owned by the returned [`AsyncCall`]. From then on the version stays mapped
//! for as long as the plugin's future exists, whichever thread polls it and however long it
//! waits: the plugin's future is always dropped before its hold (on completion, on a panic,
//! when the `AsyncCall` is dropped, or when a brutal purge cancels it), so its drop runs in
//! its own version. Results are copied into host memory ([`IntoHost`]) before the hold goes.
//!
//! A poll lends the task's waker to the plugin for that poll only ([`FfiWaker::lend`]);
//! every clone the plugin keeps is made by the host and owned by host memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use plugin_api::{FfiFuture, FfiPoll, FfiWaker, IntoHost};

use crate::code::error::CallError;
use crate::code::hold::{FutureHold, FutureHolder, Hold};

/// What an in-flight call owns, behind one lock: polls, completion and cancellation take
/// turns. `future` is declared (and always taken) before `hold`.
struct Slot<R: 'static> {
    future: Option<FfiFuture<R>>,
    hold: Option<FutureHold>,
    /// The waker of the last poll, woken by a cancellation so the task sees it.
    waker: Option<Waker>,
}

struct Inflight<R: 'static> {
    slot: Mutex<Slot<R>>,
}

impl<R: 'static> Inflight<R> {
    fn lock(&self) -> MutexGuard<'_, Slot<R>> {
        // Every critical section leaves the slot consistent (a take, a poll that panicked
        // only in host code we call after the plugin returned), so a poisoned lock is fine.
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops the plugin's future, then the hold: the order the module docs promise.
    fn finish(slot: &mut Slot<R>) {
        drop(slot.future.take());
        drop(slot.hold.take());
    }
}

impl<R: Send + 'static> FutureHolder for Inflight<R> {
    fn cancel(&self) {
        let waker = {
            let mut slot = self.lock();
            Inflight::finish(&mut slot);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The future of an async plugin call ([`Handle::call_async`](crate::Handle::call_async)):
/// resolves to the plugin's result copied into host memory, or a [`CallError`]. `Send`, so
/// a runtime may move it between worker threads; it holds the version it entered until it
/// completes or is dropped.
#[must_use = "an async call does nothing unless awaited, and holds its version until dropped"]
pub struct AsyncCall<R: IntoHost + 'static> {
    module: String,
    state: Result<Arc<Inflight<R>>, Option<CallError>>,
}

impl<R: IntoHost + Send + 'static> AsyncCall<R> {
    /// A call that failed before it started.
    pub(crate) fn failed(module: &str, error: CallError) -> Self {
        AsyncCall { module: module.to_owned(), state: Err(Some(error)) }
    }

    /// Takes over `future`, made by the version `held` is inside; `held` must stay alive
    /// until this returns.
    pub(crate) fn start(module: &str, held: &Hold, future: FfiFuture<R>) -> Self {
        let inflight = Arc::new(Inflight {
            slot: Mutex::new(Slot { future: Some(future), hold: None, waker: None }),
        });
        let weak: Weak<dyn FutureHolder> = Arc::downgrade(&inflight) as Weak<dyn FutureHolder>;
        let hold = FutureHold::take_over(held, weak);
        let cancelled = {
            let mut slot = inflight.lock();
            if slot.future.is_some() {
                slot.hold = Some(hold);
                None
            } else {
                Some(hold)
            }
        };
        // A brutal purge of this very version (it stopped being current after we entered
        // it) cancelled the future between its registration and here: let go at once rather
        // than hold a version for a future that is gone.
        drop(cancelled);
        AsyncCall { module: module.to_owned(), state: Ok(inflight) }
    }
}

impl<R: IntoHost + Send + 'static> Future for AsyncCall<R> {
    type Output = Result<R::Host, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inflight = match &mut this.state {
            Ok(inflight) => Arc::clone(inflight),
            Err(error) => {
                let error =
                    error.take().unwrap_or(CallError::Purged { module: this.module.clone() });
                return Poll::Ready(Err(error));
            }
        };
        let mut slot = inflight.lock();
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        let Some(future) = slot.future.as_mut() else {
            // Cancelled by a brutal purge (or polled again after it completed).
            return Poll::Ready(Err(CallError::Purged { module: this.module.clone() }));
        };
        let answer = FfiWaker::lend(cx.waker(), |waker| future.poll_ffi(waker));
        let result = match answer {
            FfiPoll::Pending => return Poll::Pending,
            // Copied out while the hold still keeps the plugin's allocator mapped.
            FfiPoll::Ready(value) => Ok(value.into_host()),
            FfiPoll::Panicked(error) => {
                Err(CallError::Plugin { module: this.module.clone(), error: error.into_host() })
            }
        };
        Inflight::finish(&mut slot);
        drop(slot);
        this.state = Err(None);
        Poll::Ready(result)
    }
}

impl<R: IntoHost + 'static> Drop for AsyncCall<R> {
    fn drop(&mut self) {
        if let Ok(inflight) = &self.state {
            let mut slot = inflight.lock();
            Inflight::finish(&mut slot);
        }
    }
}

impl<R: IntoHost + 'static> std::fmt::Debug for AsyncCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsyncCall({})", self.module)
    }
}
