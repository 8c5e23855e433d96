//! Futures across the boundary: [`FfiFuture`], the [`FfiWaker`] the host lends to each poll,
//! and [`sleep`], the first of the host's async services.
//!
//! An `async` interface function returns an [`FfiFuture`]: a `#[repr(C)]` pair of a pointer
//! to the future's state and a table of two `extern "C"` functions (poll, drop), both written
//! by [`FfiFuture::new`] in the crate that made the future. So a plugin's future is polled
//! and dropped by the plugin's own code (nothing the plugin allocated is freed by the host),
//! and a host future (such as [`sleep`]'s) by the host's.
//!
//! This is our own table rather than the `async_ffi` crate's `FfiFuture` for one reason:
//! wakers. A plugin that turned the host's waker into a `std::task::Waker` of its own would
//! hand tokio (through a host future it awaits) a waker whose vtable is in the plugin; tokio
//! may keep such a waker after the plugin is unloaded. Here the waker that reaches any host
//! future is always the host's own: the plugin's context wraps the [`FfiWaker`] the host
//! lent, and when plugin code polls a host future, [`FfiFuture`]'s `Future` impl recognises
//! that wrapper and passes the host's `FfiWaker` straight back. Every waker clone that
//! outlives a poll is made by a host function and owned by host memory.
//!
//! The rules, each kept by the types here:
//! - a borrowed [`FfiWaker`] lives for one poll call (it is passed as `&FfiWaker`);
//! - a clone of it is made by its vtable's `clone`, i.e. by the code that lent it;
//! - a panic in poll or drop is caught in the code that panicked and becomes
//!   [`FfiPoll::Panicked`] (or is swallowed, for drop), never an unwind across `extern "C"`;
//! - plugin code awaits a host future only under the waker the host lent (directly or through
//!   a clone of it). A combinator that invents its own waker would give the host a waker whose
//!   code is in the plugin: that is refused (the poll panics, which becomes an error).
//!
//! Plugins never link tokio: whatever needs the runtime is a host function in
//! [`HostServices`] that returns an [`FfiFuture`] (see [`sleep`]).

use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use abi_stable::StableAbi;
use abi_stable::std_types::RResult;

use crate::abi::RPluginError;
use crate::services::HostServices;

/// The functions behind an [`FfiWaker`], all of the code that lent it.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiWakerVTable {
    clone: extern "C" fn(data: *const ()) -> FfiWaker,
    wake: extern "C" fn(data: *const ()),
    wake_by_ref: extern "C" fn(data: *const ()),
    drop: extern "C" fn(data: *const ()),
}

/// A waker that crosses the boundary: lent as `&FfiWaker` for one poll, or owned (a clone).
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiWaker {
    data: *const (),
    vtable: &'static FfiWakerVTable,
}

// SAFETY: an FfiWaker wraps a `std::task::Waker` (lent or boxed), which is Send + Sync; its
// functions only clone, wake or drop that waker.
unsafe impl Send for FfiWaker {}
// SAFETY: as above; `wake_by_ref` on a shared `Waker` is thread-safe.
unsafe impl Sync for FfiWaker {}

impl FfiWaker {
    /// Lends `waker` as an [`FfiWaker`] for the length of `f` (host side: each poll of a
    /// plugin future). The vtable is this binary's, so only the host should lend: a waker
    /// lent by a plugin would put plugin code behind wakers the host may keep.
    pub fn lend<R>(waker: &Waker, f: impl FnOnce(&FfiWaker) -> R) -> R {
        let lent = FfiWaker { data: waker as *const Waker as *const (), vtable: &LENT_VTABLE };
        f(&lent)
    }

    /// Runs `f` with a `Context` whose waker forwards to this `FfiWaker`.
    fn with_context<R>(&self, f: impl FnOnce(&mut Context<'_>) -> R) -> R {
        let raw = RawWaker::new(self as *const FfiWaker as *const (), &FORWARD_BORROWED);
        // SAFETY: FORWARD_BORROWED's functions treat `data` as `&FfiWaker`, which `self` is
        // for the length of this call; the Waker is never dropped (ManuallyDrop), and every
        // clone of it goes through the FfiWaker's own `clone`, owning what it makes.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
        let mut cx = Context::from_waker(&waker);
        f(&mut cx)
    }

    /// The `FfiWaker` behind `waker`, if `waker` is one of this binary's forwarding wakers.
    fn behind(waker: &Waker) -> Option<&FfiWaker> {
        let vtable = waker.vtable();
        if std::ptr::eq(vtable, &FORWARD_BORROWED) || std::ptr::eq(vtable, &FORWARD_OWNED) {
            // SAFETY: both forwarding vtables are only ever paired with a pointer to a live
            // FfiWaker (borrowed for the poll, or boxed and owned by `waker`), and the result
            // borrows `waker`.
            Some(unsafe { &*(waker.data() as *const FfiWaker) })
        } else {
            None
        }
    }
}

impl Drop for FfiWaker {
    fn drop(&mut self) {
        (self.vtable.drop)(self.data);
    }
}

// --- Lending a std Waker (the host's side). ---

static LENT_VTABLE: FfiWakerVTable =
    FfiWakerVTable { clone: lent_clone, wake: lent_wake, wake_by_ref: lent_wake, drop: lent_drop };
static OWNED_VTABLE: FfiWakerVTable = FfiWakerVTable {
    clone: owned_clone,
    wake: owned_wake,
    wake_by_ref: owned_wake_by_ref,
    drop: owned_drop,
};

fn owned(waker: Waker) -> FfiWaker {
    FfiWaker { data: Box::into_raw(Box::new(waker)) as *const (), vtable: &OWNED_VTABLE }
}

extern "C" fn lent_clone(data: *const ()) -> FfiWaker {
    // SAFETY: LENT_VTABLE pairs with a `&Waker` valid for the poll this is called from.
    owned(unsafe { &*(data as *const Waker) }.clone())
}
extern "C" fn lent_wake(data: *const ()) {
    // A lent waker is never owned, so "wake" (consuming) means wake by reference.
    // SAFETY: as in `lent_clone`.
    unsafe { &*(data as *const Waker) }.wake_by_ref();
}
extern "C" fn lent_drop(_: *const ()) {}
extern "C" fn owned_clone(data: *const ()) -> FfiWaker {
    // SAFETY: OWNED_VTABLE pairs with a `Box<Waker>` made by `owned`, alive until `owned_drop`.
    owned(unsafe { &*(data as *const Waker) }.clone())
}
extern "C" fn owned_wake(data: *const ()) {
    // SAFETY: as in `owned_clone`. The FfiWaker's own Drop frees the box afterwards.
    unsafe { &*(data as *const Waker) }.wake_by_ref();
}
extern "C" fn owned_wake_by_ref(data: *const ()) {
    // SAFETY: as in `owned_clone`.
    unsafe { &*(data as *const Waker) }.wake_by_ref();
}
extern "C" fn owned_drop(data: *const ()) {
    // SAFETY: `data` is the `Box<Waker>` made by `owned`, dropped once (by FfiWaker's Drop).
    drop(unsafe { Box::from_raw(data as *mut Waker) });
}

// --- Forwarding a std Waker to an FfiWaker (the side that polls with a lent waker). ---

static FORWARD_BORROWED: RawWakerVTable =
    RawWakerVTable::new(fwd_clone, fwd_borrowed_wake, fwd_wake_by_ref, fwd_borrowed_drop);
static FORWARD_OWNED: RawWakerVTable =
    RawWakerVTable::new(fwd_clone, fwd_owned_wake, fwd_wake_by_ref, fwd_owned_drop);

unsafe fn fwd_clone(data: *const ()) -> RawWaker {
    // SAFETY: both forwarding vtables pair with a pointer to a live FfiWaker.
    let ffi = unsafe { &*(data as *const FfiWaker) };
    let cloned = Box::new((ffi.vtable.clone)(ffi.data));
    RawWaker::new(Box::into_raw(cloned) as *const (), &FORWARD_OWNED)
}
unsafe fn fwd_wake_by_ref(data: *const ()) {
    // SAFETY: as in `fwd_clone`.
    let ffi = unsafe { &*(data as *const FfiWaker) };
    (ffi.vtable.wake_by_ref)(ffi.data);
}
unsafe fn fwd_borrowed_wake(data: *const ()) {
    // A borrowed forwarding waker is never owned (it lives in ManuallyDrop); waking by value
    // can only mean waking by reference.
    // SAFETY: as in `fwd_clone`.
    unsafe { fwd_wake_by_ref(data) }
}
unsafe fn fwd_borrowed_drop(_: *const ()) {}
unsafe fn fwd_owned_wake(data: *const ()) {
    // SAFETY: FORWARD_OWNED pairs with a `Box<FfiWaker>` made by `fwd_clone`, consumed here.
    let ffi = unsafe { Box::from_raw(data as *mut FfiWaker) };
    (ffi.vtable.wake)(ffi.data);
}
unsafe fn fwd_owned_drop(data: *const ()) {
    // SAFETY: as in `fwd_owned_wake`; dropping the FfiWaker runs its vtable's drop.
    drop(unsafe { Box::from_raw(data as *mut FfiWaker) });
}

/// One poll's answer across the boundary.
#[repr(C, u8)]
#[derive(StableAbi)]
pub enum FfiPoll<T> {
    /// The future completed with this value.
    Ready(T),
    /// Not yet; the lent waker (or a clone) will be woken.
    Pending,
    /// The future panicked; it must not be polled again (only dropped).
    Panicked(RPluginError),
}

/// The two functions behind an [`FfiFuture`], in the code that made it.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiFutureVTable<T> {
    poll: extern "C" fn(data: *mut (), waker: &FfiWaker) -> FfiPoll<T>,
    drop: extern "C" fn(data: *mut ()),
}

/// A boxed, `Send` future that crosses the boundary; polled and dropped by the code that
/// made it. See the [module docs](self).
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiFuture<T: 'static> {
    data: *mut (),
    vtable: &'static FfiFutureVTable<T>,
    _output: PhantomData<T>,
}

// SAFETY: `new` only accepts `Send` futures, and polling or dropping one from another thread
// is what Send allows.
unsafe impl<T: Send> Send for FfiFuture<T> {}

struct VTableOf<F>(PhantomData<F>);

impl<F: Future + Send + 'static> VTableOf<F>
where
    F::Output: 'static,
{
    const VTABLE: FfiFutureVTable<F::Output> =
        FfiFutureVTable { poll: poll_boxed::<F>, drop: drop_boxed::<F> };
}

extern "C" fn poll_boxed<F: Future>(data: *mut (), waker: &FfiWaker) -> FfiPoll<F::Output> {
    // The same guard as every interface shim: a panic becomes an error naming its site,
    // and its payload is dropped in this binary.
    let polled = crate::__private::guard(|| {
        waker.with_context(|cx| {
            // SAFETY: `data` is the `Box<F>` made by `FfiFuture::new`, never moved since
            // (the box is pinned in place until `drop_boxed`), and polled by one caller at a
            // time (`FfiFuture::poll_ffi` takes `&mut self`).
            let future = unsafe { Pin::new_unchecked(&mut *(data as *mut F)) };
            future.poll(cx)
        })
    });
    match polled {
        RResult::ROk(Poll::Ready(value)) => FfiPoll::Ready(value),
        RResult::ROk(Poll::Pending) => FfiPoll::Pending,
        RResult::RErr(error) => FfiPoll::Panicked(error),
    }
}

extern "C" fn drop_boxed<F>(data: *mut ()) {
    // SAFETY: `data` is the `Box<F>` made by `FfiFuture::new`, dropped exactly once (by
    // FfiFuture's Drop). A panicking Drop is caught by the guard: it must not unwind across
    // the boundary, and its payload is dropped in this binary.
    let dropped = crate::__private::guard(|| drop(unsafe { Box::from_raw(data as *mut F) }));
    if let RResult::RErr(error) = dropped {
        crate::log::warn!("a future's drop panicked: {}", error.message);
    }
}

impl<T: 'static> FfiFuture<T> {
    /// Boxes `future` behind this binary's poll and drop functions.
    pub fn new<F: Future<Output = T> + Send + 'static>(future: F) -> FfiFuture<T> {
        FfiFuture {
            data: Box::into_raw(Box::new(future)) as *mut (),
            vtable: &VTableOf::<F>::VTABLE,
            _output: PhantomData,
        }
    }

    /// Polls once with the lent `waker`. After `Ready` or `Panicked`, only drop it.
    pub fn poll_ffi(&mut self, waker: &FfiWaker) -> FfiPoll<T> {
        (self.vtable.poll)(self.data, waker)
    }
}

impl<T: 'static> Drop for FfiFuture<T> {
    fn drop(&mut self) {
        (self.vtable.drop)(self.data);
    }
}

impl<T: 'static> Unpin for FfiFuture<T> {}

/// Whether this binary is a plugin (its `on_load` ran). In a plugin, a host future is only
/// polled under the host's own waker.
static IN_PLUGIN: AtomicBool = AtomicBool::new(false);

/// The host's services, for the async functions below; set by `on_load`.
static HOST: OnceLock<&'static HostServices> = OnceLock::new();

/// Called from `on_load`: remembers the host's table.
pub(crate) fn install(host: &'static HostServices) {
    IN_PLUGIN.store(true, Ordering::Relaxed);
    let _ = HOST.set(host);
}

impl<T: 'static> Future for FfiFuture<T> {
    type Output = T;

    /// Polls the boundary future. A panic on the other side panics here (in a plugin, the
    /// interface shim turns it into an error).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let answer = match FfiWaker::behind(cx.waker()) {
            Some(ffi) => this.poll_ffi(ffi),
            None if IN_PLUGIN.load(Ordering::Relaxed) => panic!(
                "a host future was polled under a waker the plugin made (a combinator with its \
                 own waker?); await host futures directly"
            ),
            None => FfiWaker::lend(cx.waker(), |ffi| this.poll_ffi(ffi)),
        };
        match answer {
            FfiPoll::Ready(value) => Poll::Ready(value),
            FfiPoll::Pending => Poll::Pending,
            FfiPoll::Panicked(error) => panic!("{}", error.message),
        }
    }
}

/// Waits `duration` on the host's runtime (its timer): the plugin never touches tokio.
///
/// # Panics
/// Outside a loaded plugin (no host services), or when the host has no runtime to time it.
pub async fn sleep(duration: Duration) {
    let Some(host) = HOST.get() else {
        panic!("plugin_api::future::sleep needs the host's services (call it in a loaded plugin)")
    };
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    (host.sleep_ms)(millis).await
}
