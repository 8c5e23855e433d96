//! OTP behaviours across the boundary: gen_server, supervisor and application callbacks.
//!
//! A behaviour module is an ordinary plugin whose function table is one of the tables here
//! instead of a typed interface. The host runs the generic part (the server loop, the
//! supervisor's restart logic, the application controller); the plugin supplies the
//! callbacks as plain Rust by implementing [`GenServer`], [`Supervisor`] or [`Application`].
//!
//! A gen_server's state is the plugin's own Rust value: fast to use, and never seen by the
//! host, which keeps an opaque [`StatePtr`] tagged with the version that made it and hands it
//! back only to that version. State crosses versions only as a [`Term`]:
//! [`GenServer::export_state`] in the old version, then [`GenServer::code_change`] in the new
//! one, so no version ever reads another's memory.

use std::ffi::c_void;

use abi_stable::StableAbi;
use abi_stable::std_types::{ROption, RResult, RString};

use crate::abi::{PluginError, PluginErrorKind, RPluginError};
use crate::export::__private::guard;
use crate::interface::Interface;
use crate::term::{RTerm, RTermRef, Term};

/// What `handle_call` decided.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// Reply and go on (`{reply, Reply, NewState}`).
    Reply(Term),
    /// Reply, then stop with `reason` (`{stop, Reason, Reply, NewState}`).
    Stop {
        /// The exit reason.
        reason: Term,
        /// The reply sent before stopping.
        reply: Term,
    },
}

/// What `handle_cast` or `handle_info` decided.
#[derive(Debug, Clone, PartialEq)]
pub enum CastResult {
    /// Go on (`{noreply, NewState}`).
    Continue,
    /// Stop with this reason (`{stop, Reason, NewState}`).
    Stop(Term),
}

/// A gen_server callback module, implemented by a plugin with plain Rust.
pub trait GenServer: 'static {
    /// The server's state: plugin-owned, never seen by the host or by another version.
    type State: 'static;
    /// The name a server started with `args` registers under, as OTP's
    /// `gen_server:start_link({local, Name}, Module, Args, Opts)` in the module's own
    /// `start_link` decides it; `None` (the default) registers nothing. It applies where
    /// OTP would call the module's `start_link`: a supervisor's child `{M, start_link, A}`
    /// (and an application's top supervisor); a host that starts a process itself names it
    /// itself. The host registers the name before `init` runs; a name that is taken fails
    /// the start with `{already_started, Pid}`, and the name is free again when the process
    /// exits.
    /// It runs on the starting thread, without a deadline: it must return at once.
    fn local_name(args: &Term) -> Option<String> {
        let _ = args;
        None
    }
    /// Starts the server (`init(Args)`); `Err(Reason)` is `{stop, Reason}`.
    fn init(args: Term) -> Result<Self::State, Term>;
    /// A synchronous request.
    fn handle_call(request: Term, state: &mut Self::State) -> CallResult;
    /// An asynchronous message sent with `cast`.
    fn handle_cast(message: Term, state: &mut Self::State) -> CastResult {
        let _ = (message, state);
        CastResult::Continue
    }
    /// Any other message.
    fn handle_info(message: Term, state: &mut Self::State) -> CastResult {
        let _ = (message, state);
        CastResult::Continue
    }
    /// The server is stopping with `reason`; `state` is dropped afterwards.
    fn terminate(reason: Term, state: Self::State) {
        let _ = (reason, state);
    }
    /// The state as a version-independent term, for the next version's `code_change`.
    fn export_state(state: &Self::State) -> Term;
    /// On a downgrade to `to_vsn`, the state as a term in *that older version's* format.
    /// The newer version is the one that knows both formats (in OTP, the newer module's
    /// `code_change({down, Vsn}, ...)` converts). By default: [`export_state`](Self::export_state).
    fn downgrade_state(state: &Self::State, to_vsn: Term, extra: Term) -> Result<Term, Term> {
        let _ = (to_vsn, extra);
        Ok(Self::export_state(state))
    }
    /// Builds this version's state from another version's exported state. For an upgrade
    /// `from` is the old vsn as a string and `state` is in the old version's format; for a
    /// downgrade `from` is `{down, Vsn}` (the newer vsn) and `state` is already in this
    /// version's format (see [`downgrade_state`](Self::downgrade_state)). `extra` is the
    /// relup's `Extra` (`[]` for an implicit migration).
    ///
    /// It must be a pure function of its arguments, and so must
    /// [`export_state`](Self::export_state) and [`downgrade_state`](Self::downgrade_state):
    /// the release handler runs the three once on a copy of the state before the point of
    /// no return (its *preflight*, refusing the install if one fails) and again for the
    /// real migration.
    fn code_change(from: Term, state: Term, extra: Term) -> Result<Self::State, Term>;
}

/// A supervisor callback module.
pub trait Supervisor: 'static {
    /// The name a supervisor started with `args` registers under (OTP's
    /// `supervisor:start_link({local, Name}, Module, Args)`); see [`GenServer::local_name`].
    fn local_name(args: &Term) -> Option<String> {
        let _ = args;
        None
    }
    /// Returns `{Flags, [ChildSpec]}` (OTP's `{ok, {SupFlags, ChildSpecs}}`), or
    /// `Err(Reason)`. Flags are `{Strategy, Intensity, Period}`; a child spec is
    /// `{Id, {M, F, A}, Restart, Shutdown, Type, Modules}`.
    fn init(args: Term) -> Result<Term, Term>;
}

/// An application callback module.
pub trait Application: 'static {
    /// Starts the application: returns its top supervisor as `{Module, Args}`.
    /// `start_type` is `normal` (or `{takeover, Node}` / `{failover, Node}` in OTP).
    fn start(start_type: Term, args: Term) -> Result<Term, Term>;
    /// Called after the application's supervision tree has stopped.
    fn stop(state: Term) {
        let _ = state;
    }
}

/// An opaque pointer to a gen_server's state, made and consumed by one version only.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatePtr(*mut c_void);

// SAFETY: the host moves a state between threads only as an opaque value and hands it back
// to the version that made it on the one process thread that owns it at a time.
unsafe impl Send for StatePtr {}

/// The outcome of `handle_call` as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct RCallOutcome {
    stop: bool,
    reply: RTerm,
    reason: RTerm,
}

/// The outcome of `handle_cast`/`handle_info` as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct RCastOutcome {
    stop: bool,
    reason: RTerm,
}

type RTermResult = RResult<RTerm, RPluginError>;
type RNameResult = RResult<ROption<RString>, RPluginError>;

/// The gen_server callback table.
#[repr(C)]
#[derive(StableAbi)]
pub struct GenServerTable {
    local_name: extern "C" fn(RTermRef<'_>) -> RNameResult,
    init: extern "C" fn(RTermRef<'_>) -> RResult<StatePtr, RPluginError>,
    handle_call: extern "C" fn(StatePtr, RTermRef<'_>) -> RResult<RCallOutcome, RPluginError>,
    handle_cast: extern "C" fn(StatePtr, RTermRef<'_>) -> RResult<RCastOutcome, RPluginError>,
    handle_info: extern "C" fn(StatePtr, RTermRef<'_>) -> RResult<RCastOutcome, RPluginError>,
    terminate: extern "C" fn(StatePtr, RTermRef<'_>) -> RResult<(), RPluginError>,
    export_state: extern "C" fn(StatePtr) -> RTermResult,
    downgrade_state: extern "C" fn(StatePtr, RTermRef<'_>, RTermRef<'_>) -> RTermResult,
    code_change:
        extern "C" fn(RTermRef<'_>, RTermRef<'_>, RTermRef<'_>) -> RResult<StatePtr, RPluginError>,
    drop_state: extern "C" fn(StatePtr),
}

// SAFETY: a repr(C) table of extern "C" fns built only by `table_for`, each of which catches
// panics; LAYOUT comes from its derive.
unsafe impl Interface for GenServerTable {
    const NAME: &'static str = "GenServer";
}

/// The supervisor callback table.
#[repr(C)]
#[derive(StableAbi)]
pub struct SupervisorTable {
    local_name: extern "C" fn(RTermRef<'_>) -> RNameResult,
    init: extern "C" fn(RTermRef<'_>) -> RTermResult,
}

// SAFETY: as for GenServerTable.
unsafe impl Interface for SupervisorTable {
    const NAME: &'static str = "Supervisor";
}

/// The application callback table.
#[repr(C)]
#[derive(StableAbi)]
pub struct ApplicationTable {
    start: extern "C" fn(RTermRef<'_>, RTermRef<'_>) -> RTermResult,
    stop: extern "C" fn(RTermRef<'_>) -> RResult<(), RPluginError>,
}

// SAFETY: as for GenServerTable.
unsafe impl Interface for ApplicationTable {
    const NAME: &'static str = "Application";
}

/// Decodes a term argument on the plugin side; a bad encoding is a failure, not a panic.
fn arg(t: RTermRef<'_>) -> Result<Term, RPluginError> {
    t.decode().map_err(|e| RPluginError {
        kind: PluginErrorKind::Failed,
        message: RString::from(format!("bad term from the host: {e}")),
        reason: abi_stable::std_types::ROption::RNone,
    })
}

/// Runs `f` under the panic guard and flattens its own failures into the error channel.
fn run<T>(f: impl FnOnce() -> Result<T, RPluginError>) -> RResult<T, RPluginError> {
    match guard(f) {
        RResult::ROk(Ok(v)) => RResult::ROk(v),
        RResult::ROk(Err(e)) | RResult::RErr(e) => RResult::RErr(e),
    }
}

fn boxed<S>(state: S) -> StatePtr {
    StatePtr(Box::into_raw(Box::new(state)).cast())
}

impl GenServerTable {
    /// Builds the table for gen_server `T`.
    pub const fn table_for<T: GenServer>() -> Self {
        /// # Safety
        /// `p` must come from `boxed::<T::State>` in this same table and not be consumed.
        unsafe fn state<'a, T: GenServer>(p: StatePtr) -> &'a mut T::State {
            // SAFETY: the caller's contract: `p` is a live Box<T::State> made by `boxed`.
            unsafe { &mut *p.0.cast::<T::State>() }
        }
        /// # Safety
        /// As for `state`; afterwards `p` is consumed.
        unsafe fn take<T: GenServer>(p: StatePtr) -> T::State {
            // SAFETY: the caller's contract: `p` is a live Box<T::State> made by `boxed`.
            *unsafe { Box::from_raw(p.0.cast::<T::State>()) }
        }
        extern "C" fn local_name<T: GenServer>(args: RTermRef<'_>) -> RNameResult {
            run(|| Ok(T::local_name(&arg(args)?).map(RString::from).into()))
        }
        extern "C" fn init<T: GenServer>(args: RTermRef<'_>) -> RResult<StatePtr, RPluginError> {
            run(|| T::init(arg(args)?).map(boxed).map_err(|r| RPluginError::failed(&r)))
        }
        extern "C" fn handle_call<T: GenServer>(
            s: StatePtr,
            request: RTermRef<'_>,
        ) -> RResult<RCallOutcome, RPluginError> {
            run(|| {
                let request = arg(request)?;
                // SAFETY: the host passes only states made by this table (see StatePtr).
                let outcome = T::handle_call(request, unsafe { state::<T>(s) });
                Ok(match outcome {
                    CallResult::Reply(reply) => RCallOutcome {
                        stop: false,
                        reply: RTerm::from_term(&reply),
                        reason: RTerm::from_term(&Term::atom("normal")),
                    },
                    CallResult::Stop { reason, reply } => RCallOutcome {
                        stop: true,
                        reply: RTerm::from_term(&reply),
                        reason: RTerm::from_term(&reason),
                    },
                })
            })
        }
        fn cast_outcome(r: CastResult) -> RCastOutcome {
            match r {
                CastResult::Continue => {
                    RCastOutcome { stop: false, reason: RTerm::from_term(&Term::atom("normal")) }
                }
                CastResult::Stop(reason) => {
                    RCastOutcome { stop: true, reason: RTerm::from_term(&reason) }
                }
            }
        }
        extern "C" fn handle_cast<T: GenServer>(
            s: StatePtr,
            msg: RTermRef<'_>,
        ) -> RResult<RCastOutcome, RPluginError> {
            run(|| {
                let msg = arg(msg)?;
                // SAFETY: the host passes only states made by this table.
                Ok(cast_outcome(T::handle_cast(msg, unsafe { state::<T>(s) })))
            })
        }
        extern "C" fn handle_info<T: GenServer>(
            s: StatePtr,
            msg: RTermRef<'_>,
        ) -> RResult<RCastOutcome, RPluginError> {
            run(|| {
                let msg = arg(msg)?;
                // SAFETY: the host passes only states made by this table.
                Ok(cast_outcome(T::handle_info(msg, unsafe { state::<T>(s) })))
            })
        }
        extern "C" fn terminate<T: GenServer>(
            s: StatePtr,
            reason: RTermRef<'_>,
        ) -> RResult<(), RPluginError> {
            // SAFETY: the host passes only states made by this table, and never uses `s`
            // again after terminate, whatever it returns.
            let owned = unsafe { take::<T>(s) };
            run(|| {
                T::terminate(arg(reason)?, owned);
                Ok(())
            })
        }
        extern "C" fn export_state<T: GenServer>(s: StatePtr) -> RTermResult {
            // SAFETY: the host passes only states made by this table.
            run(|| Ok(RTerm::from_term(&T::export_state(unsafe { state::<T>(s) }))))
        }
        extern "C" fn downgrade_state<T: GenServer>(
            s: StatePtr,
            to: RTermRef<'_>,
            extra: RTermRef<'_>,
        ) -> RTermResult {
            run(|| {
                let (to, extra) = (arg(to)?, arg(extra)?);
                // SAFETY: the host passes only states made by this table.
                T::downgrade_state(unsafe { state::<T>(s) }, to, extra)
                    .map(|t| RTerm::from_term(&t))
                    .map_err(|r| RPluginError::failed(&r))
            })
        }
        extern "C" fn code_change<T: GenServer>(
            from: RTermRef<'_>,
            old: RTermRef<'_>,
            extra: RTermRef<'_>,
        ) -> RResult<StatePtr, RPluginError> {
            run(|| {
                T::code_change(arg(from)?, arg(old)?, arg(extra)?)
                    .map(boxed)
                    .map_err(|r| RPluginError::failed(&r))
            })
        }
        extern "C" fn drop_state<T: GenServer>(s: StatePtr) {
            // SAFETY: the host passes only states made by this table and never uses `s`
            // again. A panic in the state's Drop is caught and ignored: the state is gone.
            let owned = unsafe { take::<T>(s) };
            let _ = guard(move || drop(owned));
        }
        GenServerTable {
            local_name: local_name::<T>,
            init: init::<T>,
            handle_call: handle_call::<T>,
            handle_cast: handle_cast::<T>,
            handle_info: handle_info::<T>,
            terminate: terminate::<T>,
            export_state: export_state::<T>,
            downgrade_state: downgrade_state::<T>,
            code_change: code_change::<T>,
            drop_state: drop_state::<T>,
        }
    }

    /// The name a server started with `args` registers under, if any.
    pub fn local_name(&self, args: &Term) -> Result<Option<String>, PluginError> {
        let args = RTerm::from_term(args);
        into_host((self.local_name)(args.as_ref()), |n| n.into_option().map(String::from))
    }

    /// Calls `init(Args)`; the new state belongs to this table's version.
    pub fn init(&self, args: &Term) -> Result<StatePtr, PluginError> {
        let args = RTerm::from_term(args);
        into_host((self.init)(args.as_ref()), |s| s)
    }

    /// Calls `handle_call`; returns `(stop reason if stopping, reply)`.
    ///
    /// # Safety
    /// `state` must have been made by this very table (same loaded version) and not yet be
    /// consumed by `terminate` or `drop_state`.
    pub unsafe fn handle_call(
        &self,
        state: StatePtr,
        request: &Term,
    ) -> Result<(Term, Option<Term>), PluginError> {
        let request = RTerm::from_term(request);
        into_host((self.handle_call)(state, request.as_ref()), |o| {
            let reply = decoded(&o.reply);
            (reply, o.stop.then(|| decoded(&o.reason)))
        })
    }

    /// Calls `handle_cast`; returns the stop reason if the server stops.
    ///
    /// # Safety
    /// As for [`handle_call`](Self::handle_call).
    pub unsafe fn handle_cast(
        &self,
        state: StatePtr,
        msg: &Term,
    ) -> Result<Option<Term>, PluginError> {
        let msg = RTerm::from_term(msg);
        into_host((self.handle_cast)(state, msg.as_ref()), |o| o.stop.then(|| decoded(&o.reason)))
    }

    /// Calls `handle_info`; returns the stop reason if the server stops.
    ///
    /// # Safety
    /// As for [`handle_call`](Self::handle_call).
    pub unsafe fn handle_info(
        &self,
        state: StatePtr,
        msg: &Term,
    ) -> Result<Option<Term>, PluginError> {
        let msg = RTerm::from_term(msg);
        into_host((self.handle_info)(state, msg.as_ref()), |o| o.stop.then(|| decoded(&o.reason)))
    }

    /// Calls `terminate(Reason, State)`; `state` is consumed whatever happens.
    ///
    /// # Safety
    /// As for [`handle_call`](Self::handle_call); `state` must not be used afterwards.
    pub unsafe fn terminate(&self, state: StatePtr, reason: &Term) -> Result<(), PluginError> {
        let reason = RTerm::from_term(reason);
        into_host((self.terminate)(state, reason.as_ref()), |()| ())
    }

    /// Exports the state as a term for another version's `code_change`. A state that
    /// does not decode (nested too deeply, say) is an error, never a term handed on to
    /// another version's `code_change`.
    ///
    /// # Safety
    /// As for [`handle_call`](Self::handle_call).
    pub unsafe fn export_state(&self, state: StatePtr) -> Result<Term, PluginError> {
        into_host((self.export_state)(state), |t| state_term(&t))?
    }

    /// Exports the state in the format of older version `to_vsn`, for a downgrade. As for
    /// [`export_state`](Self::export_state), a state that does not decode is an error.
    ///
    /// # Safety
    /// As for [`handle_call`](Self::handle_call).
    pub unsafe fn downgrade_state(
        &self,
        state: StatePtr,
        to_vsn: &Term,
        extra: &Term,
    ) -> Result<Term, PluginError> {
        let (to, extra) = (RTerm::from_term(to_vsn), RTerm::from_term(extra));
        into_host((self.downgrade_state)(state, to.as_ref(), extra.as_ref()), |t| state_term(&t))?
    }

    /// Calls `code_change(From, State, Extra)`; the new state belongs to this version.
    pub fn code_change(
        &self,
        from: &Term,
        state: &Term,
        extra: &Term,
    ) -> Result<StatePtr, PluginError> {
        let (from, state, extra) =
            (RTerm::from_term(from), RTerm::from_term(state), RTerm::from_term(extra));
        into_host((self.code_change)(from.as_ref(), state.as_ref(), extra.as_ref()), |s| s)
    }

    /// Drops a state without calling `terminate` (after a crash).
    ///
    /// # Safety
    /// As for [`terminate`](Self::terminate).
    pub unsafe fn drop_state(&self, state: StatePtr) {
        (self.drop_state)(state)
    }
}

impl SupervisorTable {
    /// Builds the table for supervisor `T`.
    pub const fn table_for<T: Supervisor>() -> Self {
        extern "C" fn init<T: Supervisor>(args: RTermRef<'_>) -> RTermResult {
            run(|| {
                T::init(arg(args)?)
                    .map(|t| RTerm::from_term(&t))
                    .map_err(|r| RPluginError::failed(&r))
            })
        }
        extern "C" fn local_name<T: Supervisor>(args: RTermRef<'_>) -> RNameResult {
            run(|| Ok(T::local_name(&arg(args)?).map(RString::from).into()))
        }
        SupervisorTable { local_name: local_name::<T>, init: init::<T> }
    }

    /// The name a supervisor started with `args` registers under, if any.
    pub fn local_name(&self, args: &Term) -> Result<Option<String>, PluginError> {
        let args = RTerm::from_term(args);
        into_host((self.local_name)(args.as_ref()), |n| n.into_option().map(String::from))
    }

    /// Calls `init(Args)`: `{Flags, [ChildSpec]}`.
    pub fn init(&self, args: &Term) -> Result<Term, PluginError> {
        let args = RTerm::from_term(args);
        into_host((self.init)(args.as_ref()), |t| decoded(&t))
    }
}

impl ApplicationTable {
    /// Builds the table for application callback module `T`.
    pub const fn table_for<T: Application>() -> Self {
        extern "C" fn start<T: Application>(ty: RTermRef<'_>, args: RTermRef<'_>) -> RTermResult {
            run(|| {
                T::start(arg(ty)?, arg(args)?)
                    .map(|t| RTerm::from_term(&t))
                    .map_err(|r| RPluginError::failed(&r))
            })
        }
        extern "C" fn stop<T: Application>(state: RTermRef<'_>) -> RResult<(), RPluginError> {
            run(|| {
                T::stop(arg(state)?);
                Ok(())
            })
        }
        ApplicationTable { start: start::<T>, stop: stop::<T> }
    }

    /// Calls `start(StartType, Args)`: the top supervisor as `{Module, Args}`.
    pub fn start(&self, start_type: &Term, args: &Term) -> Result<Term, PluginError> {
        let (ty, args) = (RTerm::from_term(start_type), RTerm::from_term(args));
        into_host((self.start)(ty.as_ref(), args.as_ref()), |t| decoded(&t))
    }

    /// Calls `stop(State)`.
    pub fn stop(&self, state: &Term) -> Result<(), PluginError> {
        let state = RTerm::from_term(state);
        into_host((self.stop)(state.as_ref()), |()| ())
    }
}

/// Copies a boundary result into host memory (dropping the plugin's allocations while the
/// version is still held, as every caller of these methods does).
fn into_host<T, U>(r: RResult<T, RPluginError>, f: impl FnOnce(T) -> U) -> Result<U, PluginError> {
    match r {
        RResult::ROk(v) => Ok(f(v)),
        RResult::RErr(e) => Err(e.into_host()),
    }
}

/// Decodes an exported state; one that does not decode is an error whose reason is
/// `{undecodable, Why}`.
fn state_term(t: &RTerm) -> Result<Term, PluginError> {
    t.decode().map_err(|e| {
        let why = e.to_string();
        PluginError {
            kind: PluginErrorKind::Failed,
            message: format!("the exported state does not decode: {why}"),
            reason: Some(Term::tuple([Term::atom("undecodable"), Term::Str(why)])),
        }
    })
}

/// Decodes a term the plugin encoded; one that does not decode becomes a descriptive term
/// rather than a panic (the encoder is the same code on both sides, so this means a bug).
fn decoded(t: &RTerm) -> Term {
    t.decode()
        .unwrap_or_else(|e| Term::tuple([Term::atom("undecodable"), Term::Str(e.to_string())]))
}

#[doc(hidden)]
/// Runs an exported function for `apply`: decodes the argument list, calls `f`, encodes.
pub fn apply_shim(args: RTermRef<'_>, f: fn(Vec<Term>) -> Result<Term, Term>) -> RTermResult {
    run(|| {
        let args = match arg(args)? {
            Term::List(items) => items,
            other => return Err(RPluginError::failed(&Term::tuple([Term::atom("badarg"), other]))),
        };
        f(args).map(|t| RTerm::from_term(&t)).map_err(|r| RPluginError::failed(&r))
    })
}
