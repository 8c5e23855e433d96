//! Versioned handles: the call path.
//!
//! [`Handle::call`] enters the module's *current* version at call time (OTP's fully
//! qualified call), holds it until the closure returns, and lets nested calls hold each
//! version they enter. Holding costs a read and a write of one thread-local word, a store to
//! this thread's own slot and a re-read of `current`: no lock, no reference count, no shared
//! write (see the `hold` module). Every branch off the success path is cold and out of line.
//!
//! The closure gets `&I`, the version's function table, for as long as the call lasts.
//! It cannot keep it: the reference's lifetime ends with the call, the table's fields are
//! private, and its methods return host-owned values.

use std::marker::PhantomData;
use std::sync::Arc;

use plugin_api::{FfiFuture, Interface, IntoHost, PluginError};

use crate::code::async_call::AsyncCall;
use crate::code::code_server::ModuleEntry;
use crate::code::error::CallError;
use crate::code::hold::{self, EnterError};

/// A typed handle to a module, for calling its current version through interface `I`.
///
/// Cheap to clone and to send to other threads; every call goes to whatever version is
/// current at the moment it starts.
pub struct Handle<I: Interface> {
    module: Arc<ModuleEntry>,
    _interface: PhantomData<fn() -> I>,
}

impl<I: Interface> Clone for Handle<I> {
    fn clone(&self) -> Self {
        Handle { module: Arc::clone(&self.module), _interface: PhantomData }
    }
}

impl<I: Interface> std::fmt::Debug for Handle<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle<{}>({})", I::NAME, self.module.name)
    }
}

impl<I: Interface> Handle<I> {
    pub(crate) fn new(module: Arc<ModuleEntry>) -> Self {
        Handle { module, _interface: PhantomData }
    }

    /// The module this handle calls.
    pub fn module(&self) -> &str {
        &self.module.name
    }

    /// Calls the current version: `f` runs with the version's table and the version stays
    /// loaded until `f` returns. A plugin error or panic comes back as
    /// [`CallError::Plugin`]; a module with no current version as [`CallError::NotLoaded`].
    ///
    /// ```ignore
    /// let greeting = handle.call(|g| g.greet("joe".into()))?;
    /// ```
    #[inline]
    pub fn call<R>(&self, f: impl FnOnce(&I) -> Result<R, PluginError>) -> Result<R, CallError> {
        let held = match hold::enter(&self.module.current) {
            Ok(held) => held,
            Err(e) => return Err(self.enter_error(e)),
        };
        // SAFETY: every version of this module was checked to export `I` (name and layout)
        // before it could become current; `held` keeps the version and its static table
        // mapped until it drops after `f` returns.
        let table = unsafe { &*(held.cell().table() as *const I) };
        let result = f(table);
        drop(held);
        match result {
            Ok(value) => Ok(value),
            Err(error) => Err(self.plugin_error(error)),
        }
    }

    /// A plugin's error as a [`CallError`]: out of line, off the success path.
    #[cold]
    #[inline(never)]
    fn plugin_error(&self, error: PluginError) -> CallError {
        CallError::Plugin { module: self.module.name.clone(), error }
    }

    /// Starts an async call in the current version: `f` runs with the version's table and
    /// returns the plugin's future (an `async fn` of an async [`interface!`](macro@plugin_api::interface)).
    /// The returned [`AsyncCall`] holds that version until the future completes or is
    /// dropped, across await points and threads; a soft purge waits for it, a brutal purge
    /// drops it (the call then fails with [`CallError::Purged`]), and
    /// [`CodeServer::holders`](crate::CodeServer::holders) lists it.
    ///
    /// ```ignore
    /// let slept = handle.call_async(|n| n.nap(5)).await?;
    /// ```
    pub fn call_async<R>(
        &self,
        f: impl FnOnce(&I) -> Result<FfiFuture<R>, PluginError>,
    ) -> AsyncCall<R>
    where
        R: IntoHost + Send + 'static,
    {
        let held = match hold::enter(&self.module.current) {
            Ok(held) => held,
            Err(e) => return AsyncCall::failed(&self.module.name, self.enter_error(e)),
        };
        // SAFETY: as in `call`: the version exports `I`, and `held` keeps it mapped until
        // the future's own hold has taken over (inside `AsyncCall::start`).
        let table = unsafe { &*(held.cell().table() as *const I) };
        let call = match f(table) {
            Ok(future) => AsyncCall::start(&self.module.name, &held, future),
            Err(error) => AsyncCall::failed(&self.module.name, self.plugin_error(error)),
        };
        drop(held);
        call
    }

    /// Enters the current version and returns the hold (for the process runtime, which
    /// needs to know *which* version it entered).
    pub(crate) fn hold(&self) -> Result<hold::Hold, CallError> {
        hold::enter(&self.module.current).map_err(|e| self.enter_error(e))
    }

    #[cold]
    #[inline(never)]
    fn enter_error(&self, e: EnterError) -> CallError {
        let module = self.module.name.clone();
        match e {
            EnterError::NotLoaded => CallError::NotLoaded { module },
            EnterError::TooDeep => CallError::TooDeep { module },
            EnterError::ThreadExiting => CallError::ThreadExiting { module },
        }
    }
}
