//! Evaluating a checked relup entry (SPEC §5.2–§5.5).
//!
//! Before the point of no return only object code is loaded, and then the migrations are
//! tried (the *preflight*, which OTP cannot do): every gen_server running a module the
//! script loads exports its state as its migration will, and the staged version's
//! `code_change` runs on that copy. Any error drops everything staged: the node is exactly
//! as before. After the point of no return, instructions run in order; a downgrade's
//! `code_change` that comes before its `load` (systools' order) runs right after that
//! `load`; and at the end every process the preflight checked has migrated, or migrates
//! then. The first error is returned as [`ReleaseError::AfterPointOfNoReturn`], which the
//! handler turns into its error action: a lost state is never reported as success.
//!
//! A `sync_nodes` before the point of no return waits for the other nodes there; if the
//! barrier fails, everything staged is dropped and the attempt is given up in the cluster
//! (the nodes still waiting stop too), and the install returns [`ReleaseError::Sync`]. The
//! preflight runs before the first such barrier that no `load_object_code` follows, so a
//! node whose migration would fail never arrives. After the point of no return a failed
//! barrier is an error like any other there.

use std::time::{Duration, Instant};

use plugin_api::Term;

use crate::release::files::AppSpec;
use crate::release::{Direction, Instruction, Spanned, SyncTargets, Timeout};
use crate::runtime::application::RestartType;
use crate::runtime::node::Monitor;
use crate::runtime::process::{ChangeMode, Pid, ProcessError, ProcessKind, is_normal_exit};

use super::check::Plan;
use super::cluster::SyncFailure;
use super::{Progress, ReleaseError, ReleaseHandler, fault_point};

/// What the script did so far that later instructions refer to.
#[derive(Default)]
struct Ctx {
    /// Processes suspended by this script, with the module they were suspended under.
    suspended: Vec<(String, Pid)>,
    /// Children stopped by `stop`, to be started again by `start`: (module, supervisor, id).
    stopped: Vec<(String, Pid, String)>,
    /// When the first process was suspended, while any is.
    suspended_since: Option<Instant>,
    /// The longest stretch during which some process was suspended.
    suspend_window: Option<Duration>,
    /// Processes whose state the script migrates (checked by the preflight).
    watched: Vec<Watched>,
    /// Downgrade `code_change`s that came before their module's `load` (systools puts
    /// them there): module, processes, Extra. They run right after that `load`.
    deferred_down: Vec<(String, Vec<Pid>, Term)>,
    /// The install's upgrade attempt, for `sync_nodes`.
    attempt: Option<String>,
    /// The explicit migration the script makes of each module it loads (mode and Extra of
    /// its `code_change`), recorded on the module's processes right before its `load`.
    migrations: Vec<(String, ChangeMode, Term)>,
}

/// Runs the entry; returns the suspend window (first suspend to last resume), if any.
pub(crate) fn run(
    h: &ReleaseHandler,
    plan: &Plan,
    attempt: Option<&str>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Option<Duration>, ReleaseError> {
    let instructions = &plan.entry.instructions;
    let total = instructions.len();
    let mut report =
        |i: usize| progress(Progress { step: i + 1, total, instruction: &instructions[i].value });
    let point = instructions.iter().position(|i| matches!(i.value, Instruction::PointOfNoReturn));
    let (before, after) = match point {
        Some(p) => (&instructions[..p], &instructions[p + 1..]),
        None => (&instructions[..0], &instructions[..]),
    };
    let mut staged: Vec<String> = Vec::new();
    // Before the point of no return every error drops what was staged and gives the
    // attempt up, so that the other nodes do not wait for this one.
    let undo = |staged: &[String]| {
        for s in staged {
            h.node.code().drop_staged(s);
        }
        if let (Some(cluster), Some(attempt)) = (h.cluster(), attempt) {
            cluster.abort(attempt);
        }
    };
    let last_object_code =
        before.iter().rposition(|i| matches!(i.value, Instruction::LoadObjectCode { .. }));
    let preflight_at = before.iter().enumerate().position(|(i, s)| {
        matches!(s.value, Instruction::SyncNodes { .. }) && last_object_code.is_none_or(|l| l < i)
    });
    let mut watched = None;
    for (i, spanned) in before.iter().enumerate() {
        report(i);
        if preflight_at == Some(i) {
            match preflight(h, plan, after) {
                Ok(w) => watched = Some(w),
                Err(e) => {
                    undo(&staged);
                    log::error!("install of {} refused by the preflight: {e}", plan.vsn);
                    return Err(e);
                }
            }
        }
        match &spanned.value {
            Instruction::LoadObjectCode { app, app_vsn, modules } => {
                let dir = plan.lib_dir(h, app, app_vsn).unwrap_or_else(|| h.root.join("lib"));
                for module in modules {
                    fault_point("install: staging a module");
                    if let Err(e) = h.stage(&plan.record, module, &dir.join(format!("{module}.so")))
                    {
                        undo(&staged);
                        log::error!("install of {} rolled back: {e}", plan.vsn);
                        return Err(e);
                    }
                    staged.push(module.clone());
                }
            }
            Instruction::SyncNodes { id, nodes, timeout } => {
                if let Err(reason) = sync_nodes(h, attempt, id, nodes, *timeout) {
                    undo(&staged);
                    let attempt = attempt.unwrap_or("?").to_owned();
                    log::error!(
                        "install of {} rolled back at sync_nodes {id} (attempt {attempt}): {reason}",
                        plan.vsn
                    );
                    return Err(ReleaseError::Sync {
                        vsn: plan.vsn.clone(),
                        at: format!("{}:{}", plan.script.display(), spanned.pos),
                        id: id.to_string(),
                        attempt,
                        reason: Box::new(reason),
                    });
                }
            }
            _ => {}
        }
    }
    let watched = match watched {
        Some(watched) => watched,
        None => match preflight(h, plan, after) {
            Ok(watched) => watched,
            Err(e) => {
                undo(&staged);
                log::error!("install of {} refused by the preflight: {e}", plan.vsn);
                return Err(e);
            }
        },
    };
    if let Some(p) = point {
        report(p);
        log::info!("point of no return ({} modules staged)", staged.len());
        switch_app_specs(h, plan);
    }
    let migrations = loaded_modules(h, after)
        .into_iter()
        .filter_map(|m| match migration_of(after, &m) {
            (Some(mode), extra) => Some((m, mode, extra)),
            (None, _) => None,
        })
        .collect();
    let mut ctx =
        Ctx { watched, attempt: attempt.map(str::to_owned), migrations, ..Ctx::default() };
    let first_after = point.map_or(0, |p| p + 1);
    for (i, spanned) in after.iter().enumerate() {
        report(first_after + i);
        fault_point("install: an instruction after the point of no return");
        log::debug!("eval {}", spanned.value);
        if let Err(reason) = eval(h, plan, &mut ctx, spanned) {
            forget_recorded(h, &ctx);
            return Err(ReleaseError::AfterPointOfNoReturn {
                at: format!("{}:{}", plan.script.display(), spanned.pos),
                instruction: spanned.value.to_string(),
                reason,
            });
        }
    }
    if let Err(reason) = settle(h, after, &ctx) {
        forget_recorded(h, &ctx);
        return Err(ReleaseError::AfterPointOfNoReturn {
            at: plan.script.display().to_string(),
            instruction: "the state migrations the script leaves to the processes".to_owned(),
            reason,
        });
    }
    Ok(ctx.suspend_window)
}

/// After a failed step: the code changes this install recorded for a version it has not
/// loaded are dropped, so that none converts a state in a later install. Those for a
/// version it did load stay: a process left out of the suspension still migrates with the
/// script's Extra.
fn forget_recorded(h: &ReleaseHandler, ctx: &Ctx) {
    let modules =
        ctx.migrations.iter().map(|(m, _, _)| m).chain(ctx.deferred_down.iter().map(|(m, _, _)| m));
    for module in modules {
        if h.node.code().staged_vsn(module).is_some() {
            h.node.forget_code_change(&gen_servers(h, module));
        }
    }
}

/// `sync_nodes(Id, Nodes)` within the install's attempt: the node list (given, or from
/// `{M, F, A}` now, in the code that is current at this line), then the cluster's barrier.
fn sync_nodes(
    h: &ReleaseHandler,
    attempt: Option<&str>,
    id: &Term,
    targets: &SyncTargets,
    timeout: Option<Timeout>,
) -> Result<(), SyncFailure> {
    let Some(cluster) = h.cluster() else {
        return Err(SyncFailure::Cluster("this node is in no cluster".to_owned()));
    };
    let Some(attempt) = attempt else {
        return Err(SyncFailure::Cluster("the install names no attempt".to_owned()));
    };
    let nodes = match targets {
        SyncTargets::Nodes(nodes) => nodes.clone(),
        SyncTargets::Apply { module, function, args }
            if module == "hotcode" && function == "nodes" && args.is_empty() =>
        {
            cluster.nodes()?
        }
        SyncTargets::Apply { module, function, args } => {
            let mfa = format!("{module}:{function}/{}", args.len());
            // Strings are lists: `[]`, `""`, `[n1, "n2", [$n, $3]]` all read as OTP reads them.
            match h.node.apply(module, function, args.clone()) {
                Ok(result) if result.as_elements().is_some() => result
                    .as_elements()
                    .unwrap_or_default()
                    .iter()
                    .map(|t| match (t.as_atom(), t.as_text()) {
                        (Some(a), _) => Ok(a.to_owned()),
                        (None, Some(text)) => Ok(text.into_owned()),
                        _ => Err(SyncFailure::Nodes(format!(
                            "{mfa} returned {t} in its list, not a node name"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                Ok(other) => {
                    return Err(SyncFailure::Nodes(format!(
                        "{mfa} returned {other}, not a list of nodes"
                    )));
                }
                Err(e) => return Err(SyncFailure::Nodes(format!("{mfa}: {e}"))),
            }
        }
    };
    let timeout = match timeout {
        Some(Timeout::Ms(ms)) => Some(Duration::from_millis(ms)),
        Some(Timeout::Default | Timeout::Infinity) | None => None,
    };
    log::info!("sync_nodes {id} (attempt {attempt}): waiting for [{}]", nodes.join(", "));
    let started = Instant::now();
    cluster.sync_nodes(attempt, &id.to_string(), &nodes, timeout)?;
    log::info!("sync_nodes {id}: every node arrived ({:?} here)", started.elapsed());
    Ok(())
}

/// A gen_server whose state the script migrates: checked by the preflight, and watched
/// until the end of the script, when it must have migrated.
struct Watched {
    pid: Pid,
    module: String,
    monitor: Monitor,
}

/// How the script will migrate `module`'s processes: the mode and Extra of its first
/// `code_change` for `module` (mode `up` when it names none), or an implicit migration.
fn migration_of(after: &[Spanned<Instruction>], module: &str) -> (Option<ChangeMode>, Term) {
    after
        .iter()
        .find_map(|i| match &i.value {
            Instruction::CodeChange { mode, changes } => {
                changes.iter().find(|(m, _)| m == module).map(|(_, extra)| {
                    let mode = match mode.unwrap_or(Direction::Up) {
                        Direction::Up => ChangeMode::Up,
                        Direction::Down => ChangeMode::Down,
                    };
                    (Some(mode), extra.clone())
                })
            }
            _ => None,
        })
        .unwrap_or((None, Term::List(vec![])))
}

/// The modules the script loads after the point of no return, each once, in order.
fn loaded_modules(h: &ReleaseHandler, after: &[Spanned<Instruction>]) -> Vec<String> {
    let mut loaded: Vec<String> = Vec::new();
    for i in after {
        if let Instruction::Load { module, .. } = &i.value
            && !loaded.contains(module)
        {
            loaded.push(module.clone());
        }
    }
    loaded.retain(|m| h.node.code().staged_vsn(m).is_some());
    loaded
}

/// Whether the script stops `module`'s processes before it loads the module's new code
/// (`{stop, [M]}`, `{remove, M}`, or `application:stop` of an application that has it,
/// as `restart_application` does): they are restarted in the new code, not migrated.
fn stopped_before_load(h: &ReleaseHandler, after: &[Spanned<Instruction>], module: &str) -> bool {
    let apps = h.node.loaded_applications();
    let has =
        |app: &str| apps.iter().any(|a| a.name == app && a.modules.iter().any(|m| m == module));
    for i in after {
        match &i.value {
            Instruction::Load { module: m, .. } if m == module => return false,
            Instruction::Stop(modules) if modules.iter().any(|m| m == module) => return true,
            Instruction::Remove { module: m, .. } if m == module => return true,
            Instruction::Apply { module: m, function: f, args }
                if m == "application"
                    && f == "stop"
                    && args.first().and_then(Term::as_atom).is_some_and(has) =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// The gen_servers running `module` now.
fn gen_servers(h: &ReleaseHandler, module: &str) -> Vec<Pid> {
    h.node
        .processes()
        .into_iter()
        .filter(|p| p.kind == ProcessKind::GenServer && p.module == module)
        .map(|p| p.pid)
        .collect()
}

/// Before the point of no return: for every gen_server running a module the script loads
/// after it (and does not stop first), the migration it will make is tried on a copy of
/// its state in the staged version (`Node::preflight_code_change`). Any failure refuses
/// the install, nothing changed. Returns the processes to watch until the end.
fn preflight(
    h: &ReleaseHandler,
    plan: &Plan,
    after: &[Spanned<Instruction>],
) -> Result<Vec<Watched>, ReleaseError> {
    let node = &h.node;
    let mut watched = Vec::new();
    for module in loaded_modules(h, after) {
        if stopped_before_load(h, after, &module) {
            log::info!("preflight: {module}'s processes are stopped before its load, not migrated");
            continue;
        }
        let pids = gen_servers(h, &module);
        if pids.is_empty() {
            continue;
        }
        let (mode, extra) = migration_of(after, &module);
        fault_point("install: a preflight of code_change");
        if let Err(failure) =
            node.preflight_code_change(&module, &pids, mode, &extra, node.timeouts().code_change)
        {
            return Err(ReleaseError::Preflight {
                vsn: plan.vsn.clone(),
                process: failure.pid.map_or_else(|| "processes".to_owned(), |p| p.to_string()),
                module,
                direction: match mode {
                    Some(ChangeMode::Up) => "up",
                    Some(ChangeMode::Down) => "down",
                    None => "implicit",
                },
                reason: failure.reason,
            });
        }
        log::info!("preflight: the code_change of {} {module} process(es) succeeds", pids.len());
        for pid in pids {
            match node.monitor(pid) {
                Some(monitor) => watched.push(Watched { pid, module: module.clone(), monitor }),
                // Gone since its export: a restart, if any, starts in the new code.
                None => log::info!("preflight: {pid} ({module}) exited meanwhile"),
            }
        }
    }
    Ok(watched)
}

/// An exit the script itself may cause: a normal stop, a shutdown, a brutal kill (a
/// `brutal_kill` child spec, a brutal purge). A failed migration is never one of these
/// (it is `{code_change_failed, _}`).
fn deliberate(reason: &Term) -> bool {
    is_normal_exit(reason) || reason.is_atom("killed")
}

/// At the end of the script: every watched process has migrated, or migrates now (a
/// migration left to its next callback, or one left out of a `suspend`), in the way the
/// script migrates its module; so does every other gen_server of a loaded module (started
/// since the preflight); and none of them crashed on the way. A failure is an install
/// error, never "ok" with a state lost.
fn settle(h: &ReleaseHandler, after: &[Spanned<Instruction>], ctx: &Ctx) -> Result<(), String> {
    lost_none(ctx)?;
    let timeout = h.node.timeouts().code_change;
    for module in loaded_modules_done(h, after) {
        let (mode, extra) = migration_of(after, &module);
        let pids = gen_servers(h, &module);
        for (pid, settled) in h.node.settle_many(&pids, mode, &extra, timeout) {
            match settled {
                Ok(_) => {}
                // Gone since it was listed: stopped on purpose, or crashed (seen below).
                Err(ProcessError::NoProc { .. } | ProcessError::Exited { .. }) => {}
                Err(e) => return Err(format!("migrating the state of {pid} ({module}): {e}")),
            }
        }
    }
    lost_none(ctx)
}

/// Fails if a watched process has exited other than on purpose.
fn lost_none(ctx: &Ctx) -> Result<(), String> {
    for w in &ctx.watched {
        if let Some(reason) = w.monitor.wait(Duration::ZERO)
            && !deliberate(&reason)
        {
            return Err(format!(
                "{} ({}) exited with {reason} during the install: its state is lost",
                w.pid, w.module
            ));
        }
    }
    Ok(())
}

/// The modules the script loaded (their staged versions are current now).
fn loaded_modules_done(h: &ReleaseHandler, after: &[Spanned<Instruction>]) -> Vec<String> {
    let mut loaded: Vec<String> = Vec::new();
    for i in after {
        if let Instruction::Load { module, .. } = &i.value
            && !loaded.contains(module)
            && h.node.code().current_vsn(module).is_some()
        {
            loaded.push(module.clone());
        }
    }
    loaded
}

/// At the point of no return, the loaded specs of the target release's applications
/// switch to the target's `.app` files (OTP switches its code path there).
fn switch_app_specs(h: &ReleaseHandler, plan: &Plan) {
    for app in &plan.target.apps {
        if !h.node.is_application_loaded(&app.name) {
            continue;
        }
        match AppSpec::read(&h.lib_dir(app).join(format!("{}.app", app.name))) {
            Ok(spec) => {
                h.node.replace_application_spec(spec);
            }
            Err(e) => log::warn!("keeping the loaded spec of {}: {e}", app.name),
        }
    }
}

fn eval(
    h: &ReleaseHandler,
    plan: &Plan,
    ctx: &mut Ctx,
    spanned: &Spanned<Instruction>,
) -> Result<(), String> {
    let node = &h.node;
    match &spanned.value {
        Instruction::Load { module, pre, post } => {
            // Each process of the module learns how its state is to migrate before the new
            // version becomes current: one left out of the suspension migrates before its
            // next callback with the script's Extra; the suspended ones migrate at the
            // script's `code_change`, on the workers in parallel.
            if let Some(vsn) = node.code().staged_vsn(module)
                && let Some((_, mode, extra)) = ctx.migrations.iter().find(|(m, _, _)| m == module)
            {
                node.record_code_change(&gen_servers(h, module), *mode, extra, &vsn);
            }
            node.load_module(module, (*pre).into(), (*post).into()).map_err(|e| e.to_string())?;
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut ctx.deferred_down)
                .into_iter()
                .partition(|(m, _, _)| m == module);
            ctx.deferred_down = later;
            for (_, pids, extra) in now {
                for (pid, answer) in node.change_code_many(
                    &pids,
                    ChangeMode::Down,
                    &extra,
                    h.node.timeouts().code_change,
                ) {
                    answer.map_err(|e| format!("code_change of {pid} ({module}), down: {e}"))?;
                }
            }
            Ok(())
        }
        Instruction::Remove { module, pre, post } => node
            .remove_module(module, (*pre).into(), (*post).into())
            .map(drop)
            .map_err(|e| e.to_string()),
        Instruction::Purge(modules) => {
            for m in modules {
                node.purge(m);
            }
            Ok(())
        }
        Instruction::Suspend(list) => {
            for (module, timeout) in list {
                // `infinity` waits as long as a code_change may take, not for ever: a process
                // stuck in a callback must not hang the install (it is left out, and the
                // check at the end of the script finds it if it never migrates).
                let timeout = timeout.duration().unwrap_or(h.node.timeouts().code_change);
                // Gen_servers by a flag each, in one pass; supervisors by a message each,
                // answered within `timeout` together.
                for (pid, suspended) in node.suspend_many(&node.processes_running(module), timeout)
                {
                    match suspended {
                        Ok(()) => {
                            ctx.suspended_since.get_or_insert_with(Instant::now);
                            ctx.suspended.push((module.clone(), pid));
                        }
                        Err(ProcessError::Timeout { .. }) => {
                            // OTP leaves it out and makes sure it does not stay suspended.
                            log::warn!(
                                "suspend {module}: {pid} did not answer in {timeout:?}; left out"
                            );
                            let _ = node.resume(pid);
                        }
                        Err(e) => log::info!("suspend {module}: {pid}: {e}; left out"),
                    }
                }
            }
            Ok(())
        }
        Instruction::Resume(modules) => {
            let (resume, keep): (Vec<_>, Vec<_>) =
                ctx.suspended.drain(..).partition(|(m, _)| modules.contains(m));
            ctx.suspended = keep;
            let pids: Vec<Pid> = resume.into_iter().map(|(_, pid)| pid).collect();
            // Flags, in one pass; a process gone meanwhile needs no resume.
            drop(node.resume_many(&pids));
            if ctx.suspended.is_empty()
                && let Some(since) = ctx.suspended_since.take()
            {
                let window = since.elapsed();
                ctx.suspend_window = Some(ctx.suspend_window.map_or(window, |w| w.max(window)));
            }
            Ok(())
        }
        Instruction::CodeChange { mode, changes } => {
            let mode = match mode.unwrap_or(Direction::Up) {
                Direction::Up => ChangeMode::Up,
                Direction::Down => ChangeMode::Down,
            };
            for (module, extra) in changes {
                let pids: Vec<Pid> =
                    ctx.suspended.iter().filter(|(m, _)| m == module).map(|(_, p)| *p).collect();
                if mode == ChangeMode::Down
                    && let Some(vsn) = node.code().staged_vsn(module)
                {
                    // The older version is not loaded yet: recorded on each process now
                    // (nothing woken), converted right after its load.
                    node.record_code_change(&pids, mode, extra, &vsn);
                    ctx.deferred_down.push((module.clone(), pids, extra.clone()));
                    continue;
                }
                for (pid, answer) in
                    node.change_code_many(&pids, mode, extra, h.node.timeouts().code_change)
                {
                    answer.map_err(|e| format!("code_change of {pid} ({module}): {e}"))?;
                }
            }
            Ok(())
        }
        Instruction::Stop(modules) => {
            for module in modules {
                for pid in node.processes_running(module) {
                    let Some((sup, id)) = node.supervisor_of(pid) else {
                        return Err(format!(
                            "{pid} runs {module} but is the top supervisor of an application: \
                             stop it with application:stop"
                        ));
                    };
                    node.terminate_child(sup, &id).map_err(|e| e.to_string())?;
                    ctx.stopped.push((module.clone(), sup, id));
                }
            }
            Ok(())
        }
        Instruction::Start(modules) => {
            let (start, keep): (Vec<_>, Vec<_>) =
                ctx.stopped.drain(..).partition(|(m, _, _)| modules.contains(m));
            ctx.stopped = keep;
            for (_, sup, id) in start {
                node.restart_child(sup, &id).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Instruction::Apply { module, function, args } => apply(h, plan, module, function, args),
        // The handler restarts the host around the script (restart.rs): before it, in a new
        // process that then runs the rest, or after it. Nothing to do in its place.
        Instruction::RestartNewEmulator | Instruction::RestartEmulator => Ok(()),
        Instruction::SyncNodes { id, nodes, timeout } => {
            sync_nodes(h, ctx.attempt.as_deref(), id, nodes, *timeout).map_err(|e| e.to_string())
        }
        other => Err(format!("{} cannot be evaluated here", other.name())),
    }
}

fn atom_arg<'a>(args: &'a [Term], i: usize, what: &str) -> Result<&'a str, String> {
    args.get(i).and_then(Term::as_atom).ok_or_else(|| format!("{what} must be an atom"))
}

/// `application:load(App)` with the `.app` of the release being installed (or left).
fn load_application(h: &ReleaseHandler, plan: &Plan, app: &str) -> Result<(), String> {
    let file = plan.app_file(h, app).ok_or_else(|| format!("no {app}.app in the releases"))?;
    let spec = AppSpec::read(&file).map_err(|e| e.to_string())?;
    h.node.load_application(spec).map_err(|e| e.to_string())
}

fn apply(
    h: &ReleaseHandler,
    plan: &Plan,
    module: &str,
    function: &str,
    args: &[Term],
) -> Result<(), String> {
    let node = &h.node;
    match (module, function) {
        ("application", "load") => load_application(h, plan, atom_arg(args, 0, "the application")?),
        ("application", "unload") => node
            .unload_application(atom_arg(args, 0, "the application")?)
            .map_err(|e| e.to_string()),
        ("application", "start") => {
            let app = atom_arg(args, 0, "the application")?;
            // application:start/2 loads an application that is not loaded yet, as OTP's
            // does: systools' relups start an added application without loading it first.
            if !node.is_application_loaded(app) {
                load_application(h, plan, app)?;
            }
            let restart = match args.get(1) {
                None => RestartType::Temporary,
                Some(t) => t
                    .as_atom()
                    .and_then(RestartType::from_atom)
                    .ok_or_else(|| format!("bad restart type {t}"))?,
            };
            node.start_application(app, restart).map_err(|e| e.to_string())
        }
        ("application", "stop") => {
            node.stop_application(atom_arg(args, 0, "the application")?).map_err(|e| e.to_string())
        }
        ("supervisor", op @ ("restart_child" | "terminate_child" | "delete_child")) => {
            let sup_name = atom_arg(args, 0, "the supervisor")?;
            let id = atom_arg(args, 1, "the child id")?;
            let sup = node
                .find_supervisor(sup_name)
                .ok_or_else(|| format!("no supervisor {sup_name}"))?;
            match op {
                "restart_child" => node.restart_child(sup, id).map(drop),
                "terminate_child" => node.terminate_child(sup, id),
                _ => node.delete_child(sup, id),
            }
            .map_err(|e| e.to_string())
        }
        _ => node.apply(module, function, args.to_vec()).map(drop),
    }
}
