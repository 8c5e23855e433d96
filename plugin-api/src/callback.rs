//! Calling back into the host from inside a plugin call.
//!
//! A [`Callback`] is a borrowed host closure that a plugin may invoke while it runs. The
//! closure runs on the same thread, inside the plugin's frame, so the thread still holds the
//! plugin's version throughout: this is how a host-side function "parks" a thread in a
//! plugin, and how nested calls (host → plugin → host → plugin) arise.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};

use abi_stable::StableAbi;
use abi_stable::std_types::ROption;

/// A host closure `Fn() -> u64`, lent to a plugin for the duration of one call.
///
/// The lifetime ties it to the closure it borrows, so a plugin cannot keep it.
#[repr(C)]
#[derive(StableAbi)]
pub struct Callback<'a> {
    ctx: *const c_void,
    call: extern "C" fn(*const c_void) -> ROption<u64>,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> Callback<'a> {
    /// Lends `f` to a plugin. A panic in `f` is caught on the host side of the trampoline
    /// and the plugin sees `None` from [`invoke`](Self::invoke).
    pub fn new<F: Fn() -> u64 + Sync>(f: &'a F) -> Self {
        Callback {
            ctx: f as *const F as *const c_void,
            call: trampoline::<F>,
            _borrow: PhantomData,
        }
    }

    /// Runs the host closure; `None` if it panicked.
    pub fn invoke(&self) -> Option<u64> {
        (self.call)(self.ctx).into_option()
    }
}

extern "C" fn trampoline<F: Fn() -> u64 + Sync>(ctx: *const c_void) -> ROption<u64> {
    // SAFETY: `ctx` was made from a `&'a F` in `Callback::new`, with this very `F`, and the
    // `Callback<'a>` that carries both cannot outlive `'a`, so the closure is still alive.
    let f = unsafe { &*(ctx as *const F) };
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => ROption::RSome(value),
        Err(_) => ROption::RNone,
    }
}
