//! Supervisors: host-run OTP supervisors over a supervisor callback module.
//!
//! The callback module's `init(Args)` returns flags and child specs as a [`Term`]; the host
//! does the rest: starts the children in order, restarts them as their restart type and the
//! strategy say (one_for_one, one_for_all, rest_for_one) within the restart intensity, and
//! stops them in reverse order, each within its shutdown time. A child that does not stop in
//! time is killed at its next message boundary; one that still does not stop (it is busy
//! inside plugin code) is *abandoned*: reported, and the versions it holds stay loaded.
//!
//! A supervisor is a thread of its own (a node has few), unlike a gen_server, which is a
//! control block run by the scheduler's workers: its work is starting and stopping children,
//! which waits for them, and waiting on a worker would tie that worker up.
//!
//! A supervisor's `code_change` runs the new version's `init` and updates its specs the OTP
//! way: existing children keep running under their new spec, new children are added but not
//! started, children absent from the new spec are kept.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use plugin_api::behaviour::SupervisorTable;
use plugin_api::{Behaviour, Term};

use crate::code::handle::Handle;
use crate::runtime::bounded;
use crate::runtime::node::NodeInner;
use crate::runtime::process::{
    ChangeMode, Msg, Naming, Parent, Pid, ProcessError, ProcessKind, SysMsg, bad_module,
    is_normal_exit, registered_name, spawn_gen_server, spawn_process,
};

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal exit (not `normal`, `shutdown` or `{shutdown, _}`).
    Transient,
    /// Never; the child is forgotten when it exits.
    Temporary,
}

/// How long a child gets to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once (at its next message boundary: threads cannot be killed).
    BrutalKill,
    /// Asked to terminate, and given this long.
    Timeout(Duration),
    /// Asked to terminate, and waited for (the default for supervisors).
    Infinity,
}

/// A worker or a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildType {
    /// A gen_server.
    Worker,
    /// A supervisor.
    Supervisor,
}

/// Which children a restart takes along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child.
    OneForAll,
    /// The child that exited and those started after it.
    RestForOne,
}

/// A supervisor's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupFlags {
    /// The restart strategy.
    pub strategy: Strategy,
    /// At most this many restarts...
    pub intensity: u32,
    /// ...within this period, or the supervisor gives up.
    pub period: Duration,
}

/// One child specification: `{Id, {M, F, A}, Restart, Shutdown, Type, Modules}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    /// The child's id (an atom in OTP).
    pub id: String,
    /// The module that `start` names; its behaviour decides what kind of process starts.
    pub module: String,
    /// The start function's name (informational: the behaviour decides how to start).
    pub function: String,
    /// The start arguments (the `A` list), passed to the child's `init`.
    pub args: Term,
    /// When to restart it.
    pub restart: Restart,
    /// How long it gets to stop.
    pub shutdown: Shutdown,
    /// Worker or supervisor.
    pub kind: ChildType,
    /// The modules the child runs (how release handling finds it).
    pub modules: Vec<String>,
}

/// A child as `which_children` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// Its pid, if it is running.
    pub pid: Option<Pid>,
    /// Worker or supervisor.
    pub kind: ChildType,
    /// The modules it runs.
    pub modules: Vec<String>,
}

/// A request to a supervisor (OTP's `supervisor:*` calls).
#[allow(clippy::enum_variant_names)] // named after OTP's supervisor:*_child calls
pub(crate) enum SupRequest {
    RestartChild { id: String, reply: Sender<Result<Pid, Term>> },
    TerminateChild { id: String, reply: Sender<Result<(), Term>> },
    DeleteChild { id: String, reply: Sender<Result<(), Term>> },
}

/// Parses what a supervisor's `init` returned: `{ok, {Flags, Specs}}` or `{Flags, Specs}`.
pub fn parse_init(t: &Term) -> Result<(SupFlags, Vec<ChildSpec>), String> {
    let body = match t.as_tuple() {
        Some([ok, body]) if ok.is_atom("ok") => body,
        _ => t,
    };
    let Some([flags, specs]) = body.as_tuple() else {
        return Err(format!("expected {{ok, {{SupFlags, [ChildSpec]}}}}, got {t}"));
    };
    let flags = parse_flags(flags)?;
    let Some(specs) = specs.as_list() else {
        return Err(format!("expected a list of child specs, got {specs}"));
    };
    let specs: Vec<ChildSpec> = specs.iter().map(parse_child_spec).collect::<Result<_, _>>()?;
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.id == s.id) {
            return Err(format!("duplicate child id {}", s.id));
        }
    }
    Ok((flags, specs))
}

fn parse_flags(t: &Term) -> Result<SupFlags, String> {
    let (strategy, intensity, period) = match (t.as_tuple(), t.as_map()) {
        (Some([s, i, p]), _) => (Some(s), Some(i), Some(p)),
        (_, Some(_)) => (
            t.map_get(&Term::atom("strategy")),
            t.map_get(&Term::atom("intensity")),
            t.map_get(&Term::atom("period")),
        ),
        _ => return Err(format!("expected {{Strategy, Intensity, Period}}, got {t}")),
    };
    let strategy = match strategy.and_then(Term::as_atom).unwrap_or("one_for_one") {
        "one_for_one" => Strategy::OneForOne,
        "one_for_all" => Strategy::OneForAll,
        "rest_for_one" => Strategy::RestForOne,
        other => return Err(format!("unknown restart strategy {other}")),
    };
    let count = |t: Option<&Term>, default: i64, what: &str| match t {
        None => Ok(default),
        Some(t) => match t.as_int() {
            Some(n) if n >= 0 => Ok(n),
            _ => Err(format!("{what} must be a non-negative integer, got {t}")),
        },
    };
    let intensity = count(intensity, 1, "intensity")?;
    let period = count(period, 5, "period")?;
    Ok(SupFlags {
        strategy,
        intensity: u32::try_from(intensity).map_err(|_| "intensity too large".to_owned())?,
        period: Duration::from_secs(period.max(1) as u64),
    })
}

fn atom_or_display(t: &Term) -> String {
    t.as_atom().map(str::to_owned).unwrap_or_else(|| t.to_string())
}

fn parse_child_spec(t: &Term) -> Result<ChildSpec, String> {
    let field = |key: &str| t.map_get(&Term::atom(key));
    let (id, start, restart, shutdown, kind, modules) = match (t.as_tuple(), t.as_map()) {
        (Some([id, start, restart, shutdown, kind, modules]), _) => {
            (Some(id), Some(start), Some(restart), Some(shutdown), Some(kind), Some(modules))
        }
        (_, Some(_)) => (
            field("id"),
            field("start"),
            field("restart"),
            field("shutdown"),
            field("type"),
            field("modules"),
        ),
        _ => {
            return Err(format!(
                "bad child spec {t}: expected {{Id, StartFunc, Restart, Shutdown, Type, Modules}}"
            ));
        }
    };
    let id = id.map(atom_or_display).ok_or_else(|| format!("child spec {t} has no id"))?;
    let bad = |what: &str, got: &Term| format!("child {id}: bad {what} {got}");
    let start = start.ok_or_else(|| format!("child {id}: no start"))?;
    let (module, function, args) = match start.as_tuple() {
        Some([m, f, a])
            if m.as_atom().is_some() && f.as_atom().is_some() && a.as_list().is_some() =>
        {
            (atom_or_display(m), atom_or_display(f), a.clone())
        }
        _ => return Err(bad("start {M, F, A}", start)),
    };
    let restart = match restart.and_then(Term::as_atom).unwrap_or("permanent") {
        "permanent" => Restart::Permanent,
        "transient" => Restart::Transient,
        "temporary" => Restart::Temporary,
        _ => return Err(bad("restart type", restart.unwrap_or(&Term::atom("?")))),
    };
    let kind = match kind.and_then(Term::as_atom).unwrap_or("worker") {
        "worker" => ChildType::Worker,
        "supervisor" => ChildType::Supervisor,
        _ => return Err(bad("type", kind.unwrap_or(&Term::atom("?")))),
    };
    let shutdown = match shutdown {
        None if kind == ChildType::Supervisor => Shutdown::Infinity,
        None => Shutdown::Timeout(Duration::from_millis(5000)),
        Some(s) if s.is_atom("brutal_kill") => Shutdown::BrutalKill,
        Some(s) if s.is_atom("infinity") => Shutdown::Infinity,
        Some(s) => match s.as_int() {
            Some(ms) if ms >= 0 => Shutdown::Timeout(Duration::from_millis(ms as u64)),
            _ => return Err(bad("shutdown", s)),
        },
    };
    let modules = match modules {
        None => vec![module.clone()],
        Some(m) if m.is_atom("dynamic") => Vec::new(),
        Some(m) => match m.as_list() {
            Some(items) if items.iter().all(|i| i.as_atom().is_some()) => {
                items.iter().map(atom_or_display).collect()
            }
            _ => return Err(bad("modules", m)),
        },
    };
    Ok(ChildSpec { id, module, function, args, restart, shutdown, kind, modules })
}

struct Child {
    spec: ChildSpec,
    pid: Option<Pid>,
}

struct Sup {
    node: Arc<NodeInner>,
    pid: Pid,
    module: String,
    args: Term,
    handle: Handle<SupervisorTable>,
    flags: SupFlags,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
    snapshot: Arc<Mutex<Vec<ChildInfo>>>,
    rx: Receiver<Msg>,
    parent: Parent,
    kill: Arc<AtomicBool>,
}

/// Spawns a supervisor running `module` with `init(args)`; returns once its children started.
pub(crate) fn spawn_supervisor(
    node: &Arc<NodeInner>,
    module: &str,
    args: Term,
    naming: Naming,
    parent: Parent,
) -> Result<Pid, ProcessError> {
    let handle = node.code.handle::<SupervisorTable>(module).map_err(|e| bad_module(module, e))?;
    let name = registered_name(&handle, naming, &args, SupervisorTable::local_name)?;
    let snapshot = Arc::new(Mutex::new(Vec::new()));
    let module_name = module.to_owned();
    let children = Some(Arc::clone(&snapshot));
    // A supervisor's init starts its children, each bounded by its own init timeout.
    spawn_process(node, module, ProcessKind::Supervisor, name, children, None, move |birth| {
        let mut sup = Sup {
            node: birth.node,
            pid: birth.pid,
            module: module_name,
            args,
            handle,
            flags: SupFlags {
                strategy: Strategy::OneForOne,
                intensity: 1,
                period: Duration::from_secs(5),
            },
            children: Vec::new(),
            restarts: VecDeque::new(),
            snapshot,
            rx: birth.rx,
            parent,
            kill: birth.kill,
        };
        sup.init()?;
        Ok(Box::new(move || sup.run()))
    })
}

impl Sup {
    /// Calls the current version's `init` and parses the result.
    /// Runs the module's `init(Args)`, bounded by the node's init timeout (an overrun is
    /// `{timeout, init}`, and the call's thread is abandoned), and parses its specs.
    fn call_init(&self) -> Result<(SupFlags, Vec<ChildSpec>), Term> {
        let (handle, args, module) = (self.handle.clone(), self.args.clone(), self.module.clone());
        let timeout = self.node.timeouts().init;
        let result = bounded::run(format!("{}:init", self.module), timeout, move || {
            let held = handle.hold().map_err(|e| {
                Term::tuple([
                    Term::atom("undef"),
                    Term::atom(module.as_str()),
                    Term::Str(e.to_string()),
                ])
            })?;
            // SAFETY: the handle is for SupervisorTable, checked for every version at load.
            let table = unsafe { held.table::<SupervisorTable>() };
            let result = table.init(&args).map_err(|e| e.exit_reason());
            drop(held);
            result
        })
        .map_err(|_| Term::tuple([Term::atom("timeout"), Term::atom("init")]))??;
        parse_init(&result)
            .map_err(|why| Term::tuple([Term::atom("bad_start_spec"), Term::Str(why)]))
    }

    fn init(&mut self) -> Result<(), Term> {
        let (flags, specs) = self.call_init()?;
        self.flags = flags;
        self.children = specs.into_iter().map(|spec| Child { spec, pid: None }).collect();
        for i in 0..self.children.len() {
            if let Err(reason) = self.start_child(i) {
                let id = self.children[i].spec.id.clone();
                self.shutdown_all();
                return Err(Term::tuple([
                    Term::atom("shutdown"),
                    Term::tuple([Term::atom("failed_to_start_child"), Term::atom(id), reason]),
                ]));
            }
        }
        self.publish();
        Ok(())
    }

    fn start_child(&mut self, i: usize) -> Result<Pid, Term> {
        let spec = &self.children[i].spec;
        let parent = Parent::Supervisor(self.pid);
        let behaviour = self.node.code.behaviour(&spec.module);
        let started = match behaviour {
            Some(Behaviour::GenServer) => spawn_gen_server(
                &self.node,
                &spec.module,
                spec.args.clone(),
                Naming::ByModule,
                parent,
            ),
            Some(Behaviour::Supervisor) => spawn_supervisor(
                &self.node,
                &spec.module,
                spec.args.clone(),
                Naming::ByModule,
                parent,
            ),
            other => {
                let what = other.map_or("not loaded", |b| b.as_str());
                return Err(Term::tuple([
                    Term::atom("cannot_start"),
                    Term::atom(spec.module.as_str()),
                    Term::Str(what.to_owned()),
                ]));
            }
        };
        match started {
            Ok(pid) => {
                log::info!(
                    "supervisor {} ({}): started child {} as {pid}",
                    self.pid,
                    self.module,
                    spec.id
                );
                self.children[i].pid = Some(pid);
                Ok(pid)
            }
            Err(ProcessError::Start { reason, .. }) => Err(reason),
            Err(other) => Err(Term::Str(other.to_string())),
        }
    }

    fn publish(&self) {
        let infos = self
            .children
            .iter()
            .map(|c| ChildInfo {
                id: c.spec.id.clone(),
                pid: c.pid,
                kind: c.spec.kind,
                modules: c.spec.modules.clone(),
            })
            .collect();
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = infos;
    }

    fn run(mut self) {
        let mut suspended = false;
        let mut deferred: VecDeque<Msg> = VecDeque::new();
        let reason = loop {
            if self.kill.load(Ordering::SeqCst) {
                break Term::atom("killed");
            }
            let msg = match (!suspended).then(|| deferred.pop_front()).flatten() {
                Some(m) => m,
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break Term::atom("shutdown"),
                },
            };
            if suspended && !matches!(msg, Msg::Sys(_)) {
                deferred.push_back(msg);
                continue;
            }
            match msg {
                Msg::ChildExit { pid, reason } => {
                    if let Err(give_up) = self.child_exited(pid, &reason) {
                        break give_up;
                    }
                }
                Msg::Sup(request) => self.request(request),
                Msg::Sys(SysMsg::Suspend(ack)) => {
                    suspended = true;
                    let _ = ack.send(());
                }
                Msg::Sys(SysMsg::Resume) => suspended = false,
                Msg::Sys(SysMsg::ChangeCode { mode, extra, ack }) => {
                    let _ = ack.send(self.code_change(mode, &extra));
                }
                Msg::Sys(SysMsg::GetState(ack)) => {
                    let children = self.children.iter().map(|c| {
                        Term::tuple([
                            Term::atom(c.spec.id.as_str()),
                            c.pid.map_or(Term::atom("undefined"), |p| Term::Str(p.to_string())),
                        ])
                    });
                    let _ = ack.send(Ok(Term::list(children)));
                }
                // A supervisor's state is its child list, rebuilt by its code_change.
                Msg::Sys(SysMsg::Export { ack, .. }) => {
                    let _ = ack.send(Err(Term::atom("not_a_gen_server")));
                }
                Msg::Sys(SysMsg::Settle { ack, .. }) => {
                    let _ = ack.send(Ok(false));
                }
                // Its children are its state, and a new host starts them itself.
                Msg::Sys(SysMsg::Adopt { ack, .. }) => {
                    let _ = ack.send(Err(Term::atom("not_a_gen_server")));
                }
                Msg::Sys(SysMsg::Terminate(reason)) => break reason,
                Msg::Sys(SysMsg::Kill) => break Term::atom("killed"),
                Msg::Call { reply, .. } => {
                    reply.send(Term::error(Term::atom("not_a_gen_server")));
                }
                Msg::Cast(_) | Msg::Info(_) => {}
            }
        };
        self.shutdown_all();
        self.node.exited(self.pid, &self.parent, reason);
    }

    fn request(&mut self, request: SupRequest) {
        match request {
            SupRequest::RestartChild { id, reply } => {
                let result = match self.children.iter().position(|c| c.spec.id == id) {
                    None => Err(Term::atom("not_found")),
                    Some(i) if self.children[i].pid.is_some() => Err(Term::atom("running")),
                    Some(i) => self.start_child(i),
                };
                self.publish();
                let _ = reply.send(result);
            }
            SupRequest::TerminateChild { id, reply } => {
                let result = match self.children.iter().position(|c| c.spec.id == id) {
                    None => Err(Term::atom("not_found")),
                    Some(i) => {
                        self.shutdown_child(i);
                        if self.children[i].spec.restart == Restart::Temporary {
                            self.children.remove(i);
                        }
                        Ok(())
                    }
                };
                self.publish();
                let _ = reply.send(result);
            }
            SupRequest::DeleteChild { id, reply } => {
                let result = match self.children.iter().position(|c| c.spec.id == id) {
                    None => Err(Term::atom("not_found")),
                    Some(i) if self.children[i].pid.is_some() => Err(Term::atom("running")),
                    Some(i) => {
                        self.children.remove(i);
                        Ok(())
                    }
                };
                self.publish();
                let _ = reply.send(result);
            }
        }
    }

    /// A child exited: restart what the strategy says. `Err` means the supervisor gives up.
    fn child_exited(&mut self, pid: Pid, reason: &Term) -> Result<(), Term> {
        let Some(i) = self.children.iter().position(|c| c.pid == Some(pid)) else {
            return Ok(()); // A child we already stopped on purpose.
        };
        self.children[i].pid = None;
        let restart = match self.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !is_normal_exit(reason),
            Restart::Temporary => false,
        };
        if !restart {
            if self.children[i].spec.restart == Restart::Temporary {
                self.children.remove(i);
            }
            self.publish();
            return Ok(());
        }
        log::info!(
            "supervisor {} ({}): child {} ({pid}) exited with {reason}; restarting ({:?})",
            self.pid,
            self.module,
            self.children[i].spec.id,
            self.flags.strategy
        );
        loop {
            self.count_restart()?;
            let range = match self.flags.strategy {
                Strategy::OneForOne => i..i + 1,
                Strategy::OneForAll => 0..self.children.len(),
                Strategy::RestForOne => i..self.children.len(),
            };
            // Everything in range stops first (the exited child is stopped already; on a
            // retry, so is any child that restarted in the failed round).
            for j in range.clone().rev() {
                self.shutdown_child(j);
            }
            let failed = range.clone().find(|&j| self.start_child(j).is_err());
            self.publish();
            if failed.is_none() {
                return Ok(());
            }
        }
    }

    /// Records a restart; `Err(shutdown)` when the intensity is exceeded.
    fn count_restart(&mut self) -> Result<(), Term> {
        let now = Instant::now();
        self.restarts.push_back(now);
        while self.restarts.front().is_some_and(|t| now.duration_since(*t) > self.flags.period) {
            self.restarts.pop_front();
        }
        if self.restarts.len() as u32 > self.flags.intensity {
            log::error!(
                "supervisor {} ({}): reached maximum restart intensity ({} in {:?}); shutting down",
                self.pid,
                self.module,
                self.flags.intensity,
                self.flags.period
            );
            return Err(Term::atom("shutdown"));
        }
        Ok(())
    }

    /// Stops child `i` within its shutdown time; abandons it if it will not stop.
    fn shutdown_child(&mut self, i: usize) {
        let Some(pid) = self.children[i].pid.take() else { return };
        let shutdown = self.children[i].spec.shutdown;
        self.node.stop_child(pid, shutdown);
    }

    fn shutdown_all(&mut self) {
        for i in (0..self.children.len()).rev() {
            self.shutdown_child(i);
        }
        self.publish();
    }

    /// Re-runs `init` in the current version and updates the specs the OTP way.
    fn code_change(&mut self, mode: ChangeMode, extra: &Term) -> Result<(), Term> {
        let _ = (mode, extra);
        let (flags, specs) = match self.call_init() {
            Ok(parsed) => parsed,
            Err(reason) => {
                log::warn!(
                    "supervisor {} ({}): code_change failed, keeping the old specs: {reason}",
                    self.pid,
                    self.module
                );
                return Err(reason);
            }
        };
        self.flags = flags;
        for spec in specs {
            match self.children.iter_mut().find(|c| c.spec.id == spec.id) {
                Some(child) => child.spec = spec,
                None => {
                    log::info!(
                        "supervisor {} ({}): code_change adds child {} (not started)",
                        self.pid,
                        self.module,
                        spec.id
                    );
                    self.children.push(Child { spec, pid: None });
                }
            }
        }
        self.publish();
        Ok(())
    }
}

impl fmt::Display for ChildType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChildType::Worker => "worker",
            ChildType::Supervisor => "supervisor",
        })
    }
}
