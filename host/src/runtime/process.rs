//! Processes: gen_server callback modules run OTP style, as control blocks on the
//! runtime's workers.
//!
//! A gen_server is a control block (`Pcb`): a status word, a mailbox, and its server
//! (the state and what runs it). It has no thread: a send queues the message and, if the
//! process was idle, puts it on the run queue of the worker pool (`scheduler`); a worker
//! runs it for a bounded number of messages. Suspend and resume are flag changes. A code
//! change (mode and Extra) can be recorded in the control block without waking it, before
//! the module's load: the state migrates with it before the process's next callback; or
//! requested with a flag, and then the next worker to run the process applies it, even
//! while suspended, and reports the result to whoever waits for many. Each
//! callback (`init`, `handle_call`, `handle_cast`, `handle_info`, `terminate`,
//! `code_change`) enters the module's *current* version through the code server, the way a
//! fully qualified call does in Erlang. Between callbacks it answers system messages
//! (change_code, get_state, terminate, ...), also while suspended. A supervisor is still a
//! thread of its own with a channel for a mailbox (see `spawn_process`); both kinds are
//! reached through `Mailbox`.
//!
//! The state is the plugin's own value, kept as an opaque pointer. It belongs to the version
//! that made it, and the process *pins* that version (see the `hold` module): while the
//! state exists, the version counts as held and cannot be unloaded. When a callback finds a
//! newer current version than its state's, the state migrates through the version-independent
//! path: the old version exports it as a [`Term`], the new version's `code_change` builds its
//! own, and only then is the old state dropped, in the old version. A failed migration
//! crashes the process (its supervisor restarts it); a state is never read by a version that
//! did not make it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use plugin_api::behaviour::{GenServerTable, StatePtr};
use plugin_api::{Interface, PluginError, Term};

use crate::code::handle::Handle;
use crate::code::hold;
use crate::runtime::node::NodeInner;
use crate::runtime::scheduler;

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
    /// migration), or with the change recorded for the version now current if there is
    /// one; a record for another version is dropped. Answers whether it migrated. A failure
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
    /// Wakes a supervisor thread whose kill flag was set, ahead of anything queued.
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
    pub(crate) mailbox: Mailbox,
    pub(crate) module: String,
    pub(crate) kind: ProcessKind,
    pub(crate) name: Option<String>,
    pub(crate) exit: Arc<ExitSignal>,
    /// For supervisors: their children, readable without messaging them (a suspended
    /// supervisor does not answer, but release handling must still walk its tree).
    pub(crate) children: Option<Arc<Mutex<Vec<crate::runtime::supervisor::ChildInfo>>>>,
}

/// Where a process's messages go: a gen_server's control block, or a supervisor thread's
/// channel.
#[derive(Clone)]
pub(crate) enum Mailbox {
    /// A process run by the workers.
    Pcb(Arc<Pcb>),
    /// A process on a thread of its own.
    Thread {
        tx: Sender<Msg>,
        /// Set to kill the process at its next message boundary, ahead of anything queued
        /// (OTP's untrappable `kill`; a thread cannot be stopped sooner).
        kill: Arc<AtomicBool>,
    },
}

impl Mailbox {
    /// Queues `msg`; false if the process has exited.
    pub(crate) fn send(&self, msg: Msg) -> bool {
        match self {
            Mailbox::Pcb(pcb) => pcb.send(msg),
            Mailbox::Thread { tx, .. } => tx.send(msg).is_ok(),
        }
    }

    /// Kills the process at its next message boundary, ahead of anything queued.
    pub(crate) fn kill(&self) {
        match self {
            Mailbox::Pcb(pcb) => pcb.kill(),
            Mailbox::Thread { tx, kill } => {
                kill.store(true, Ordering::SeqCst);
                let _ = tx.send(Msg::Sys(SysMsg::Kill));
            }
        }
    }
}

/// The status word's bits.
const SCHEDULED: u32 = 1;
const SUSPENDED: u32 = 1 << 1;
const KILL: u32 = 1 << 2;
const EXITED: u32 = 1 << 3;
/// A code change recorded in the control block's slot is to be applied now, by a worker,
/// even while the process is suspended (see [`Pcb::request_change`]).
const CHANGE: u32 = 1 << 4;
/// Inside a callback for an ordinary message: a suspend waits for it to end, as OTP's
/// `sys:suspend` returns only once the process is between callbacks.
const BUSY: u32 = 1 << 5;

/// A code change recorded for a process before its module's `load`: the mode and Extra of
/// the `code_change` its state migrates with once the module's current version is `target`
/// (the vsn that was staged when it was recorded). A migration to any other version does
/// not use it: it is dropped then, so a record left by a failed install never converts a
/// state for a later, unrelated one.
pub(crate) struct Recorded {
    mode: ChangeMode,
    extra: Term,
    /// The vsn it is for; `None` for a down change requested by hand before the older
    /// version was even staged: the next version that becomes current (the release handler
    /// always names one).
    target: Option<String>,
}

/// A code change requested through `sys:change_code` ([`Pcb::request_change`]): applied
/// by the next worker to run the process, its result reported.
pub(crate) struct Requested {
    mode: ChangeMode,
    extra: Term,
    report: ReportTo,
}

/// Where one requested code change's result goes: a slot of a [`ChangeResults`]. Dropped
/// unsent (by any path that lets go of a request without applying it), it reports the
/// change as `lost`, so whoever waits learns it at once instead of at its deadline.
pub(crate) struct ReportTo {
    results: Option<Arc<ChangeResults>>,
    slot: usize,
}

impl ReportTo {
    fn send(mut self, result: Result<(), Term>) {
        if let Some(results) = self.results.take() {
            results.report(self.slot, result);
        }
    }

    /// Lets go of it without a result, for a requester that accounts for the slot itself.
    fn forget(mut self) {
        self.results = None;
    }
}

impl Drop for ReportTo {
    fn drop(&mut self) {
        if let Some(results) = self.results.take() {
            results.report(self.slot, Err(Term::atom("lost")));
        }
    }
}

/// A process's code change slots, shared by its control block (written by the release
/// handler) and its server (read when the state migrates): a recorded change and a
/// requested one, kept apart so that applying a request never takes a record.
#[derive(Default)]
pub(crate) struct ChangeSlot(Mutex<Changes>);

#[derive(Default)]
struct Changes {
    recorded: Option<Recorded>,
    requested: Option<Requested>,
}

impl ChangeSlot {
    fn take_recorded(&self) -> Option<Recorded> {
        lock(&self.0).recorded.take()
    }

    fn record(&self, change: Recorded) {
        lock(&self.0).recorded = Some(change);
    }

    fn take_requested(&self) -> Option<Requested> {
        lock(&self.0).requested.take()
    }

    fn request(&self, change: Requested) -> Option<Requested> {
        lock(&self.0).requested.replace(change)
    }
}

/// The results of code changes applied by the workers, collected for whoever waits for
/// them ([`Node::change_code_many`](crate::runtime::node::Node::change_code_many)): one
/// wait for any number of processes, woken once, when the last result is in.
pub(crate) struct ChangeResults {
    done: Mutex<ResultsInner>,
    all_in: Condvar,
}

struct ResultsInner {
    /// One per request, in the requester's order (no look-up by pid).
    slots: Vec<Option<Result<(), Term>>>,
    filled: usize,
    /// How many results are expected (`usize::MAX` until the requests are all made).
    expected: usize,
}

impl ChangeResults {
    /// A collection with `slots` places, one per process to be asked.
    pub(crate) fn new(slots: usize) -> Arc<ChangeResults> {
        Arc::new(ChangeResults {
            done: Mutex::new(ResultsInner {
                slots: std::iter::repeat_with(|| None).take(slots).collect(),
                filled: 0,
                expected: usize::MAX,
            }),
            all_in: Condvar::new(),
        })
    }

    /// Where the result for place `slot` goes.
    pub(crate) fn slot(self: &Arc<Self>, slot: usize) -> ReportTo {
        ReportTo { results: Some(Arc::clone(self)), slot }
    }

    fn report(&self, slot: usize, result: Result<(), Term>) {
        let mut done = lock(&self.done);
        let Some(place) = done.slots.get_mut(slot) else { return };
        if place.is_some() {
            return;
        }
        *place = Some(result);
        done.filled += 1;
        if done.filled >= done.expected {
            self.all_in.notify_all();
        }
    }

    /// Waits until `expected` results are in or `deadline` passes; every place, `None`
    /// where no result came.
    pub(crate) fn wait(
        &self,
        expected: usize,
        deadline: std::time::Instant,
    ) -> Vec<Option<Result<(), Term>>> {
        let mut done = lock(&self.done);
        done.expected = expected;
        while done.filled < expected {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            done = self.all_in.wait_timeout(done, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        std::mem::take(&mut done.slots)
    }
}

/// A gen_server's control block: everything a process is, run by whichever worker takes it
/// off the run queue.
///
/// The status word says whether the process is queued or running (`SCHEDULED`: one worker at
/// most has it, so the server is never run twice at once), suspended (it then takes only
/// system messages, and ordinary ones wait in order), to be killed at its next message
/// boundary, or gone; `CHANGE` asks a worker to apply a requested code change (even while
/// suspended), and `BUSY` marks a callback of an ordinary message in progress, which a
/// suspend waits for. A sender queues its message, then schedules the process if it is
/// runnable and was not scheduled; a worker that stops running a process clears
/// `SCHEDULED` and then checks again, so no message is left unseen between the two.
pub(crate) struct Pcb {
    pid: AtomicU64,
    status: AtomicU32,
    mailbox: Mutex<Queue>,
    body: Mutex<Body>,
    /// A code change recorded for it (see [`ChangeSlot`]).
    change: Arc<ChangeSlot>,
}

#[derive(Default)]
struct Queue {
    msgs: VecDeque<Msg>,
    /// How many of `msgs` are system messages.
    sys: usize,
}

enum Body {
    /// Not started: `init` is its first run.
    Init(Box<InitJob>),
    Serving(Server),
    Gone,
}

/// What a gen_server's first run needs to start it.
struct InitJob {
    node: Arc<NodeInner>,
    handle: Handle<GenServerTable>,
    args: Term,
    parent: Parent,
    started: Sender<Result<(), Term>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section below leaves its data consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pcb {
    /// A control block not yet runnable by anyone but its spawner, which holds `SCHEDULED`.
    fn new(job: InitJob) -> Pcb {
        Pcb {
            pid: AtomicU64::new(0),
            status: AtomicU32::new(SCHEDULED),
            mailbox: Mutex::default(),
            body: Mutex::new(Body::Init(Box::new(job))),
            change: Arc::default(),
        }
    }

    fn pid(&self) -> Pid {
        Pid(self.pid_number())
    }

    /// Its pid's number (0 before it is registered).
    pub(crate) fn pid_number(&self) -> u64 {
        self.pid.load(Ordering::Relaxed)
    }

    fn send(self: &Arc<Self>, msg: Msg) -> bool {
        // Whether this message makes the process runnable, decided under the mailbox's lock
        // (the worker that gives up `SCHEDULED` looks at the mailbox again after it, under
        // the same lock, so one of the two queues the process).
        let runnable = {
            let mut q = lock(&self.mailbox);
            let status = self.status.load(Ordering::SeqCst);
            if status & EXITED != 0 {
                return false;
            }
            let sys = matches!(msg, Msg::Sys(_));
            if sys {
                q.sys += 1;
            }
            q.msgs.push_back(msg);
            sys || status & SUSPENDED == 0
        };
        if runnable && self.claim() {
            scheduler::get().push(Arc::clone(self));
        }
        true
    }

    /// `sys:suspend`: from its next message boundary it takes only system messages. Call
    /// [`wait_idle`](Self::wait_idle) for the boundary itself.
    pub(crate) fn suspend(&self) {
        self.status.fetch_or(SUSPENDED, Ordering::SeqCst);
    }

    /// Waits until no callback of an ordinary message is running (one that started before
    /// the suspend), or it exited; false if that did not happen by `deadline`. Once this
    /// returns true after [`suspend`](Self::suspend), no ordinary callback runs until the
    /// resume: [`next`](Self::next) marks `BUSY` in the same atomic step that checks
    /// `SUSPENDED`, so either the suspend sees the mark or the taker sees the suspend.
    pub(crate) fn wait_idle(&self, deadline: Instant) -> bool {
        let mut round = 0u32;
        loop {
            let status = self.status.load(Ordering::SeqCst);
            if status & BUSY == 0 || status & EXITED != 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Callbacks are usually microseconds: yield first, then sleep a little, so a
            // callback that blocks costs the waiter no core.
            if round < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
            round = round.saturating_add(1);
        }
    }

    /// `sys:resume`: it takes its waiting messages again, in order.
    pub(crate) fn resume(self: &Arc<Self>) {
        if let Some(pcb) = self.resume_claim() {
            scheduler::get().push(pcb);
        }
    }

    /// Clears `SUSPENDED`; the process to queue if this made it runnable and the caller
    /// claimed it (for a caller that queues many at once).
    pub(crate) fn resume_claim(self: &Arc<Self>) -> Option<Arc<Pcb>> {
        self.status.fetch_and(!SUSPENDED, Ordering::SeqCst);
        (self.runnable() && self.claim()).then(|| Arc::clone(self))
    }

    /// Records a code change for the process, to be applied before its next callback once
    /// its module's current version is `target` (see [`Recorded`]): a write to its control
    /// block that wakes nothing. A change recorded earlier is replaced. False if the
    /// process has exited.
    pub(crate) fn record_change(
        &self,
        mode: ChangeMode,
        extra: Term,
        target: Option<String>,
    ) -> bool {
        if self.status.load(Ordering::SeqCst) & EXITED != 0 {
            return false;
        }
        self.change.record(Recorded { mode, extra, target });
        true
    }

    /// Drops a change recorded for the process and not yet applied (the install that
    /// recorded it failed).
    pub(crate) fn forget_recorded(&self) {
        drop(self.change.take_recorded());
    }

    /// Requests the code change `sys:change_code` makes, applied by the next worker to run
    /// the process, even while it is suspended (ahead of its waiting messages), with the
    /// result reported to `report`. Returns the process to queue if the caller claimed it,
    /// or `Err(())` if the process has exited (nothing is reported then).
    pub(crate) fn request_change(
        self: &Arc<Self>,
        mode: ChangeMode,
        extra: Term,
        report: ReportTo,
    ) -> Result<Option<Arc<Pcb>>, ()> {
        if self.status.load(Ordering::SeqCst) & EXITED != 0 {
            // Nothing to report: the caller learns it from the `Err`.
            report.forget();
            return Err(());
        }
        let replaced = self.change.request(Requested { mode, extra, report });
        Self::superseded(replaced);
        let status = self.status.fetch_or(CHANGE, Ordering::SeqCst);
        if status & EXITED != 0 {
            // It exited meanwhile; its exit may have missed the request: report it here
            // unless the exit did.
            if let Some(change) = self.change.take_requested() {
                Self::report_exit(change);
            }
            return Ok(None);
        }
        Ok(self.claim().then(|| Arc::clone(self)))
    }

    fn superseded(replaced: Option<Requested>) {
        if let Some(replaced) = replaced {
            replaced.report.send(Err(Term::atom("superseded")));
        }
    }

    fn report_exit(change: Requested) {
        change.report.send(Err(Term::atom("exited")));
    }

    fn kill(self: &Arc<Self>) {
        self.status.fetch_or(KILL, Ordering::SeqCst);
        self.wake();
    }

    /// Whether a worker would find something to do.
    fn runnable(&self) -> bool {
        let status = self.status.load(Ordering::SeqCst);
        if status & EXITED != 0 {
            return false;
        }
        if status & (KILL | CHANGE) != 0 {
            return true;
        }
        let q = lock(&self.mailbox);
        q.sys > 0 || (status & SUSPENDED == 0 && !q.msgs.is_empty())
    }

    /// Takes `SCHEDULED`; true if it was free.
    fn claim(&self) -> bool {
        self.status.fetch_or(SCHEDULED, Ordering::SeqCst) & SCHEDULED == 0
    }

    fn wake(self: &Arc<Self>) {
        if self.runnable() && self.claim() {
            scheduler::get().push(Arc::clone(self));
        }
    }

    /// The next message it may take: any, or while suspended the first system message.
    fn next(&self) -> Option<Msg> {
        let mut q = lock(&self.mailbox);
        // An ordinary message is taken only with `BUSY` set by the same read-modify-write
        // that finds the process not suspended (see `wait_idle`).
        let suspended = if q.msgs.front().is_some_and(|m| !matches!(m, Msg::Sys(_))) {
            let before = self.status.fetch_or(BUSY, Ordering::SeqCst);
            if before & SUSPENDED != 0 {
                self.status.fetch_and(!BUSY, Ordering::SeqCst);
                true
            } else {
                false
            }
        } else {
            self.status.load(Ordering::SeqCst) & SUSPENDED != 0
        };
        let msg = if suspended {
            if q.sys == 0 {
                return None;
            }
            let at = q.msgs.iter().position(|m| matches!(m, Msg::Sys(_)))?;
            q.msgs.remove(at)?
        } else {
            q.msgs.pop_front()?
        };
        if matches!(msg, Msg::Sys(_)) {
            q.sys -= 1;
        }
        Some(msg)
    }

    /// Marks it gone and drops what was still queued (callers waiting for a reply see the
    /// process exit).
    fn gone(&self) {
        let left = {
            let mut q = lock(&self.mailbox);
            self.status.fetch_or(EXITED, Ordering::SeqCst);
            q.sys = 0;
            std::mem::take(&mut q.msgs)
        };
        drop(left);
        if let Some(change) = self.change.take_requested() {
            Self::report_exit(change);
        }
        self.forget_recorded();
    }

    /// After the host panicked while running it (on this worker): the process is gone. Its
    /// state may be half-changed, so no plugin code sees it again: the state is leaked and
    /// its pin kept, so its version stays loaded. Its callers, parent and links learn that
    /// it exited with `{host_panic, Module}`. `SCHEDULED` stays set: no worker takes it again.
    pub(crate) fn crashed(&self) {
        hold::set_current_process(0);
        let body = std::mem::replace(&mut *lock(&self.body), Body::Gone);
        self.gone();
        match body {
            Body::Serving(mut server) => {
                let reason = Term::tuple([Term::atom("host_panic"), Term::atom(server.module())]);
                log::error!(
                    "{} ({}): the host panicked while running it; it exits with {reason}, its \
                     state is leaked and its version stays loaded",
                    server.pid,
                    server.module()
                );
                let (node, pid, parent) =
                    (Arc::clone(&server.node), server.pid, server.parent.clone());
                let report = server.failed_report.take();
                std::mem::forget(server);
                node.exited(pid, &parent, reason.clone());
                // A code change it was applying: reported once it is gone, as a failure.
                if let Some(report) = report {
                    report.send(Err(reason));
                }
            }
            // A panic in `init` dropped the spawner's channel: the start fails there.
            Body::Init(_) | Body::Gone => {}
        }
    }

    /// Runs the process on the calling worker: `init` if it has not started, then up to
    /// `budget` messages. Returns true if it must be queued again (more is waiting); the
    /// caller holds `SCHEDULED` until then.
    pub(crate) fn run(self: &Arc<Self>, budget: usize) -> bool {
        let pid = self.pid();
        hold::set_current_process(pid.0);
        let again = self.run_messages(pid, budget);
        hold::set_current_process(0);
        again
    }

    fn run_messages(self: &Arc<Self>, pid: Pid, budget: usize) -> bool {
        let mut body = lock(&self.body);
        if let Body::Init(_) = &*body {
            let Body::Init(job) = std::mem::replace(&mut *body, Body::Gone) else {
                return false;
            };
            match (*job).start(pid, Arc::clone(&self.change)) {
                Some(server) => *body = Body::Serving(server),
                None => {
                    drop(body);
                    self.gone();
                    return false;
                }
            }
        }
        for _ in 0..budget {
            let Body::Serving(server) = &mut *body else { return false };
            let status = self.status.load(Ordering::SeqCst);
            let exit = if status & KILL != 0 {
                Some(Exit::Abrupt(Term::atom("killed")))
            } else if status & CHANGE != 0 {
                self.status.fetch_and(!CHANGE, Ordering::SeqCst);
                server.apply_requested()
            } else {
                match self.next() {
                    Some(msg) => {
                        let exit = server.handle(msg);
                        self.status.fetch_and(!BUSY, Ordering::SeqCst);
                        exit
                    }
                    None => break,
                }
            };
            if let Some(how) = exit {
                if let Body::Serving(server) = std::mem::replace(&mut *body, Body::Gone) {
                    server.exit(how);
                }
                drop(body);
                self.gone();
                return false;
            }
        }
        drop(body);
        self.status.fetch_and(!SCHEDULED, Ordering::SeqCst);
        self.runnable() && self.claim()
    }
}

impl InitJob {
    /// Runs `init` (OTP's `init/1`) and tells the spawner how it went; the server on success.
    fn start(self, pid: Pid, change: Arc<ChangeSlot>) -> Option<Server> {
        let InitJob { node, handle, args, parent, started } = self;
        let pin_key = hold::pin_key();
        match init(&handle, &args, pin_key, pid) {
            Ok((state, pin)) => {
                let _ = started.send(Ok(()));
                Some(Server {
                    node,
                    pid,
                    handle,
                    state,
                    parent,
                    change,
                    failed_report: None,
                    pin: Some(pin),
                    pin_key,
                })
            }
            Err(reason) => {
                // Nothing to clean up in the plugin: a failed init leaves no state.
                node.unregister(pid, reason.clone());
                let _ = started.send(Err(reason));
                None
            }
        }
    }
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

/// Everything a running gen_server has, besides its mailbox.
struct Server {
    node: Arc<NodeInner>,
    pid: Pid,
    handle: Handle<GenServerTable>,
    state: StatePtr,
    parent: Parent,
    /// Its code changes: one recorded for a version (applied when that version becomes
    /// current: a change recorded before its `load`, or a down-mode change that arrived
    /// before the older version was loaded, as systools puts a downgrade's code_change
    /// before its load), and one requested through `sys:change_code`.
    change: Arc<ChangeSlot>,
    /// Where the result of the requested code change being applied goes if it fails, once
    /// the process has exited on it.
    failed_report: Option<ReportTo>,
    /// The version that made the state, pinned under `pin_key` (see the `hold` module).
    pin: Option<&'static hold::VersionCell>,
    pin_key: u64,
}

/// How a process ends.
enum Exit {
    /// Run `terminate(Reason, State)` in the state's version.
    Graceful(Term),
    /// Drop the state without `terminate` (a crash, or a kill).
    Abrupt(Term),
}

/// What a new supervisor thread gets from [`spawn_process`].
pub(crate) struct Birth {
    pub(crate) node: Arc<NodeInner>,
    pub(crate) pid: Pid,
    pub(crate) rx: Receiver<Msg>,
    pub(crate) kill: Arc<AtomicBool>,
}

/// The body of a process after a successful `init`: its loop until it exits.
pub(crate) type Serve = Box<dyn FnOnce() + Send>;

/// Registers a process on a thread of its own (a supervisor) and starts it: `init` runs there (OTP's `init/1`), and this
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
            mailbox: Mailbox::Thread { tx, kill: Arc::clone(&kill) },
            module: module.to_owned(),
            kind,
            name,
            exit: Arc::default(),
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

/// Spawns a gen_server running `module` with `init(args)`, and waits for `init` to finish
/// (like `gen_server:start_link`): a control block is registered and queued, and its first
/// run on a worker is `init`. No thread is made.
///
/// An `init` that has not returned within the node's init timeout fails the start with
/// `{timeout, init}` (OTP's `{error, timeout}`): the process is listed as abandoned and
/// marked to die, which it does as soon as its `init` returns.
pub(crate) fn spawn_gen_server(
    node: &Arc<NodeInner>,
    module: &str,
    args: Term,
    naming: Naming,
    parent: Parent,
) -> Result<Pid, ProcessError> {
    let handle = node.code.handle::<GenServerTable>(module).map_err(|e| bad_module(module, e))?;
    let name = registered_name(&handle, naming, &args, GenServerTable::local_name)?;
    let start_err = |reason: Term| ProcessError::Start { module: module.to_owned(), reason };
    let init_timeout = node.timeouts().init;
    let (started, started_rx) = channel::bounded::<Result<(), Term>>(1);
    let job = InitJob { node: Arc::clone(node), handle, args, parent, started };
    let pcb = Arc::new(Pcb::new(job));
    let pid = node
        .register(ProcEntry {
            mailbox: Mailbox::Pcb(Arc::clone(&pcb)),
            module: module.to_owned(),
            kind: ProcessKind::GenServer,
            name,
            exit: Arc::default(),
            children: None,
        })
        .map_err(start_err)?;
    pcb.pid.store(pid.0, Ordering::Relaxed);
    // The spawner holds SCHEDULED from `Pcb::new`: this is the process's first queueing.
    scheduler::get().push(Arc::clone(&pcb));
    match started_rx.recv_timeout(init_timeout) {
        Ok(Ok(())) => {
            log::debug!("started {module} as {pid}");
            Ok(pid)
        }
        Ok(Err(reason)) => Err(start_err(reason)),
        Err(channel::RecvTimeoutError::Timeout) => {
            pcb.kill();
            node.abandon(pid, module);
            log::error!(
                "{pid} ({module}): init did not return within {init_timeout:?}; the start \
                 fails and the process is abandoned (it exits when init returns)"
            );
            Err(start_err(Term::tuple([Term::atom("timeout"), Term::atom("init")])))
        }
        Err(channel::RecvTimeoutError::Disconnected) => Err(start_err(Term::atom("init_crashed"))),
    }
}

pub(crate) fn thread_name(module: &str, pid: Pid) -> String {
    format!("{module}{pid}")
}

/// Runs `init` in the current version and pins that version (under `pin_key`) as the one
/// the state belongs to; returns the state and the pinned version.
fn init(
    handle: &Handle<GenServerTable>,
    args: &Term,
    pin_key: u64,
    pid: Pid,
) -> Result<(StatePtr, &'static hold::VersionCell), Term> {
    let held = handle.hold().map_err(|e| undef(handle.module(), &e.to_string()))?;
    // SAFETY: the handle was made for GenServerTable, so every version of the module was
    // checked to export that table at load time; `held` keeps the version loaded.
    let table = unsafe { held.table::<GenServerTable>() };
    let state = table.init(args).map_err(|e| e.exit_reason())?;
    hold::pin_process(pin_key, pid.0, &held);
    Ok((state, held.cell()))
}

fn undef(module: &str, why: &str) -> Term {
    Term::tuple([Term::atom("undef"), Term::atom(module), Term::Str(why.to_owned())])
}

impl Server {
    /// Handles one message; how the process ends, if this message ends it.
    fn handle(&mut self, msg: Msg) -> Option<Exit> {
        let outcome = match msg {
            Msg::Call { request, reply } => self.call(request, reply),
            // SAFETY: `with_current` hands over the state only after migrating it into
            // the version whose table it passes.
            Msg::Cast(m) => self.with_current(|t, state| unsafe { t.handle_cast(state, &m) }),
            // SAFETY: as above.
            Msg::Info(m) => self.with_current(|t, state| unsafe { t.handle_info(state, &m) }),
            // Suspension is the control block's flag; these are never sent to a gen_server,
            // and answered all the same.
            Msg::Sys(SysMsg::Suspend(ack)) => {
                let _ = ack.send(());
                Ok(None)
            }
            Msg::Sys(SysMsg::Resume) => Ok(None),
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
            Msg::Sys(SysMsg::Terminate(reason)) => return Some(Exit::Graceful(reason)),
            Msg::Sys(SysMsg::Kill) => return Some(Exit::Abrupt(Term::atom("killed"))),
            Msg::ChildExit { .. } | Msg::Sup(_) => Ok(None),
        };
        match outcome {
            Ok(None) => None,
            Ok(Some(stop)) => Some(Exit::Graceful(stop)),
            Err(crash) => Some(Exit::Abrupt(crash)),
        }
    }

    fn module(&self) -> &str {
        self.handle.module()
    }

    /// Whether the state's version is the one `held` holds.
    fn pinned_to(&self, held: &hold::Hold) -> bool {
        self.pin.is_some_and(|c| std::ptr::eq(c, held.cell()))
    }

    /// Enters the version that made the state (which need not be current).
    fn enter_pinned(&self) -> Option<hold::Hold> {
        // SAFETY: `self.pin` is this process's entry in the pin table, present while its
        // state exists (removed only by `exit`, which consumes the server), so the version
        // stays loaded.
        self.pin.and_then(|cell| unsafe { hold::enter_cell(cell) })
    }

    /// Moves the state's pin to the version `held` holds (the caller made the state there).
    fn pin_to(&mut self, held: &hold::Hold) {
        hold::pin_process(self.pin_key, self.pid.0, held);
        self.pin = Some(held.cell());
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
        let held = self.handle.hold().map_err(|e| undef(self.module(), &e.to_string()))?;
        if !self.pinned_to(&held) {
            // Without a change recorded for this version the module moved on without an
            // explicit code_change: Extra = [].
            self.migrate_due(&held, None, &Term::List(vec![]))?;
        }
        // SAFETY: the handle is for GenServerTable (checked for every version at load).
        let table = unsafe { held.table::<GenServerTable>() };
        f(table, self.state).map_err(|e| e.exit_reason())
    }

    /// Migrates the state into the version `held` holds with the change recorded for that
    /// version, if there is one (made before the load), else with `mode` and `extra`.
    fn migrate_due(
        &mut self,
        held: &hold::Hold,
        mode: Option<ChangeMode>,
        extra: &Term,
    ) -> Result<(), Term> {
        match self.recorded_for(held) {
            Some(recorded) => self.migrate(held, Some(recorded.mode), &recorded.extra),
            None => self.migrate(held, mode, extra),
        }
    }

    /// The change recorded for a migration into the version `held` holds, taken. One
    /// recorded for another version is dropped (see [`Recorded`]), unless that version is
    /// still staged (about to be loaded): it is kept for its load.
    fn recorded_for(&self, held: &hold::Hold) -> Option<Recorded> {
        let change = self.change.take_recorded()?;
        let Some(target) = &change.target else { return Some(change) };
        if self.node.code.vsn_of(held.cell()).as_ref() == Some(target) {
            return Some(change);
        }
        if self.node.code.staged_vsn(self.module()).as_ref() == Some(target) {
            self.change.record(change);
        } else {
            log::debug!(
                "{} ({}): a code change recorded for vsn {target} dropped: the module moved \
                 to another version",
                self.pid,
                self.module()
            );
        }
        None
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
        let Some(old) = self.enter_pinned() else {
            return Err(Term::atom("no_state_version"));
        };
        let old_vsn = self.node.code.vsn_of(old.cell()).unwrap_or_else(|| "undefined".to_owned());
        let to = Term::Str(self.node.code.vsn_of(new.cell()).unwrap_or_default());
        let down_extra = (mode == Some(ChangeMode::Down)).then_some(extra);
        let (from, exported) = self.export_from(&old, &old_vsn, &to, down_extra)?;
        // SAFETY: the pinned version made the state, and only GenServerTable versions of
        // this module are ever pinned for this process.
        let old_table = unsafe { old.table::<GenServerTable>() };
        // SAFETY: `new` holds a version of this module, which exports GenServerTable.
        let new_table = unsafe { new.table::<GenServerTable>() };
        let state = new_table.code_change(&from, &exported, extra).map_err(|e| {
            log::warn!("{}: code_change from vsn {old_vsn} failed: {e}", self.pid);
            e.exit_reason()
        })?;
        // The new state exists: move the pin, then drop the old state in its own version
        // (still held through `old`), and let go of the old version.
        self.pin_to(new);
        // SAFETY: the old state was made by the version `old` holds; it is not used again.
        unsafe { old_table.drop_state(self.state) };
        self.state = state;
        log::info!(
            "{} ({}): state migrated from vsn {old_vsn} to {}",
            self.pid,
            self.module(),
            to.as_str().filter(|v| !v.is_empty()).unwrap_or("undefined")
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
        // this module are ever pinned for this process.
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
        let Some(old) = self.enter_pinned() else {
            return Err(Term::atom("no_state_version"));
        };
        let old_vsn = self.node.code.vsn_of(old.cell()).unwrap_or_else(|| "undefined".to_owned());
        self.export_from(&old, &old_vsn, to, down_extra)
    }

    /// [`SysMsg::Settle`]: the migration the script makes, made now if it is still due
    /// (with the change recorded for this version, if any, else with `mode` and `extra`).
    /// When nothing is due, a change still recorded was for a version that never came: it
    /// is dropped.
    fn settle(&mut self, mode: Option<ChangeMode>, extra: &Term) -> Result<bool, Term> {
        let held = self.handle.hold().map_err(|e| undef(self.module(), &e.to_string()))?;
        if self.pinned_to(&held) {
            drop(self.change.take_recorded());
            return Ok(false);
        }
        self.migrate_due(&held, mode, extra)?;
        Ok(true)
    }

    fn change_code(&mut self, mode: Option<ChangeMode>, extra: &Term) -> Result<(), Term> {
        // An explicit change replaces whatever was recorded before it.
        drop(self.change.take_recorded());
        let held = self.handle.hold().map_err(|e| undef(self.module(), &e.to_string()))?;
        let same = self.pinned_to(&held);
        if same && mode == Some(ChangeMode::Down) {
            // The older version is not loaded yet: convert when it becomes current (the
            // staged one; by hand, before anything is staged, the next one loaded).
            self.change.record(Recorded {
                mode: ChangeMode::Down,
                extra: extra.clone(),
                target: self.node.code.staged_vsn(self.module()),
            });
            return Ok(());
        }
        self.migrate(&held, mode, extra)
    }

    /// The code change requested through [`Pcb::request_change`], applied now as
    /// `sys:change_code` applies it (a downgrade whose older version is not loaded yet
    /// stays recorded for its load); how the process ends if it failed. Its result is
    /// reported at once on success; on a failure once the process has exited on it (see
    /// [`exit`](Self::exit)), so that whoever learns of the failure finds the process
    /// gone, as the failure says. The report waits in `failed_report` while the change
    /// runs, so that a host panic in it is reported by [`Pcb::crashed`] too.
    fn apply_requested(&mut self) -> Option<Exit> {
        let Requested { mode, extra, report } = self.change.take_requested()?;
        self.failed_report = Some(report);
        let result = self.change_code(Some(mode), &extra);
        if result.is_ok()
            && let Some(report) = self.failed_report.take()
        {
            report.send(Ok(()));
        }
        result.err().map(Exit::Abrupt)
    }

    /// [`SysMsg::Adopt`]: a state made elsewhere, taken through the current version's
    /// `code_change`; the state this process had is dropped by the version that made it.
    fn adopt(&mut self, from: &Term, state: &Term) -> Result<(), Term> {
        let held = self.handle.hold().map_err(|e| undef(self.module(), &e.to_string()))?;
        let Some(old) = self.enter_pinned() else {
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
        self.pin_to(&held);
        // SAFETY: the pinned version made the old state, and only GenServerTable versions
        // of this module are ever pinned for this process; it is not used again.
        let old_table = unsafe { old.table::<GenServerTable>() };
        // SAFETY: as above.
        unsafe { old_table.drop_state(self.state) };
        self.state = adopted;
        drop(old);
        Ok(())
    }

    fn export_state(&self) -> Result<Term, Term> {
        let Some(held) = self.enter_pinned() else {
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
        match self.enter_pinned() {
            Some(held) => {
                // SAFETY: the pinned version made the state, and the state is not used
                // after this (the server is consumed here).
                let table = unsafe { held.table::<GenServerTable>() };
                match how {
                    Exit::Graceful(r) => {
                        // SAFETY: as above; terminate consumes the state.
                        if let Err(e) = unsafe { table.terminate(self.state, &r) } {
                            log::warn!("{} ({}): terminate failed: {e}", self.pid, self.module());
                        }
                    }
                    // SAFETY: as above; drop_state consumes the state.
                    Exit::Abrupt(_) => unsafe { table.drop_state(self.state) },
                }
                hold::unpin_process(self.pin_key);
                drop(held);
            }
            None => log::error!("{}: no pinned version for its state; leaking it", self.pid),
        }
        if !is_normal_exit(&reason) {
            log::warn!("{} ({}) exited: {reason}", self.pid, self.module());
        } else {
            log::debug!("{} ({}) exited: {reason}", self.pid, self.module());
        }
        self.node.exited(self.pid, &self.parent, reason.clone());
        if let Some(report) = self.failed_report {
            report.send(Err(reason));
        }
    }
}

/// `normal`, `shutdown` and `{shutdown, _}`: the exits a transient child is not restarted for.
pub(crate) fn is_normal_exit(reason: &Term) -> bool {
    reason.is_atom("normal")
        || reason.is_atom("shutdown")
        || matches!(reason.as_tuple(), Some([tag, _]) if tag.is_atom("shutdown"))
}
