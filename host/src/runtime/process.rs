//! Processes: host threads that run a gen_server callback module, OTP style.
//!
//! A process is a thread with a mailbox (a crossbeam channel). It runs the host's server
//! loop; each callback (`init`, `handle_call`, `handle_cast`, `handle_info`, `terminate`,
//! `code_change`) enters the module's *current* version through the code server, the way a
//! fully qualified call does in Erlang. Between callbacks it answers system messages:
//! suspend, resume, change_code, get_state, terminate.
//!
//! The state is the plugin's own value, kept as an opaque pointer. It belongs to the version
//! that made it, and the process thread *pins* that version (see the `hold` module): while the
//! state exists, the version counts as held and cannot be unloaded. When a callback finds a
//! newer current version than its state's, the state migrates through the version-independent
//! path: the old version exports it as a [`Term`], the new version's `code_change` builds its
//! own, and only then is the old state dropped, in the old version. A failed migration
//! crashes the process (its supervisor restarts it); a state is never read by a version that
//! did not make it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam::channel::{self, Receiver, Sender};
use plugin_api::behaviour::{GenServerTable, StatePtr};
use plugin_api::{Interface, PluginError, Term};

use crate::code::handle::Handle;
use crate::code::hold;
use crate::runtime::node::NodeInner;

/// A process identifier, displayed the Erlang way: `<0.N.0>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub(crate) u64);

impl Pid {
    /// The process number.
    pub fn id(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<0.{}.0>", self.0)
    }
}

/// Where to send a message: a pid or a registered name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A process id.
    Pid(Pid),
    /// A registered name.
    Name(String),
}

impl From<Pid> for Dest {
    fn from(p: Pid) -> Dest {
        Dest::Pid(p)
    }
}

impl From<&str> for Dest {
    fn from(n: &str) -> Dest {
        Dest::Name(n.to_owned())
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Pid(p) => write!(f, "{p}"),
            Dest::Name(n) => f.write_str(n),
        }
    }
}

/// A process operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// No such process (never existed, or exited).
    #[error("no process {dest}")]
    NoProc {
        /// Who was asked.
        dest: String,
    },
    /// The process did not answer in time.
    #[error("{dest} did not answer within {after:?}")]
    Timeout {
        /// Who was asked.
        dest: String,
        /// How long we waited.
        after: Duration,
    },
    /// The process exited before it answered.
    #[error("{dest} exited with reason {reason} before answering")]
    Exited {
        /// Who was asked.
        dest: String,
        /// Its exit reason.
        reason: Term,
    },
    /// A process could not be started.
    #[error("cannot start {module}: {reason}")]
    Start {
        /// The callback module.
        module: String,
        /// Why (the `init` failure, or the module's state).
        reason: Term,
    },
    /// The request is not understood by that kind of process.
    #[error("{dest} is not a {expected}")]
    WrongKind {
        /// Who was asked.
        dest: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// A supervisor refused a child operation.
    #[error("supervisor {sup}: {reason}")]
    Child {
        /// The supervisor.
        sup: String,
        /// OTP's error term: `not_found`, `running`, `restarting`, ...
        reason: Term,
    },
    /// A code change of a process failed; the process crashed (its supervisor acts).
    #[error("code change of {dest} failed: {reason}")]
    CodeChange {
        /// The process.
        dest: String,
        /// Why.
        reason: Term,
    },
}

/// Up or down, for an explicit code change (`{code_change, up | down, ...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeMode {
    /// An upgrade: `code_change(OldVsn, ...)`.
    Up,
    /// A downgrade: `code_change({down, Vsn}, ...)`.
    Down,
}

/// Where a call's reply goes: a waiting thread, or an async task (woken by the reply,
/// so a runtime worker never blocks waiting for a process).
pub(crate) enum Reply {
    /// A thread blocked in `Node::call`.
    Thread(Sender<Term>),
    /// A task awaiting `Node::call_async`.
    Task(tokio::sync::oneshot::Sender<Term>),
}

impl Reply {
    /// Sends the reply; a caller that stopped waiting (timed out) is no error.
    pub(crate) fn send(self, answer: Term) {
        match self {
            Reply::Thread(tx) => {
                let _ = tx.send(answer);
            }
            Reply::Task(tx) => {
                let _ = tx.send(answer);
            }
        }
    }
}

/// Messages between the host and a process. Everything a process does arrives here.
pub(crate) enum Msg {
    Call {
        request: Term,
        reply: Reply,
    },
    Cast(Term),
    Info(Term),
    Sys(SysMsg),
    /// To a supervisor: one of its children exited.
    ChildExit {
        pid: Pid,
        reason: Term,
    },
    /// To a supervisor: a child operation.
    Sup(crate::runtime::supervisor::SupRequest),
}

pub(crate) enum SysMsg {
    Suspend(Sender<()>),
    Resume,
    ChangeCode {
        mode: ChangeMode,
        extra: Term,
        ack: Sender<Result<(), Term>>,
    },
    GetState(Sender<Result<Term, Term>>),
    /// The state exported the way a migration into a version of vsn `to` would export it
    /// (`down_extra`: a downgrade with that Extra), with the `From` term that migration
    /// would pass; nothing changes. For the release handler's preflight.
    Export {
        to: Term,
        down_extra: Option<Term>,
        ack: Sender<Result<(Term, Term), Term>>,
    },
    /// Migrate the state now if its version is no longer the module's current one, the way
    /// the install's script migrates its module (`mode` and `extra`; `None` an implicit
    /// migration), unless a downgrade is pending; answers whether it migrated. A failure
    /// crashes the process, as a failed `ChangeCode` does.
    Settle {
        mode: Option<ChangeMode>,
        extra: Term,
        ack: Sender<Result<bool, Term>>,
    },
    /// Replace the state with one a predecessor of this process exported in another host
    /// process (a host restart's state handover): the current version's
    /// `code_change(From, State, [])` builds it. A failure leaves the state as it was and
    /// the process running.
    Adopt {
        from: Term,
        state: Term,
        ack: Sender<Result<(), Term>>,
    },
    /// Graceful stop: `terminate(Reason, State)` runs.
    Terminate(Term),
    /// Wakes a process whose kill flag was set (see [`ProcEntry::kill`]).
    Kill,
}

/// Who learns of a process's exit.
#[derive(Debug, Clone)]
pub(crate) enum Parent {
    /// Nobody (a process started by hand).
    None,
    /// A supervisor, via `ChildExit`.
    Supervisor(Pid),
    /// The application controller: this is an application's top supervisor.
    Application(String),
}

/// Set when a process has exited, with its reason; waited on by whoever stops it.
#[derive(Default)]
pub(crate) struct ExitSignal {
    reason: Mutex<Option<Term>>,
    done: Condvar,
}

impl ExitSignal {
    pub(crate) fn set(&self, reason: Term) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        *r = Some(reason);
        self.done.notify_all();
    }

    /// Waits up to `timeout` (forever if `None`) for the exit; returns the reason.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<Term> {
        let guard = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        let guard = match timeout {
            None => self.done.wait_while(guard, |r| r.is_none()).unwrap_or_else(|p| p.into_inner()),
            Some(t) => {
                self.done
                    .wait_timeout_while(guard, t, |r| r.is_none())
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
        guard.clone()
    }
}

/// What kind of process this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// A gen_server.
    GenServer,
    /// A supervisor.
    Supervisor,
}

/// The process table's entry for one live process.
pub(crate) struct ProcEntry {
    pub(crate) tx: Sender<Msg>,
    pub(crate) module: String,
    pub(crate) kind: ProcessKind,
    pub(crate) name: Option<String>,
    pub(crate) exit: Arc<ExitSignal>,
    /// Set to kill the process at its next message boundary, ahead of anything queued
    /// (OTP's untrappable `kill`; a thread cannot be stopped sooner).
    pub(crate) kill: Arc<AtomicBool>,
    /// For supervisors: their children, readable without messaging them (a suspended
    /// supervisor does not answer, but release handling must still walk its tree).
    pub(crate) children: Option<Arc<Mutex<Vec<crate::runtime::supervisor::ChildInfo>>>>,
}

/// A snapshot of one process, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: Pid,
    /// Its callback module.
    pub module: String,
    /// gen_server or supervisor.
    pub kind: ProcessKind,
    /// Its registered name.
    pub name: Option<String>,
}

/// Everything a gen_server thread needs.
struct Server {
    node: Arc<NodeInner>,
    pid: Pid,
    module: String,
    handle: Handle<GenServerTable>,
    state: StatePtr,
    rx: Receiver<Msg>,
    parent: Parent,
    kill: Arc<AtomicBool>,
    /// A down-mode code change that arrived before the older version was loaded (systools
    /// puts a downgrade's code_change before its load): applied at the version switch.
    pending_down: Option<Term>,
}

/// How a process ends.
enum Exit {
    /// Run `terminate(Reason, State)` in the state's version.
    Graceful(Term),
    /// Drop the state without `terminate` (a crash, or a kill).
    Abrupt(Term),
}

/// What a new process thread gets from [`spawn_process`].
pub(crate) struct Birth {
    pub(crate) node: Arc<NodeInner>,
    pub(crate) pid: Pid,
    pub(crate) rx: Receiver<Msg>,
    pub(crate) kill: Arc<AtomicBool>,
}

/// The body of a process after a successful `init`: its loop until it exits.
pub(crate) type Serve = Box<dyn FnOnce() + Send>;

/// Registers a process and starts its thread: `init` runs there (OTP's `init/1`), and this
/// returns once it has, with the pid or the init failure, like `gen_server:start_link`.
/// On success the thread goes on with the [`Serve`] that `init` returned.
///
/// With `init_timeout`, an `init` that has not returned by then fails the start with
/// `{timeout, init}` (OTP's `{error, timeout}`): the process is listed as abandoned and
/// told to die, which it does as soon as its `init` returns.
pub(crate) fn spawn_process(
    node: &Arc<NodeInner>,
    module: &str,
    kind: ProcessKind,
    name: Option<String>,
    children: Option<Arc<Mutex<Vec<crate::runtime::supervisor::ChildInfo>>>>,
    init_timeout: Option<Duration>,
    init: impl FnOnce(Birth) -> Result<Serve, Term> + Send + 'static,
) -> Result<Pid, ProcessError> {
    let start_err = |reason: Term| ProcessError::Start { module: module.to_owned(), reason };
    let (tx, rx) = channel::unbounded();
    let kill = Arc::new(AtomicBool::new(false));
    let pid = node
        .register(ProcEntry {
            tx,
            module: module.to_owned(),
            kind,
            name,
            exit: Arc::default(),
            kill: Arc::clone(&kill),
            children,
        })
        .map_err(start_err)?;
    let (started_tx, started_rx) = channel::bounded::<Result<(), Term>>(1);
    let thread_node = Arc::clone(node);
    let thread_kill = Arc::clone(&kill);
    let spawned = std::thread::Builder::new().name(thread_name(module, pid)).spawn(move || {
        hold::set_current_process(pid.0);
        let birth = Birth { node: Arc::clone(&thread_node), pid, rx, kill: thread_kill };
        match init(birth) {
            Ok(serve) => {
                let _ = started_tx.send(Ok(()));
                serve();
            }
            Err(reason) => {
                // Nothing to clean up in the plugin: a failed init leaves no state.
                thread_node.unregister(pid, reason.clone());
                let _ = started_tx.send(Err(reason));
            }
        }
    });
    if let Err(e) = spawned {
        node.unregister(pid, Term::atom("spawn_failed"));
        return Err(start_err(Term::tuple([Term::atom("spawn_failed"), Term::Str(e.to_string())])));
    }
    let started = match init_timeout {
        Some(timeout) => started_rx.recv_timeout(timeout),
        None => started_rx.recv().map_err(|_| channel::RecvTimeoutError::Disconnected),
    };
    match started {
        Ok(Ok(())) => {
            log::debug!("started {module} as {pid}");
            Ok(pid)
        }
        Ok(Err(reason)) => Err(start_err(reason)),
        Err(channel::RecvTimeoutError::Timeout) => {
            kill.store(true, Ordering::SeqCst);
            node.abandon(pid, module);
            let after = init_timeout.unwrap_or_default();
            log::error!(
                "{pid} ({module}): init did not return within {after:?}; the start fails and \
                 the process is abandoned (it exits when init returns)"
            );
            Err(start_err(Term::tuple([Term::atom("timeout"), Term::atom("init")])))
        }
        Err(channel::RecvTimeoutError::Disconnected) => Err(start_err(Term::atom("init_crashed"))),
    }
}

/// The start error for a module that cannot serve as the process's behaviour.
pub(crate) fn bad_module(module: &str, why: impl std::fmt::Display) -> ProcessError {
    let reason = Term::tuple([Term::atom("bad_module"), Term::Str(why.to_string())]);
    ProcessError::Start { module: module.to_owned(), reason }
}

/// Who names a new process.
#[derive(Debug, Clone)]
pub(crate) enum Naming {
    /// The module, through its `local_name(Args)`: a start through the module's own
    /// `start_link`, as a supervisor's child spec `{M, start_link, A}` or an application's
    /// top supervisor makes it (OTP's `start_link({local, Name}, ...)` in the module's code).
    ByModule,
    /// The starter: this name, or none (OTP's `gen_server:start_link/3,4` called directly).
    Given(Option<String>),
}

/// The name to register a process of `module` started with `args` under, as `naming` says.
pub(crate) fn registered_name<I: Interface>(
    handle: &Handle<I>,
    naming: Naming,
    args: &Term,
    local_name: impl FnOnce(&I, &Term) -> Result<Option<String>, PluginError>,
) -> Result<Option<String>, ProcessError> {
    let module = handle.module();
    let name = match naming {
        Naming::Given(name) => name,
        Naming::ByModule => {
            handle.call(|t| local_name(t, args)).map_err(|e| bad_module(module, e))?
        }
    };
    if let Some(n) = &name
        && (n.is_empty() || n.len() > 255 || n.chars().any(char::is_control))
    {
        let reason = Term::tuple([Term::atom("bad_name"), Term::Str(n.clone())]);
        return Err(ProcessError::Start { module: module.to_owned(), reason });
    }
    Ok(name)
}

/// Spawns a gen_server running `module` with `init(args)`, and waits for `init` to finish.
pub(crate) fn spawn_gen_server(
    node: &Arc<NodeInner>,
    module: &str,
    args: Term,
    naming: Naming,
    parent: Parent,
) -> Result<Pid, ProcessError> {
    let handle = node.code.handle::<GenServerTable>(module).map_err(|e| bad_module(module, e))?;
    let name = registered_name(&handle, naming, &args, GenServerTable::local_name)?;
    let module_name = module.to_owned();
    let init_timeout = Some(node.timeouts().init);
    spawn_process(node, module, ProcessKind::GenServer, name, None, init_timeout, move |birth| {
        let state = init(&handle, &args)?;
        let server = Server {
            node: birth.node,
            pid: birth.pid,
            module: module_name,
            handle,
            state,
            rx: birth.rx,
            parent,
            kill: birth.kill,
            pending_down: None,
        };
        Ok(Box::new(move || server.run()))
    })
}

pub(crate) fn thread_name(module: &str, pid: Pid) -> String {
    format!("{module}{pid}")
}

/// Runs `init` in the current version and pins that version to this thread.
fn init(handle: &Handle<GenServerTable>, args: &Term) -> Result<StatePtr, Term> {
    let held = handle.hold().map_err(|e| undef(handle.module(), &e.to_string()))?;
    // SAFETY: the handle was made for GenServerTable, so every version of the module was
    // checked to export that table at load time; `held` keeps the version loaded.
    let table = unsafe { held.table::<GenServerTable>() };
    let state = table.init(args).map_err(|e| e.exit_reason())?;
    hold::pin_state(&held);
    Ok(state)
}

fn undef(module: &str, why: &str) -> Term {
    Term::tuple([Term::atom("undef"), Term::atom(module), Term::Str(why.to_owned())])
}

impl Server {
    fn run(mut self) {
        let mut suspended = false;
        let mut deferred: VecDeque<Msg> = VecDeque::new();
        let exit = loop {
            if self.kill.load(Ordering::SeqCst) {
                break Exit::Abrupt(Term::atom("killed"));
            }
            let msg = match (!suspended).then(|| deferred.pop_front()).flatten() {
                Some(m) => m,
                None => match self.rx.recv() {
                    Ok(m) => m,
                    // Every sender is gone: the node is shutting down without us.
                    Err(_) => break Exit::Graceful(Term::atom("shutdown")),
                },
            };
            if suspended && !matches!(msg, Msg::Sys(_)) {
                deferred.push_back(msg);
                continue;
            }
            let outcome = match msg {
                Msg::Call { request, reply } => self.call(request, reply),
                // SAFETY: `with_current` hands over the state only after migrating it into
                // the version whose table it passes.
                Msg::Cast(m) => self.with_current(|t, state| unsafe { t.handle_cast(state, &m) }),
                // SAFETY: as above.
                Msg::Info(m) => self.with_current(|t, state| unsafe { t.handle_info(state, &m) }),
                Msg::Sys(SysMsg::Suspend(ack)) => {
                    suspended = true;
                    let _ = ack.send(());
                    Ok(None)
                }
                Msg::Sys(SysMsg::Resume) => {
                    suspended = false;
                    Ok(None)
                }
                Msg::Sys(SysMsg::ChangeCode { mode, extra, ack }) => {
                    match self.change_code(Some(mode), &extra) {
                        Ok(()) => {
                            let _ = ack.send(Ok(()));
                            Ok(None)
                        }
                        Err(reason) => {
                            let _ = ack.send(Err(reason.clone()));
                            Err(reason)
                        }
                    }
                }
                Msg::Sys(SysMsg::GetState(ack)) => {
                    let _ = ack.send(self.export_state());
                    Ok(None)
                }
                Msg::Sys(SysMsg::Export { to, down_extra, ack }) => {
                    let _ = ack.send(self.export_for(&to, down_extra.as_ref()));
                    Ok(None)
                }
                Msg::Sys(SysMsg::Settle { mode, extra, ack }) => match self.settle(mode, &extra) {
                    Ok(migrated) => {
                        let _ = ack.send(Ok(migrated));
                        Ok(None)
                    }
                    Err(reason) => {
                        let _ = ack.send(Err(reason.clone()));
                        Err(reason)
                    }
                },
                Msg::Sys(SysMsg::Adopt { from, state, ack }) => {
                    let _ = ack.send(self.adopt(&from, &state));
                    Ok(None)
                }
                Msg::Sys(SysMsg::Terminate(reason)) => break Exit::Graceful(reason),
                Msg::Sys(SysMsg::Kill) => break Exit::Abrupt(Term::atom("killed")),
                Msg::ChildExit { .. } | Msg::Sup(_) => Ok(None),
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(stop)) => break Exit::Graceful(stop),
                Err(crash) => break Exit::Abrupt(crash),
            }
        };
        self.exit(exit);
    }

    fn call(&mut self, request: Term, reply: Reply) -> Result<Option<Term>, Term> {
        // SAFETY: `with_current` hands over the state only after migrating it into the
        // version whose table it passes.
        let (answer, stop) =
            self.with_current(|t, state| unsafe { t.handle_call(state, &request) })?;
        reply.send(answer);
        Ok(stop)
    }

    /// Runs `f` in the current version with the state, migrating the state into that
    /// version first if it changed. The state is passed in (rather than read by the caller
    /// beforehand) because migration replaces it: a copy taken earlier would be the old
    /// version's state, already dropped.
    fn with_current<R>(
        &mut self,
        f: impl FnOnce(&GenServerTable, StatePtr) -> Result<R, PluginError>,
    ) -> Result<R, Term> {
        let held = self.handle.hold().map_err(|e| undef(&self.module, &e.to_string()))?;
        if hold::pinned_cell().map(|c| std::ptr::eq(c, held.cell())) != Some(true) {
            match self.pending_down.take() {
                // A downgrade announced before its load: convert the way it asked.
                Some(extra) => self.migrate(&held, Some(ChangeMode::Down), &extra)?,
                // The module moved on without an explicit code_change: Extra = [].
                None => self.migrate(&held, None, &Term::List(vec![]))?,
            }
        }
        // SAFETY: the handle is for GenServerTable (checked for every version at load).
        let table = unsafe { held.table::<GenServerTable>() };
        f(table, self.state).map_err(|e| e.exit_reason())
    }

    /// Moves the state from its pinned version into the version `new` holds. A failure is
    /// `{code_change_failed, Reason}`: never a normal exit reason, whatever the plugin
    /// answered, so that a process that crashes on it is never taken for one stopped on
    /// purpose.
    fn migrate(
        &mut self,
        new: &hold::Hold,
        mode: Option<ChangeMode>,
        extra: &Term,
    ) -> Result<(), Term> {
        self.try_migrate(new, mode, extra)
            .map_err(|reason| Term::tuple([Term::atom("code_change_failed"), reason]))
    }

    fn try_migrate(
        &mut self,
        new: &hold::Hold,
        mode: Option<ChangeMode>,
        extra: &Term,
    ) -> Result<(), Term> {
        let Some(old) = hold::enter_pinned() else {
            return Err(Term::atom("no_state_version"));
        };
        let old_vsn = self.node.code.vsn_of(old.cell()).unwrap_or_else(|| "undefined".to_owned());
        let to = Term::Str(self.node.code.vsn_of(new.cell()).unwrap_or_default());
        let down_extra = (mode == Some(ChangeMode::Down)).then_some(extra);
        let (from, exported) = self.export_from(&old, &old_vsn, &to, down_extra)?;
        // SAFETY: the pinned version made the state, and only GenServerTable versions of
        // this module are ever pinned by this thread.
        let old_table = unsafe { old.table::<GenServerTable>() };
        // SAFETY: `new` holds a version of this module, which exports GenServerTable.
        let new_table = unsafe { new.table::<GenServerTable>() };
        let state = new_table.code_change(&from, &exported, extra).map_err(|e| {
            log::warn!("{}: code_change from vsn {old_vsn} failed: {e}", self.pid);
            e.exit_reason()
        })?;
        // The new state exists: move the pin, then drop the old state in its own version
        // (still held through `old`), and let go of the old version.
        hold::pin_state(new);
        // SAFETY: the old state was made by the version `old` holds; it is not used again.
        unsafe { old_table.drop_state(self.state) };
        self.state = state;
        let new_vsn = self.node.code.vsn_of(new.cell()).unwrap_or_else(|| "undefined".to_owned());
        log::info!(
            "{} ({}): state migrated from vsn {old_vsn} to {new_vsn}",
            self.pid,
            self.module
        );
        drop(old);
        Ok(())
    }

    /// The state exported from the version `old` holds (which made it) for a version of
    /// vsn `to`, with the `From` term of that migration: `export_state` and the old vsn, or
    /// for a downgrade `downgrade_state(State, To, Extra)` and `{down, OldVsn}`.
    fn export_from(
        &self,
        old: &hold::Hold,
        old_vsn: &str,
        to: &Term,
        down_extra: Option<&Term>,
    ) -> Result<(Term, Term), Term> {
        // SAFETY: the pinned version made the state, and only GenServerTable versions of
        // this module are ever pinned by this thread.
        let table = unsafe { old.table::<GenServerTable>() };
        let (from, exported) = match down_extra {
            Some(extra) => (
                Term::tuple([Term::atom("down"), Term::Str(old_vsn.to_owned())]),
                // SAFETY: `self.state` was made by the version `old` holds.
                unsafe { table.downgrade_state(self.state, to, extra) },
            ),
            // SAFETY: as above.
            None => (Term::Str(old_vsn.to_owned()), unsafe { table.export_state(self.state) }),
        };
        Ok((from, exported.map_err(|e| e.exit_reason())?))
    }

    /// [`SysMsg::Export`]: the state as a migration to vsn `to` would export it.
    fn export_for(&self, to: &Term, down_extra: Option<&Term>) -> Result<(Term, Term), Term> {
        let Some(old) = hold::enter_pinned() else {
            return Err(Term::atom("no_state_version"));
        };
        let old_vsn = self.node.code.vsn_of(old.cell()).unwrap_or_else(|| "undefined".to_owned());
        self.export_from(&old, &old_vsn, to, down_extra)
    }

    /// [`SysMsg::Settle`]: the migration the script makes, made now if it is still due.
    fn settle(&mut self, mode: Option<ChangeMode>, extra: &Term) -> Result<bool, Term> {
        let held = self.handle.hold().map_err(|e| undef(&self.module, &e.to_string()))?;
        if hold::pinned_cell().is_some_and(|c| std::ptr::eq(c, held.cell())) {
            return Ok(false);
        }
        match self.pending_down.take() {
            Some(pending) => self.migrate(&held, Some(ChangeMode::Down), &pending)?,
            None => self.migrate(&held, mode, extra)?,
        }
        Ok(true)
    }

    fn change_code(&mut self, mode: Option<ChangeMode>, extra: &Term) -> Result<(), Term> {
        let held = self.handle.hold().map_err(|e| undef(&self.module, &e.to_string()))?;
        let same = hold::pinned_cell().is_some_and(|c| std::ptr::eq(c, held.cell()));
        if same && mode == Some(ChangeMode::Down) {
            // The older version is not loaded yet: convert when it becomes current.
            self.pending_down = Some(extra.clone());
            return Ok(());
        }
        self.migrate(&held, mode, extra)
    }

    /// [`SysMsg::Adopt`]: a state made elsewhere, taken through the current version's
    /// `code_change`; the state this process had is dropped by the version that made it.
    fn adopt(&mut self, from: &Term, state: &Term) -> Result<(), Term> {
        let held = self.handle.hold().map_err(|e| undef(&self.module, &e.to_string()))?;
        let Some(old) = hold::enter_pinned() else {
            return Err(Term::atom("no_state_version"));
        };
        // SAFETY: `held` holds a version of this module, which exports GenServerTable.
        let new_table = unsafe { held.table::<GenServerTable>() };
        let adopted = new_table.code_change(from, state, &Term::List(vec![])).map_err(|e| {
            log::warn!("{}: code_change of a handed-over state from {from} failed: {e}", self.pid);
            e.exit_reason()
        })?;
        // As in a migration: pin the version that made the new state, then drop the old
        // state in its own version (still held through `old`).
        hold::pin_state(&held);
        // SAFETY: the pinned version made the old state, and only GenServerTable versions
        // of this module are ever pinned by this thread; it is not used again.
        let old_table = unsafe { old.table::<GenServerTable>() };
        // SAFETY: as above.
        unsafe { old_table.drop_state(self.state) };
        self.state = adopted;
        drop(old);
        Ok(())
    }

    fn export_state(&self) -> Result<Term, Term> {
        let Some(held) = hold::enter_pinned() else {
            return Err(Term::atom("no_state_version"));
        };
        // SAFETY: the pinned version made the state.
        let table = unsafe { held.table::<GenServerTable>() };
        // SAFETY: as above.
        unsafe { table.export_state(self.state) }.map_err(|e| e.exit_reason())
    }

    fn exit(self, how: Exit) {
        let reason = match &how {
            Exit::Graceful(r) | Exit::Abrupt(r) => r.clone(),
        };
        match hold::enter_pinned() {
            Some(held) => {
                // SAFETY: the pinned version made the state, and the state is not used
                // after this (the thread ends).
                let table = unsafe { held.table::<GenServerTable>() };
                match how {
                    Exit::Graceful(r) => {
                        // SAFETY: as above; terminate consumes the state.
                        if let Err(e) = unsafe { table.terminate(self.state, &r) } {
                            log::warn!("{} ({}): terminate failed: {e}", self.pid, self.module);
                        }
                    }
                    // SAFETY: as above; drop_state consumes the state.
                    Exit::Abrupt(_) => unsafe { table.drop_state(self.state) },
                }
                hold::unpin_state();
                drop(held);
            }
            None => log::error!("{}: no pinned version for its state; leaking it", self.pid),
        }
        if !is_normal_exit(&reason) {
            log::warn!("{} ({}) exited: {reason}", self.pid, self.module);
        } else {
            log::debug!("{} ({}) exited: {reason}", self.pid, self.module);
        }
        self.node.exited(self.pid, &self.parent, reason);
    }
}

/// `normal`, `shutdown` and `{shutdown, _}`: the exits a transient child is not restarted for.
pub(crate) fn is_normal_exit(reason: &Term) -> bool {
    reason.is_atom("normal")
        || reason.is_atom("shutdown")
        || matches!(reason.as_tuple(), Some([tag, _]) if tag.is_atom("shutdown"))
}
