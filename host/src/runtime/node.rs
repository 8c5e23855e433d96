//! The node: a code server, the processes running on it, and their supervision.
//!
//! [`Node`] is what an embedder holds. It owns the [`CodeServer`], the process table
//! (pids, registered names, mailboxes) and the application controller, and offers the OTP
//! operations on them: `gen_server:call/cast`, `sys:suspend/resume/change_code/get_state`,
//! `supervisor:which_children/restart_child/terminate_child/delete_child`,
//! `application:load/unload/start/stop/which_applications`, and finding the processes that
//! run a module by walking the running applications' supervision trees.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use plugin_api::Term;

use crate::code::code_server::{CodeServer, Purged};
use crate::code::error::CodeServerError;
use crate::runtime::application::AppController;
use crate::runtime::bounded::{self, Timeouts};
use crate::runtime::process::{
    ChangeMode, ChangeResults, Dest, ExitSignal, Mailbox, Msg, Naming, Parent, Pid, ProcEntry,
    ProcessError, ProcessInfo, ProcessKind, Reply, SysMsg, spawn_gen_server,
};
use crate::runtime::scheduler;
use crate::runtime::supervisor::{ChildInfo, Shutdown, SupRequest, spawn_supervisor};

/// System requests sent and their answers still to come, per pid (or why the send failed).
type Asked<A> = Vec<(Pid, Result<Receiver<A>, ProcessError>)>;

/// Why a [`Node::preflight_code_change`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", pid.map(|p| format!("{p}: ")).unwrap_or_default())]
pub struct PreflightFailure {
    /// The process whose state failed, if the failure was one process's.
    pub pid: Option<Pid>,
    /// What failed.
    pub reason: String,
}

/// A process that would not stop: its thread (or the worker running it) is still inside
/// plugin code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// The process.
    pub pid: Pid,
    /// Its callback module.
    pub module: String,
}

#[derive(Default)]
struct Procs {
    table: crate::code::hold::SeqKeyMap<Pid, ProcEntry>,
    names: HashMap<String, Pid>,
    abandoned: Vec<Abandoned>,
}

/// Shared by the [`Node`] handle and every process.
pub(crate) struct NodeInner {
    pub(crate) code: CodeServer,
    timeouts: Mutex<Timeouts>,
    procs: Mutex<Procs>,
    next_pid: AtomicU64,
    pub(crate) apps: Mutex<AppController>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections below keep the tables consistent at every step.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeInner {
    pub(crate) fn timeouts(&self) -> Timeouts {
        *lock(&self.timeouts)
    }

    /// Lists `pid` as abandoned: it will not stop, it is inside plugin code. (Not
    /// if it has exited meanwhile: its exit removes it from both lists, under this lock.)
    pub(crate) fn abandon(&self, pid: Pid, module: &str) {
        let mut procs = lock(&self.procs);
        if procs.table.contains_key(&pid) && !procs.abandoned.iter().any(|a| a.pid == pid) {
            procs.abandoned.push(Abandoned { pid, module: module.to_owned() });
        }
    }

    pub(crate) fn register(&self, entry: ProcEntry) -> Result<Pid, Term> {
        let mut procs = lock(&self.procs);
        if let Some(name) = &entry.name
            && procs.names.contains_key(name)
        {
            // OTP's answer to a start under a taken name: `{already_started, Pid}`.
            let holder = procs.names[name];
            return Err(Term::tuple([
                Term::atom("already_started"),
                Term::Str(holder.to_string()),
            ]));
        }
        let pid = Pid(self.next_pid.fetch_add(1, Ordering::Relaxed));
        if let Some(name) = &entry.name {
            procs.names.insert(name.clone(), pid);
        }
        procs.table.insert(pid, entry);
        Ok(pid)
    }

    /// Removes `pid` from the tables and signals its exit.
    pub(crate) fn unregister(&self, pid: Pid, reason: Term) {
        let mut procs = lock(&self.procs);
        procs.abandoned.retain(|a| a.pid != pid);
        if let Some(entry) = procs.table.remove(&pid) {
            if let Some(name) = &entry.name {
                procs.names.remove(name);
            }
            drop(procs);
            entry.exit.set(reason);
        }
    }

    /// Called by a process as its very last act.
    pub(crate) fn exited(&self, pid: Pid, parent: &Parent, reason: Term) {
        self.unregister(pid, reason.clone());
        match parent {
            Parent::None => {}
            Parent::Supervisor(sup) => {
                if let Some(mailbox) = self.mailbox(*sup) {
                    mailbox.send(Msg::ChildExit { pid, reason });
                }
            }
            Parent::Application(app) => {
                lock(&self.apps).top_supervisor_exited(app, pid, &reason);
            }
        }
    }

    /// The mailboxes of `pids` (`None` for one not alive), under one lock of the table.
    fn mailboxes(&self, pids: &[Pid]) -> Vec<Option<Mailbox>> {
        let procs = lock(&self.procs);
        pids.iter().map(|p| procs.table.get(p).map(|e| e.mailbox.clone())).collect()
    }

    fn mailbox(&self, pid: Pid) -> Option<Mailbox> {
        lock(&self.procs).table.get(&pid).map(|e| e.mailbox.clone())
    }

    pub(crate) fn resolve(&self, dest: &Dest) -> Option<Pid> {
        let procs = lock(&self.procs);
        match dest {
            Dest::Pid(p) => procs.table.contains_key(p).then_some(*p),
            Dest::Name(n) => procs.names.get(n).copied(),
        }
    }

    fn entry<R>(
        &self,
        dest: &Dest,
        f: impl FnOnce(Pid, &ProcEntry) -> R,
    ) -> Result<R, ProcessError> {
        let procs = lock(&self.procs);
        let pid = match dest {
            Dest::Pid(p) => Some(*p),
            Dest::Name(n) => procs.names.get(n).copied(),
        };
        match pid.and_then(|p| procs.table.get(&p).map(|e| (p, e))) {
            Some((p, e)) => Ok(f(p, e)),
            None => Err(ProcessError::NoProc { dest: dest.to_string() }),
        }
    }

    fn send(&self, dest: &Dest, msg: Msg) -> Result<(), ProcessError> {
        let mailbox = self.entry(dest, |_, e| e.mailbox.clone())?;
        if mailbox.send(msg) {
            Ok(())
        } else {
            Err(ProcessError::NoProc { dest: dest.to_string() })
        }
    }

    /// Stops a child the way its shutdown spec says; abandons it if it will not stop.
    ///
    /// The shutdown time is honoured once: a process that has not stopped when it is up is
    /// told to die at its next message boundary and abandoned at once (OTP kills it then;
    /// a thread inside plugin code cannot be killed). An abandoned process is not waited
    /// for again.
    pub(crate) fn stop_child(&self, pid: Pid, shutdown: Shutdown) {
        let Some((mailbox, exit, module)) = ({
            let procs = lock(&self.procs);
            if procs.abandoned.iter().any(|a| a.pid == pid) {
                return;
            }
            procs.table.get(&pid).map(|e| (e.mailbox.clone(), e.exit.clone(), e.module.clone()))
        }) else {
            return;
        };
        let kill_now = || mailbox.kill();
        let grace = match shutdown {
            Shutdown::BrutalKill => {
                kill_now();
                Some(KILL_GRACE)
            }
            Shutdown::Infinity => {
                mailbox.send(Msg::Sys(SysMsg::Terminate(Term::atom("shutdown"))));
                None
            }
            Shutdown::Timeout(t) => {
                mailbox.send(Msg::Sys(SysMsg::Terminate(Term::atom("shutdown"))));
                Some(t)
            }
        };
        if exit.wait(grace).is_some() {
            return;
        }
        // It did not stop in time: it dies at its next message boundary, if it reaches one.
        kill_now();
        log::error!(
            "{pid} ({module}) did not stop within its shutdown time; abandoning it: the code \
             versions it holds stay loaded until its callback returns"
        );
        self.abandon(pid, &module);
    }

    /// Stops the gen_servers among `pids` together: each is sent `terminate(shutdown)`
    /// first, then each is waited for until `grace` after the sending; one that has not
    /// stopped by then is told to die at its next message boundary and abandoned, as
    /// [`stop_child`](Self::stop_child) does.
    fn stop_gen_servers(&self, pids: &[Pid], grace: Duration) {
        let mut sent = Vec::new();
        for &pid in pids {
            let found = {
                let procs = lock(&self.procs);
                if procs.abandoned.iter().any(|a| a.pid == pid) {
                    continue;
                }
                procs.table.get(&pid).and_then(|e| match &e.mailbox {
                    Mailbox::Pcb(_) => Some((e.mailbox.clone(), e.exit.clone(), e.module.clone())),
                    Mailbox::Thread { .. } => None,
                })
            };
            if let Some((mailbox, exit, module)) = found {
                mailbox.send(Msg::Sys(SysMsg::Terminate(Term::atom("shutdown"))));
                sent.push((pid, mailbox, exit, module));
            }
        }
        let deadline = Instant::now() + grace;
        for (pid, mailbox, exit, module) in sent {
            let left = deadline.saturating_duration_since(Instant::now());
            if exit.wait(Some(left)).is_some() {
                continue;
            }
            mailbox.kill();
            log::error!(
                "{pid} ({module}) did not stop within its shutdown time; abandoning it: the code \
                 versions it holds stay loaded until its callback returns"
            );
            self.abandon(pid, &module);
        }
    }

    pub(crate) fn call(
        &self,
        dest: Dest,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, ProcessError> {
        let (tx, rx) = channel::bounded(1);
        // One look-up of the table for everything the call needs.
        let (mailbox, exit, kind) =
            self.entry(&dest, |_, e| (e.mailbox.clone(), e.exit.clone(), e.kind))?;
        if kind != ProcessKind::GenServer {
            return Err(ProcessError::WrongKind { dest: dest.to_string(), expected: "gen_server" });
        }
        if !mailbox.send(Msg::Call { request, reply: Reply::Thread(tx) }) {
            return Err(ProcessError::NoProc { dest: dest.to_string() });
        }
        match rx.recv_timeout(timeout) {
            Ok(reply) => Ok(reply),
            Err(channel::RecvTimeoutError::Timeout) => {
                Err(ProcessError::Timeout { dest: dest.to_string(), after: timeout })
            }
            Err(channel::RecvTimeoutError::Disconnected) => Err(ProcessError::Exited {
                dest: dest.to_string(),
                reason: exit.wait(Some(Duration::from_secs(1))).unwrap_or(Term::atom("noproc")),
            }),
        }
    }

    /// [`call`](Self::call) for async code: the reply wakes the awaiting task, so no
    /// runtime worker blocks while the process works. The timeout runs on tokio's timer
    /// (the caller must be inside a tokio runtime with time enabled).
    pub(crate) async fn call_async(
        &self,
        dest: Dest,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, ProcessError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (mailbox, exit, kind) =
            self.entry(&dest, |_, e| (e.mailbox.clone(), e.exit.clone(), e.kind))?;
        if kind != ProcessKind::GenServer {
            return Err(ProcessError::WrongKind { dest: dest.to_string(), expected: "gen_server" });
        }
        if !mailbox.send(Msg::Call { request, reply: Reply::Task(tx) }) {
            return Err(ProcessError::NoProc { dest: dest.to_string() });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Err(_) => Err(ProcessError::Timeout { dest: dest.to_string(), after: timeout }),
            Ok(Err(_)) => {
                // The process dropped the reply: it is exiting. Its reason is recorded
                // as it exits; wait for it off the runtime's workers.
                let reason = tokio::task::spawn_blocking(move || {
                    exit.wait(Some(Duration::from_secs(1))).unwrap_or(Term::atom("noproc"))
                })
                .await
                .unwrap_or(Term::atom("noproc"));
                Err(ProcessError::Exited { dest: dest.to_string(), reason })
            }
        }
    }

    /// Waits up to `timeout` for `pid` to exit; `noproc` if it is not alive.
    pub(crate) fn wait_exit(&self, pid: Pid, timeout: Duration) -> Option<Term> {
        let exit = lock(&self.procs).table.get(&pid).map(|e| e.exit.clone());
        match exit {
            Some(exit) => exit.wait(Some(timeout)),
            None => Some(Term::atom("noproc")),
        }
    }

    /// Every process whose supervisor spec lists `module`, found by walking the running
    /// applications' trees; the top supervisors of applications count for their module.
    pub(crate) fn processes_running(&self, module: &str) -> Vec<Pid> {
        let tops = lock(&self.apps).top_supervisors();
        let mut found = Vec::new();
        let mut stack: Vec<Pid> = Vec::new();
        {
            let procs = lock(&self.procs);
            for top in tops {
                if procs.table.get(&top).is_some_and(|e| e.module == module) {
                    found.push(top);
                }
                stack.push(top);
            }
        }
        while let Some(sup) = stack.pop() {
            let children = lock(&self.procs)
                .table
                .get(&sup)
                .and_then(|e| e.children.clone())
                .map(|c| lock(&c).clone())
                .unwrap_or_default();
            for child in children {
                let Some(pid) = child.pid else { continue };
                if child.modules.iter().any(|m| m == module) {
                    found.push(pid);
                }
                if child.kind == crate::runtime::supervisor::ChildType::Supervisor {
                    stack.push(pid);
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

/// A monitor on a process (OTP's `erlang:monitor(process, Pid)`): learns its exit reason,
/// even if the process exits before anyone waits.
#[derive(Clone)]
pub struct Monitor {
    pid: Pid,
    exit: Arc<ExitSignal>,
}

impl Monitor {
    /// The monitored process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits up to `timeout` for the exit; its reason, or `None` if it is still running.
    pub fn wait(&self, timeout: Duration) -> Option<Term> {
        self.exit.wait(Some(timeout))
    }
}

/// A non-owning reference to a node, for threads that call its processes. See
/// [`Node::reference`].
#[derive(Clone)]
pub struct NodeRef {
    inner: Arc<NodeInner>,
}

impl NodeRef {
    /// `gen_server:call(Dest, Request, Timeout)`.
    pub fn call(
        &self,
        dest: impl Into<Dest>,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, ProcessError> {
        self.inner.call(dest.into(), request, timeout)
    }

    /// `gen_server:call(Dest, Request, Timeout)` from async code: awaits the reply without
    /// blocking a runtime worker. Must run inside a tokio runtime (its timer times out).
    pub async fn call_async(
        &self,
        dest: impl Into<Dest>,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, ProcessError> {
        self.inner.call_async(dest.into(), request, timeout).await
    }

    /// The processes that run `module`, found the way release handling finds them.
    pub fn processes_running(&self, module: &str) -> Vec<Pid> {
        self.inner.processes_running(module)
    }
}

/// How many processes a code change of many queues to the workers at a time.
const CHANGE_BATCH: usize = 64;

/// How long a killed process gets to reach its next message boundary.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A hotcode node. See the [module docs](self).
pub struct Node {
    inner: Arc<NodeInner>,
}

impl Node {
    /// A node with a fresh code server.
    pub fn new() -> Result<Node, CodeServerError> {
        Ok(Node::with_code_server(CodeServer::new()?))
    }

    /// A node around `code`.
    pub fn with_code_server(code: CodeServer) -> Node {
        Node {
            inner: Arc::new(NodeInner {
                code,
                timeouts: Mutex::new(Timeouts::default()),
                procs: Mutex::default(),
                next_pid: AtomicU64::new(100),
                apps: Mutex::new(AppController::default()),
            }),
        }
    }

    /// How long this node waits for plugin code (see [`Timeouts`]).
    pub fn timeouts(&self) -> Timeouts {
        self.inner.timeouts()
    }

    /// Sets how long this node waits for plugin code, from now on.
    pub fn set_timeouts(&self, timeouts: Timeouts) {
        *lock(&self.inner.timeouts) = timeouts;
    }

    /// `{apply, {M, F, A}}`: calls a function `module` exports for apply, waiting at most
    /// the node's apply timeout. A call that overruns is an error naming the function; its
    /// thread is abandoned inside the plugin, and the version it runs stays loaded until
    /// it returns.
    pub fn apply(&self, module: &str, function: &str, args: Vec<Term>) -> Result<Term, String> {
        let inner = Arc::clone(&self.inner);
        let (m, f) = (module.to_owned(), function.to_owned());
        let timeout = self.inner.timeouts().apply;
        bounded::run(format!("{module}:{function}"), timeout, move || {
            inner.code.apply(&m, &f, args).map_err(|e| e.to_string())
        })
        .map_err(|overrun| overrun.to_string())?
    }

    pub(crate) fn inner(&self) -> &Arc<NodeInner> {
        &self.inner
    }

    /// The node's code server.
    pub fn code(&self) -> &CodeServer {
        &self.inner.code
    }

    /// Starts a gen_server running `module` (`gen_server:start`): `init(args)` runs in the
    /// module's current version before this returns. It is registered as `name`, or not at
    /// all: this is OTP's `gen_server:start_link` called directly, not the module's own
    /// `start_link` (whose name, the module's `local_name`, applies to the children a
    /// supervisor starts and to an application's top supervisor).
    pub fn start_gen_server(
        &self,
        module: &str,
        args: Term,
        name: Option<&str>,
    ) -> Result<Pid, ProcessError> {
        spawn_gen_server(
            &self.inner,
            module,
            args,
            Naming::Given(name.map(str::to_owned)),
            Parent::None,
        )
    }

    /// Starts a supervisor running `module` (`supervisor:start_link`), with its children.
    pub fn start_supervisor(
        &self,
        module: &str,
        args: Term,
        name: Option<&str>,
    ) -> Result<Pid, ProcessError> {
        spawn_supervisor(
            &self.inner,
            module,
            args,
            Naming::Given(name.map(str::to_owned)),
            Parent::None,
        )
    }

    /// `gen_server:call(Dest, Request, Timeout)`.
    pub fn call(
        &self,
        dest: impl Into<Dest>,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, ProcessError> {
        self.inner.call(dest.into(), request, timeout)
    }

    /// `gen_server:call(Dest, Request, Timeout)` from async code: awaits the reply without
    /// blocking a runtime worker (see [`NodeRef::call_async`]).
    pub async fn call_async(
        &self,
        dest: impl Into<Dest>,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, ProcessError> {
        self.inner.call_async(dest.into(), request, timeout).await
    }

    /// A cheap, cloneable reference for threads that call processes on this node (a TCP
    /// front end's pool, say). It does not own the node: dropping it stops nothing.
    pub fn reference(&self) -> NodeRef {
        NodeRef { inner: Arc::clone(&self.inner) }
    }

    /// `gen_server:cast(Dest, Message)`: fails only if there is no such process.
    pub fn cast(&self, dest: impl Into<Dest>, message: Term) -> Result<(), ProcessError> {
        self.inner.send(&dest.into(), Msg::Cast(message))
    }

    /// `Dest ! Message`: delivered to `handle_info`.
    pub fn send(&self, dest: impl Into<Dest>, message: Term) -> Result<(), ProcessError> {
        self.inner.send(&dest.into(), Msg::Info(message))
    }

    /// The pid registered as `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.resolve(&Dest::Name(name.to_owned()))
    }

    /// Monitors `pid`; `None` if it is not alive.
    pub fn monitor(&self, pid: Pid) -> Option<Monitor> {
        let exit = lock(&self.inner.procs).table.get(&pid).map(|e| e.exit.clone())?;
        Some(Monitor { pid, exit })
    }

    /// Whether `pid` is alive.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.inner.resolve(&Dest::Pid(pid)).is_some()
    }

    /// Every live process.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let procs = lock(&self.inner.procs);
        let mut list: Vec<ProcessInfo> = procs
            .table
            .iter()
            .map(|(pid, e)| ProcessInfo {
                pid: *pid,
                module: e.module.clone(),
                kind: e.kind,
                name: e.name.clone(),
            })
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// Processes that would not stop and were abandoned.
    pub fn abandoned(&self) -> Vec<Abandoned> {
        lock(&self.inner.procs).abandoned.clone()
    }

    /// `sys:suspend(Dest, Timeout)`: after it, the process handles only system messages.
    ///
    /// A gen_server's suspension is a flag of its control block: from its next message
    /// boundary the process takes only system messages, and this returns once it is at
    /// one (at once, if it is between callbacks), or with `Timeout` if a callback already
    /// running has not returned within `timeout` (the flag stays set: resume it). Only
    /// callbacks of ordinary messages are waited for: a code change requested through
    /// [`change_code_many`](Self::change_code_many) may still be running when this returns
    /// (its requester waits for its result). A supervisor (a thread of its own) answers a
    /// suspend message within `timeout`.
    pub fn suspend(&self, dest: impl Into<Dest>, timeout: Duration) -> Result<(), ProcessError> {
        let dest = dest.into();
        match self.inner.entry(&dest, |_, e| e.mailbox.clone())? {
            Mailbox::Pcb(pcb) => {
                pcb.suspend();
                // Like `sys:suspend`, it returns once the process is between callbacks; one
                // stuck in a callback is reported as not answering (a caller that gives up
                // resumes it, as the release handler does).
                if pcb.wait_idle(Instant::now() + timeout) {
                    Ok(())
                } else {
                    Err(ProcessError::Timeout { dest: dest.to_string(), after: timeout })
                }
            }
            Mailbox::Thread { .. } => {
                let (tx, rx) = channel::bounded(1);
                self.inner.send(&dest, Msg::Sys(SysMsg::Suspend(tx)))?;
                rx.recv_timeout(timeout)
                    .map_err(|_| ProcessError::Timeout { dest: dest.to_string(), after: timeout })
            }
        }
    }

    /// Suspends many processes at once: gen_servers by their flag, supervisors with every
    /// request sent before any answer is awaited (and before the gen_servers' waits), so the
    /// cost is one round trip, not one per process. Returns, per pid, whether it answered
    /// within `timeout` (one deadline for all, measured from the start): a gen_server
    /// answers once no callback of an ordinary message it started before its flag was set
    /// is running. One that did not answer may still become suspended: resume it.
    pub fn suspend_many(
        &self,
        pids: &[Pid],
        timeout: Duration,
    ) -> Vec<(Pid, Result<(), ProcessError>)> {
        let deadline = Instant::now() + timeout;
        let mut results = Vec::with_capacity(pids.len());
        let mut threads = Vec::new();
        let mut flagged = Vec::new();
        let mut missing = false;
        for (&pid, mailbox) in pids.iter().zip(self.inner.mailboxes(pids)) {
            match mailbox {
                Some(Mailbox::Pcb(pcb)) => {
                    pcb.suspend();
                    flagged.push((pid, pcb));
                }
                Some(Mailbox::Thread { .. }) => threads.push(pid),
                None => {
                    missing = true;
                    results.push((pid, Err(ProcessError::NoProc { dest: pid.to_string() })));
                }
            }
        }
        // Every flag and every supervisor's request first, then the waits for callbacks
        // already running and for the supervisors' answers: they overlap.
        let asked = self.ask_send(&threads, SysMsg::Suspend);
        for (pid, pcb) in flagged {
            let answer = if pcb.wait_idle(deadline) {
                Ok(())
            } else {
                Err(ProcessError::Timeout { dest: pid.to_string(), after: timeout })
            };
            results.push((pid, answer));
        }
        if threads.is_empty() && !missing {
            // Every pid was flagged, in the caller's order: nothing to reorder.
            return results;
        }
        results.extend(Self::ask_collect(asked, deadline, timeout, |_, ()| Ok(())));
        let order: HashMap<Pid, usize> = pids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        results.sort_by_key(|(pid, _)| order.get(pid).copied().unwrap_or(usize::MAX));
        results
    }

    /// Resumes many processes at once: gen_servers by their flag, in one pass (those with
    /// messages waiting are queued to the workers together), supervisors by a message.
    /// When this returns every gen_server among them has taken its resume, as after
    /// [`resume`](Self::resume). Returns, per pid, whether it was alive.
    pub fn resume_many(&self, pids: &[Pid]) -> Vec<(Pid, Result<(), ProcessError>)> {
        let mut results = Vec::with_capacity(pids.len());
        let mut runnable = Vec::new();
        for (&pid, mailbox) in pids.iter().zip(self.inner.mailboxes(pids)) {
            let result = match mailbox {
                Some(Mailbox::Pcb(pcb)) => {
                    runnable.extend(pcb.resume_claim());
                    Ok(())
                }
                Some(thread @ Mailbox::Thread { .. }) => {
                    if thread.send(Msg::Sys(SysMsg::Resume)) {
                        Ok(())
                    } else {
                        Err(ProcessError::NoProc { dest: pid.to_string() })
                    }
                }
                None => Err(ProcessError::NoProc { dest: pid.to_string() }),
            };
            results.push((pid, result));
        }
        scheduler::get().push_many(runnable);
        results
    }

    /// Records, on each of `pids` (gen_servers), the code change its state is to migrate
    /// with (`mode` and `extra`) when its module's current version becomes `for_vsn`:
    /// applied before the process's next callback after that version's `load` (a
    /// [`change_code_many`](Self::change_code_many) of the process replaces it with its own
    /// change). A migration to any other version drops it unused, so a record left by a
    /// failed install never converts a state for a later one. A write to each control
    /// block, under one lock of the process table: no message, nothing woken. Supervisors
    /// and processes not alive are skipped. Returns how many were recorded.
    ///
    /// The release handler records its script's `code_change` this way before the `load`
    /// it follows, so that a process running a callback between the two (one left out of
    /// the suspension) migrates with the script's Extra, not an implicit `[]`; if the
    /// install fails, it forgets ([`forget_code_change`](Self::forget_code_change)) those
    /// for a version it did not load.
    pub fn record_code_change(
        &self,
        pids: &[Pid],
        mode: ChangeMode,
        extra: &Term,
        for_vsn: &str,
    ) -> usize {
        self.inner
            .mailboxes(pids)
            .into_iter()
            .filter(|m| match m {
                Some(Mailbox::Pcb(pcb)) => {
                    pcb.record_change(mode, extra.clone(), Some(for_vsn.to_owned()))
                }
                _ => false,
            })
            .count()
    }

    /// Drops the code change recorded on each of `pids` by
    /// [`record_code_change`](Self::record_code_change) and not applied yet.
    pub fn forget_code_change(&self, pids: &[Pid]) {
        for mailbox in self.inner.mailboxes(pids).into_iter().flatten() {
            if let Mailbox::Pcb(pcb) = mailbox {
                pcb.forget_recorded();
            }
        }
    }

    /// `change_code` of many (suspended) processes at once. Each gen_server gets the change
    /// requested on its control block (replacing one recorded there) and is queued to the
    /// workers, which apply it (ahead of any waiting message, suspended or not) in
    /// parallel, each result going to one collection that this waits on once, until
    /// `timeout` (measured from the start). Supervisors are sent a message each, as
    /// [`change_code`](Self::change_code) does. A gen_server's failure is a `CodeChange`
    /// error whose reason is the one it exited with (it has exited when this returns), or
    /// `superseded` (another request replaced this one before it ran), `exited` (it exited
    /// before applying it), `{host_panic, Module}` (the host panicked while applying it) or
    /// `lost` (the request was dropped unapplied).
    pub fn change_code_many(
        &self,
        pids: &[Pid],
        mode: ChangeMode,
        extra: &Term,
        timeout: Duration,
    ) -> Vec<(Pid, Result<(), ProcessError>)> {
        let deadline = Instant::now() + timeout;
        let collected = ChangeResults::new(pids.len());
        let mut early: Vec<Option<Result<(), ProcessError>>> = Vec::with_capacity(pids.len());
        let mut runnable = Vec::new();
        let mut threads = Vec::new();
        let mut requested = 0;
        for (i, (&pid, mailbox)) in pids.iter().zip(self.inner.mailboxes(pids)).enumerate() {
            let result = match mailbox {
                Some(Mailbox::Pcb(pcb)) => {
                    match pcb.request_change(mode, extra.clone(), collected.slot(i)) {
                        Ok(claimed) => {
                            requested += 1;
                            runnable.extend(claimed);
                            // Queued in batches, so the workers start while the rest are asked.
                            if runnable.len() >= CHANGE_BATCH {
                                scheduler::get().push_many(std::mem::take(&mut runnable));
                            }
                            None
                        }
                        Err(()) => Some(Err(ProcessError::NoProc { dest: pid.to_string() })),
                    }
                }
                Some(Mailbox::Thread { .. }) => {
                    threads.push(pid);
                    None
                }
                None => Some(Err(ProcessError::NoProc { dest: pid.to_string() })),
            };
            early.push(result);
        }
        scheduler::get().push_many(runnable);
        let mut answers: HashMap<Pid, Result<(), ProcessError>> = if threads.is_empty() {
            HashMap::new()
        } else {
            self.ask_many(
                &threads,
                deadline.saturating_duration_since(Instant::now()),
                |ack| SysMsg::ChangeCode { mode, extra: extra.clone(), ack },
                |dest, answer| answer.map_err(|reason| ProcessError::CodeChange { dest, reason }),
            )
            .into_iter()
            .collect()
        };
        let collected =
            if requested > 0 { collected.wait(requested, deadline) } else { Vec::new() };
        let mut collected = collected.into_iter();
        pids.iter()
            .zip(early)
            .map(|(&pid, early)| {
                let applied = collected.next().flatten();
                let result = early
                    .or_else(|| {
                        applied.map(|r| {
                            r.map_err(|reason| ProcessError::CodeChange {
                                dest: pid.to_string(),
                                reason,
                            })
                        })
                    })
                    .or_else(|| answers.remove(&pid))
                    .unwrap_or_else(|| {
                        Err(ProcessError::Timeout { dest: pid.to_string(), after: timeout })
                    });
                (pid, result)
            })
            .collect()
    }

    /// The release handler's preflight of a migration into the version staged for
    /// `module`, before anything changed: each of `pids` (gen_servers running `module`)
    /// exports its state as that migration would (`mode` and `extra` as the script will
    /// give them; `None` is an implicit migration), and the staged version's `code_change`
    /// runs on each copy and drops what it built. The processes go on untouched.
    ///
    /// Everything together is bounded by `timeout`: a process that does not answer, or a
    /// `code_change` that does not return, fails the preflight.
    ///
    /// # Errors
    /// The first failure: which process, and why (an export that failed or did not decode,
    /// a `code_change` that failed, panicked or overran).
    pub fn preflight_code_change(
        &self,
        module: &str,
        pids: &[Pid],
        mode: Option<ChangeMode>,
        extra: &Term,
        timeout: Duration,
    ) -> Result<(), PreflightFailure> {
        let start = Instant::now();
        let Some(to) = self.inner.code.staged_vsn(module) else {
            return Err(PreflightFailure { pid: None, reason: format!("no staged {module}") });
        };
        let down_extra = (mode == Some(ChangeMode::Down)).then(|| extra.clone());
        let exports = self.ask_many(
            pids,
            timeout,
            |ack| SysMsg::Export { to: Term::Str(to.clone()), down_extra: down_extra.clone(), ack },
            |dest, answer| {
                answer.map_err(|reason| ProcessError::CodeChange {
                    dest,
                    reason: Term::tuple([Term::atom("export_failed"), reason]),
                })
            },
        );
        let mut copies = Vec::with_capacity(exports.len());
        for (pid, exported) in exports {
            let (from, state) =
                exported.map_err(|e| PreflightFailure { pid: Some(pid), reason: e.to_string() })?;
            copies.push((pid, from, state));
        }
        let inner = Arc::clone(&self.inner);
        let (module_name, extra) = (module.to_owned(), extra.clone());
        let left = timeout.saturating_sub(start.elapsed());
        let what = format!("{module}:code_change of the staged vsn {to} (preflight)");
        // Set when the caller stops waiting: an abandoned preflight tries no more copies
        // (the one it is in finishes in its own time, holding its version).
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = Arc::clone(&cancel);
        let tried = bounded::run(what, left, move || {
            for (pid, from, state) in copies {
                if cancelled.load(Ordering::SeqCst) {
                    break;
                }
                if let Err(e) = inner.code.try_code_change(&module_name, &from, &state, &extra) {
                    return Err(PreflightFailure { pid: Some(pid), reason: e.to_string() });
                }
            }
            Ok(())
        });
        tried.map_err(|overrun| {
            cancel.store(true, Ordering::SeqCst);
            PreflightFailure { pid: None, reason: overrun.to_string() }
        })?
    }

    /// Has each of `pids` (gen_servers) migrate its state now if its module's current
    /// version is not the one that made it, the way `mode` and `extra` say (`None`: an
    /// implicit migration, `export_state` and `[]`), so that a failure is seen now, by the
    /// caller, rather than by the next request. Returns, per pid, whether it migrated.
    pub fn settle_many(
        &self,
        pids: &[Pid],
        mode: Option<ChangeMode>,
        extra: &Term,
        timeout: Duration,
    ) -> Vec<(Pid, Result<bool, ProcessError>)> {
        self.ask_many(
            pids,
            timeout,
            |ack| SysMsg::Settle { mode, extra: extra.clone(), ack },
            |dest, answer| answer.map_err(|reason| ProcessError::CodeChange { dest, reason }),
        )
    }

    /// Sends one system request to each of `pids`, then collects the answers against one
    /// deadline; `answer` turns a reply into the result for that pid.
    fn ask_many<A, T>(
        &self,
        pids: &[Pid],
        timeout: Duration,
        request: impl Fn(Sender<A>) -> SysMsg,
        answer: impl Fn(String, A) -> Result<T, ProcessError>,
    ) -> Vec<(Pid, Result<T, ProcessError>)> {
        let deadline = Instant::now() + timeout;
        Self::ask_collect(self.ask_send(pids, request), deadline, timeout, answer)
    }

    /// The sending half of [`ask_many`](Self::ask_many): one request to each, answers not
    /// awaited.
    fn ask_send<A>(&self, pids: &[Pid], request: impl Fn(Sender<A>) -> SysMsg) -> Asked<A> {
        pids.iter()
            .map(|&pid| {
                let (tx, rx) = channel::bounded(1);
                (pid, self.inner.send(&Dest::Pid(pid), Msg::Sys(request(tx))).map(|()| rx))
            })
            .collect()
    }

    /// The waiting half of [`ask_many`](Self::ask_many): every answer by `deadline`, a
    /// missing one reported as not given within `timeout`.
    fn ask_collect<A, T>(
        asked: Asked<A>,
        deadline: Instant,
        timeout: Duration,
        answer: impl Fn(String, A) -> Result<T, ProcessError>,
    ) -> Vec<(Pid, Result<T, ProcessError>)> {
        asked
            .into_iter()
            .map(|(pid, rx)| {
                let dest = pid.to_string();
                let result = rx.and_then(|rx| match rx.recv_deadline(deadline) {
                    Ok(reply) => answer(dest, reply),
                    Err(channel::RecvTimeoutError::Timeout) => {
                        Err(ProcessError::Timeout { dest, after: timeout })
                    }
                    Err(channel::RecvTimeoutError::Disconnected) => {
                        Err(ProcessError::Exited { dest, reason: Term::atom("noproc") })
                    }
                });
                (pid, result)
            })
            .collect()
    }

    /// `sys:resume(Dest)`. A gen_server's resume is a flag change: when this returns the
    /// process has taken it (OTP's `sys:resume` is synchronous), and its waiting messages
    /// are queued to run, in order. A supervisor is sent a resume message.
    pub fn resume(&self, dest: impl Into<Dest>) -> Result<(), ProcessError> {
        let dest = dest.into();
        match self.inner.entry(&dest, |_, e| e.mailbox.clone())? {
            Mailbox::Pcb(pcb) => {
                pcb.resume();
                Ok(())
            }
            Mailbox::Thread { .. } => self.inner.send(&dest, Msg::Sys(SysMsg::Resume)),
        }
    }

    /// `sys:change_code(Dest, Module, OldVsn | {down, Vsn}, Extra)`: the process moves its
    /// state into its module's current version. A gen_server whose `code_change` fails
    /// crashes (its supervisor acts); a supervisor keeps its old specs.
    pub fn change_code(
        &self,
        dest: impl Into<Dest>,
        mode: ChangeMode,
        extra: Term,
        timeout: Duration,
    ) -> Result<(), ProcessError> {
        let dest = dest.into();
        if let (pid, Mailbox::Pcb(_)) = self.inner.entry(&dest, |p, e| (p, e.mailbox.clone()))? {
            let answer = self.change_code_many(&[pid], mode, &extra, timeout).pop();
            return match answer.map(|(_, r)| r) {
                Some(Err(ProcessError::CodeChange { reason, .. })) => {
                    Err(ProcessError::CodeChange { dest: dest.to_string(), reason })
                }
                Some(Err(ProcessError::Timeout { after, .. })) => {
                    Err(ProcessError::Timeout { dest: dest.to_string(), after })
                }
                Some(other) => other,
                None => Err(ProcessError::NoProc { dest: dest.to_string() }),
            };
        }
        let (tx, rx) = channel::bounded(1);
        self.inner.send(&dest, Msg::Sys(SysMsg::ChangeCode { mode, extra, ack: tx }))?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(ProcessError::CodeChange { dest: dest.to_string(), reason }),
            Err(channel::RecvTimeoutError::Timeout) => {
                Err(ProcessError::Timeout { dest: dest.to_string(), after: timeout })
            }
            Err(channel::RecvTimeoutError::Disconnected) => Err(ProcessError::CodeChange {
                dest: dest.to_string(),
                reason: Term::atom("exited"),
            }),
        }
    }

    /// `sys:get_state(Dest)`: the state, exported as a term by the version that made it.
    pub fn get_state(
        &self,
        dest: impl Into<Dest>,
        timeout: Duration,
    ) -> Result<Term, ProcessError> {
        let dest = dest.into();
        let (tx, rx) = channel::bounded(1);
        self.inner.send(&dest, Msg::Sys(SysMsg::GetState(tx)))?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(reason)) => Err(ProcessError::Exited { dest: dest.to_string(), reason }),
            Err(_) => Err(ProcessError::Timeout { dest: dest.to_string(), after: timeout }),
        }
    }

    /// The state of gen_server `dest` exported by the version that made it, with that
    /// version's vsn: what a host restart hands to the process's successor.
    pub fn export_state(
        &self,
        dest: impl Into<Dest>,
        timeout: Duration,
    ) -> Result<(String, Term), ProcessError> {
        let dest = dest.into();
        let (tx, rx) = channel::bounded(1);
        let ack = tx;
        self.inner.send(
            &dest,
            Msg::Sys(SysMsg::Export { to: Term::Str(String::new()), down_extra: None, ack }),
        )?;
        match rx.recv_timeout(timeout) {
            Ok(Ok((from, state))) => Ok((from.as_str().unwrap_or("undefined").to_owned(), state)),
            Ok(Err(reason)) => Err(ProcessError::Exited { dest: dest.to_string(), reason }),
            Err(_) => Err(ProcessError::Timeout { dest: dest.to_string(), after: timeout }),
        }
    }

    /// Gives gen_server `dest` a state that a process of version `from_vsn` exported in
    /// another host process (a host restart's state handover): its current version's
    /// `code_change(FromVsn, State, [])` builds its own from it. On an error the process
    /// keeps the state it had and runs on.
    pub fn adopt_state(
        &self,
        dest: impl Into<Dest>,
        from_vsn: &str,
        state: Term,
        timeout: Duration,
    ) -> Result<(), ProcessError> {
        let dest = dest.into();
        let (tx, rx) = channel::bounded(1);
        let from = Term::Str(from_vsn.to_owned());
        self.inner.send(&dest, Msg::Sys(SysMsg::Adopt { from, state, ack: tx }))?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(ProcessError::CodeChange { dest: dest.to_string(), reason }),
            Err(channel::RecvTimeoutError::Timeout) => {
                Err(ProcessError::Timeout { dest: dest.to_string(), after: timeout })
            }
            Err(channel::RecvTimeoutError::Disconnected) => Err(ProcessError::CodeChange {
                dest: dest.to_string(),
                reason: Term::atom("exited"),
            }),
        }
    }

    /// Stops a process: `terminate(Reason, State)` runs; waits up to `timeout` for the exit.
    /// Returns the exit reason.
    pub fn stop(
        &self,
        dest: impl Into<Dest>,
        reason: Term,
        timeout: Duration,
    ) -> Result<Term, ProcessError> {
        let dest = dest.into();
        let exit = self.inner.entry(&dest, |_, e| e.exit.clone())?;
        self.inner.send(&dest, Msg::Sys(SysMsg::Terminate(reason)))?;
        exit.wait(Some(timeout))
            .ok_or(ProcessError::Timeout { dest: dest.to_string(), after: timeout })
    }

    /// `supervisor:which_children(Sup)`.
    pub fn which_children(&self, sup: impl Into<Dest>) -> Result<Vec<ChildInfo>, ProcessError> {
        let dest = sup.into();
        let children = self.inner.entry(&dest, |_, e| e.children.clone())?;
        match children {
            Some(c) => Ok(lock(&c).clone()),
            None => Err(ProcessError::WrongKind { dest: dest.to_string(), expected: "supervisor" }),
        }
    }

    fn sup_request<T>(
        &self,
        sup: Dest,
        make: impl FnOnce(Sender<Result<T, Term>>) -> SupRequest,
    ) -> Result<T, ProcessError> {
        let kind = self.inner.entry(&sup, |_, e| e.kind)?;
        if kind != ProcessKind::Supervisor {
            return Err(ProcessError::WrongKind { dest: sup.to_string(), expected: "supervisor" });
        }
        let (tx, rx) = channel::bounded(1);
        self.inner.send(&sup, Msg::Sup(make(tx)))?;
        match rx.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(reason)) => Err(ProcessError::Child { sup: sup.to_string(), reason }),
            Err(_) => Err(ProcessError::NoProc { dest: sup.to_string() }),
        }
    }

    /// `supervisor:restart_child(Sup, Id)`: starts a child whose spec is kept but that is
    /// not running.
    pub fn restart_child(&self, sup: impl Into<Dest>, id: &str) -> Result<Pid, ProcessError> {
        self.sup_request(sup.into(), |reply| SupRequest::RestartChild { id: id.to_owned(), reply })
    }

    /// `supervisor:terminate_child(Sup, Id)`: stops the child, keeping its spec.
    pub fn terminate_child(&self, sup: impl Into<Dest>, id: &str) -> Result<(), ProcessError> {
        self.sup_request(sup.into(), |reply| SupRequest::TerminateChild {
            id: id.to_owned(),
            reply,
        })
    }

    /// `supervisor:delete_child(Sup, Id)`: forgets a stopped child's spec.
    pub fn delete_child(&self, sup: impl Into<Dest>, id: &str) -> Result<(), ProcessError> {
        self.sup_request(sup.into(), |reply| SupRequest::DeleteChild { id: id.to_owned(), reply })
    }

    /// The processes that run `module`, found the way release handling finds them.
    pub fn processes_running(&self, module: &str) -> Vec<Pid> {
        self.inner.processes_running(module)
    }

    /// `{purge, [M]}` with processes: purges the old code of `module`; processes whose
    /// state belongs to it are killed (their supervisors restart them in the current
    /// version), and the old code goes as soon as the last of them is gone.
    pub fn purge(&self, module: &str) -> Purged {
        let purged = self.inner.code.purge(module);
        if let Purged::Pending { holders } = &purged {
            for pid in holders.iter().filter_map(|h| h.process) {
                let pid = Pid(pid);
                log::info!("purge {module}: killing {pid}, which runs old code");
                self.inner.stop_child(pid, Shutdown::BrutalKill);
            }
        }
        purged
    }

    /// `{load, {M, PrePurge, PostPurge}}` with processes: a brutal pre-purge kills the
    /// processes still running old code of `module` before the new version pushes it out.
    pub fn load_module(
        &self,
        module: &str,
        pre: crate::code::code_server::PurgeMethod,
        post: crate::code::code_server::PurgeMethod,
    ) -> Result<Purged, CodeServerError> {
        if pre == crate::code::code_server::PurgeMethod::BrutalPurge {
            self.purge(module);
        }
        self.inner.code.load(module, pre, post)
    }

    /// `{remove, {M, PrePurge, PostPurge}}` with processes (see [`load_module`](Self::load_module)).
    pub fn remove_module(
        &self,
        module: &str,
        pre: crate::code::code_server::PurgeMethod,
        post: crate::code::code_server::PurgeMethod,
    ) -> Result<Purged, CodeServerError> {
        if pre == crate::code::code_server::PurgeMethod::BrutalPurge {
            self.purge(module);
        }
        self.inner.code.remove(module, pre, post)
    }

    /// The supervisor of `pid` and its child id there, if `pid` is a supervised child.
    pub fn supervisor_of(&self, pid: Pid) -> Option<(Pid, String)> {
        let procs = lock(&self.inner.procs);
        procs.table.iter().find_map(|(sup, e)| {
            let children = e.children.as_ref()?;
            let children = lock(children);
            children.iter().find(|c| c.pid == Some(pid)).map(|c| (*sup, c.id.clone()))
        })
    }

    /// Finds the supervisor `name` names: a registered name, or else the one supervisor
    /// process running module `name` (OTP code names supervisors by their registered name,
    /// which is usually their module).
    pub fn find_supervisor(&self, name: &str) -> Option<Pid> {
        if let Some(pid) = self.whereis(name) {
            return Some(pid);
        }
        let procs = lock(&self.inner.procs);
        let mut found = procs
            .table
            .iter()
            .filter(|(_, e)| e.kind == ProcessKind::Supervisor && e.module == name)
            .map(|(pid, _)| *pid);
        match (found.next(), found.next()) {
            (Some(pid), None) => Some(pid),
            _ => None,
        }
    }

    /// Stops every process: applications first (in reverse start order), then supervisors
    /// started by hand, outermost first (each stops its children by their specs), then
    /// every other gen_server, told to terminate at once and each given 5 s from then (they
    /// stop in parallel, on the workers).
    pub fn shutdown(&self) {
        crate::runtime::application::stop_all(&self.inner);
        // Supervisors started by hand first, oldest (outermost) first: each stops its own
        // children by their shutdown specs, and none is left to restart a child stopped
        // behind its back.
        let mut sups: Vec<Pid> = lock(&self.inner.procs)
            .table
            .iter()
            .filter(|(_, e)| e.kind == ProcessKind::Supervisor)
            .map(|(pid, _)| *pid)
            .collect();
        sups.sort_unstable();
        for pid in sups {
            self.inner.stop_child(pid, Shutdown::Timeout(Duration::from_secs(5)));
        }
        // Then every gen_server left, all at once.
        let mut pids: Vec<Pid> = lock(&self.inner.procs).table.keys().copied().collect();
        pids.sort_unstable_by(|a, b| b.cmp(a));
        self.inner.stop_gen_servers(&pids, Duration::from_secs(5));
        for pid in pids {
            self.inner.stop_child(pid, Shutdown::Timeout(Duration::from_secs(5)));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}
