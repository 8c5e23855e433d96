//! Evaluating a checked relup entry (SPEC §5.2–§5.5).
//!
//! Before the point of no return only object code is loaded, and any error drops
//! everything staged: the node is exactly as before. After it, instructions run in order
//! and the first error is returned as [`ReleaseError::AfterPointOfNoReturn`], which the
//! handler turns into its error action.

use std::time::{Duration, Instant};

use plugin_api::Term;

use crate::release::files::AppSpec;
use crate::release::{Direction, Instruction, Spanned};
use crate::runtime::application::RestartType;
use crate::runtime::process::{ChangeMode, Pid, ProcessError};

use super::check::Plan;
use super::{Progress, ReleaseError, ReleaseHandler, fault_point};

/// How long a `code_change` of one process may take.
const CODE_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// `infinity` for suspend, in practice.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

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
}

/// Runs the entry; returns the suspend window (first suspend to last resume), if any.
pub(crate) fn run(
    h: &ReleaseHandler,
    plan: &Plan,
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
    for (i, spanned) in before.iter().enumerate() {
        report(i);
        if let Instruction::LoadObjectCode { app, app_vsn, modules } = &spanned.value {
            let dir = plan.lib_dir(h, app, app_vsn).unwrap_or_else(|| h.root.join("lib"));
            for module in modules {
                fault_point("install: staging a module");
                if let Err(e) = h.stage(&plan.record, module, &dir.join(format!("{module}.so"))) {
                    for s in &staged {
                        h.node.code().drop_staged(s);
                    }
                    log::error!("install of {} rolled back: {e}", plan.vsn);
                    return Err(e);
                }
                staged.push(module.clone());
            }
        }
    }
    if let Some(p) = point {
        report(p);
        log::info!("point of no return ({} modules staged)", staged.len());
        switch_app_specs(h, plan);
    }
    let mut ctx = Ctx::default();
    let first_after = point.map_or(0, |p| p + 1);
    for (i, spanned) in after.iter().enumerate() {
        report(first_after + i);
        fault_point("install: an instruction after the point of no return");
        log::debug!("eval {}", spanned.value);
        if let Err(reason) = eval(h, plan, &mut ctx, spanned) {
            return Err(ReleaseError::AfterPointOfNoReturn {
                at: format!("{}:{}", plan.script.display(), spanned.pos),
                instruction: spanned.value.to_string(),
                reason,
            });
        }
    }
    Ok(ctx.suspend_window)
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
        Instruction::Load { module, pre, post } => node
            .load_module(module, (*pre).into(), (*post).into())
            .map(drop)
            .map_err(|e| e.to_string()),
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
                let timeout = timeout.duration().unwrap_or(FOREVER);
                for pid in node.processes_running(module) {
                    match node.suspend(pid, timeout) {
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
            ctx.suspended.retain(|(m, pid)| {
                if modules.contains(m) {
                    let _ = node.resume(*pid);
                    false
                } else {
                    true
                }
            });
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
                for (pid, answer) in node.change_code_many(&pids, mode, extra, CODE_CHANGE_TIMEOUT)
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
        other => Err(format!("{} cannot be evaluated here", other.name())),
    }
}

fn atom_arg<'a>(args: &'a [Term], i: usize, what: &str) -> Result<&'a str, String> {
    args.get(i).and_then(Term::as_atom).ok_or_else(|| format!("{what} must be an atom"))
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
        ("application", "load") => {
            let app = atom_arg(args, 0, "the application")?;
            let file =
                plan.app_file(h, app).ok_or_else(|| format!("no {app}.app in the releases"))?;
            let spec = AppSpec::read(&file).map_err(|e| e.to_string())?;
            node.load_application(spec).map_err(|e| e.to_string())
        }
        ("application", "unload") => node
            .unload_application(atom_arg(args, 0, "the application")?)
            .map_err(|e| e.to_string()),
        ("application", "start") => {
            let app = atom_arg(args, 0, "the application")?;
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
        _ => {
            node.code().apply(module, function, args.to_vec()).map(drop).map_err(|e| e.to_string())
        }
    }
}
