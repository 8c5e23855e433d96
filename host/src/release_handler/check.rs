//! Checking an install before touching anything (SPEC §5.1).
//!
//! Stricter than OTP's check: nothing is loaded and nothing is applied. Files are inspected
//! as files (ELF header and dynamic symbols), apply targets are looked up among the
//! builtins and the functions the target files export, and every module an instruction
//! names must exist. Each problem names its place in the script as `path:line:col`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::code::elf;
use crate::code::loader;
use crate::release::files::{AppSpec, ReleaseEntry};
use crate::release::names::{lib_dir_name, root_path};
use crate::release::relup::{PurgeMethod, SyncTargets};
use crate::release::{
    Direction, Instruction, Relup, RelupEntry, Spanned, read_relup, script_problems,
};

use plugin_api::Term;

use super::integrity::Record;
use super::{ReleaseError, ReleaseHandler, State};

/// How a script restarts the host (SPEC §5.7, §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartKind {
    /// `restart_new_emulator` first: the node restarts on the release's host with the
    /// current release's applications, and the new host runs the rest of the script.
    NewEmulator,
    /// `restart_emulator` last: the script runs, then the node restarts into the release.
    Emulator,
}

/// A checked install: which script entry leads where.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The target release.
    pub vsn: String,
    /// The current release.
    pub from: String,
    /// Upgrade or downgrade.
    pub direction: Direction,
    /// The relup file the entry comes from.
    pub script: PathBuf,
    /// The entry to evaluate.
    pub entry: RelupEntry,
    /// Whether, and how, the script restarts the host.
    pub restart: Option<RestartKind>,
    pub(crate) target: ReleaseEntry,
    pub(crate) current: ReleaseEntry,
    /// The target release's integrity record.
    pub(crate) record: Record,
}

impl Plan {
    /// What `release_handler:check_install_release/1` and `install_release/1` return,
    /// `{ok, OtherVsn, Descr}`: `OtherVsn` and `Descr` are the relup entry's own
    /// (release_handler(3)), so `OtherVsn` is the release upgraded from, and on a
    /// downgrade the release downgraded *to*.
    pub fn result_term(&self) -> Term {
        Term::tuple([Term::ok(), Term::Str(self.entry.vsn.clone()), self.entry.descr.clone()])
    }

    /// Where application `app` at `app_vsn` lives: the target release's library, else
    /// the current release's, else `lib/<app>-<vsn>` if it exists.
    pub(crate) fn lib_dir(&self, h: &ReleaseHandler, app: &str, app_vsn: &str) -> Option<PathBuf> {
        [&self.target, &self.current]
            .iter()
            .flat_map(|r| r.apps.iter())
            .find(|a| a.name == app && a.vsn == app_vsn)
            .map(|a| h.lib_dir(a))
            .or_else(|| {
                let dir = root_path(&h.root, &["lib", &lib_dir_name(app, app_vsn)]).ok()?;
                dir.is_dir().then_some(dir)
            })
    }

    /// The `.app` file of `app` as the target release has it (else the current release).
    pub(crate) fn app_file(&self, h: &ReleaseHandler, app: &str) -> Option<PathBuf> {
        [&self.target, &self.current]
            .iter()
            .flat_map(|r| r.apps.iter())
            .find(|a| a.name == app)
            .map(|a| h.lib_dir(a).join(format!("{app}.app")))
    }
}

/// The builtin apply targets and their arities.
pub(crate) fn builtin_arity(module: &str, function: &str) -> Option<&'static [usize]> {
    match (module, function) {
        ("application", "load" | "unload" | "stop") => Some(&[1]),
        ("application", "start") => Some(&[1, 2]),
        ("supervisor", "restart_child" | "terminate_child" | "delete_child") => Some(&[2]),
        _ => None,
    }
}

fn read(path: PathBuf) -> Result<Option<Relup>, ReleaseError> {
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(read_relup(&path)?))
}

/// Finds the script as OTP does and checks it against the root and the running node.
/// `continuing`: the new host checks the script whose `restart_new_emulator` its
/// predecessor carried out ([`ReleaseHandler::continue_install`]).
pub(crate) fn plan(
    h: &ReleaseHandler,
    state: &State,
    vsn: &str,
    continuing: bool,
) -> Result<Plan, ReleaseError> {
    let target = h
        .entry(&state.releases, vsn)
        .ok_or_else(|| ReleaseError::UnknownRelease { vsn: vsn.to_owned() })?;
    if state.current == vsn {
        return Err(ReleaseError::AlreadyCurrent { vsn: vsn.to_owned() });
    }
    let current = h
        .entry(&state.releases, &state.current)
        .ok_or_else(|| ReleaseError::UnknownRelease { vsn: state.current.clone() })?;
    let up = h.release_dir(vsn)?.join("relup");
    let down = h.release_dir(&state.current)?.join("relup");
    // A relup lives in the directory of the release it leads to (OTP's `releases/<Vsn>/relup`
    // with `{Vsn, Up, Down}`): one that names another release is not this release's script.
    let own = |path: &PathBuf, dir_vsn: &str| -> Result<Option<Relup>, ReleaseError> {
        match read(path.clone())? {
            Some(relup) if relup.vsn != dir_vsn => Err(ReleaseError::Check {
                vsn: vsn.to_owned(),
                problems: vec![format!(
                    "{}: the relup is for release \"{}\", but it lives in the directory of release \"{dir_vsn}\"",
                    path.display(),
                    relup.vsn
                )],
            }),
            other => Ok(other),
        }
    };
    let (direction, script, entry) = if let Some(entry) =
        own(&up, vsn)?.and_then(|r| r.entry_for(&state.current, Direction::Up).cloned())
    {
        (Direction::Up, up, entry)
    } else if let Some(entry) =
        own(&down, &state.current)?.and_then(|r| r.entry_for(vsn, Direction::Down).cloned())
    {
        (Direction::Down, down, entry)
    } else {
        return Err(ReleaseError::NoScript {
            from: state.current.clone(),
            to: vsn.to_owned(),
            up,
            down,
        });
    };
    let restart = restart_kind(&entry.instructions);
    // A release on another host is reached only by restarting the node on that host.
    if restart.is_none() {
        super::check_host_vsn(vsn, &target.host_vsn)?;
    }
    let plan = Plan {
        vsn: vsn.to_owned(),
        from: state.current.clone(),
        direction,
        script,
        entry,
        restart,
        target,
        current,
        record: h.record(state, vsn),
    };
    let mut problems = problems(h, &plan);
    if !continuing {
        problems.extend(restart_problems(h, &plan));
    }
    if !problems.is_empty() {
        return Err(ReleaseError::Check { vsn: vsn.to_owned(), problems });
    }
    Ok(plan)
}

fn problems(h: &ReleaseHandler, plan: &Plan) -> Vec<String> {
    let script = &plan.script;
    let mut problems: Vec<String> = script_problems(script, &plan.entry.instructions)
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    let node = &h.node;
    let code = node.code();
    let loaded: BTreeSet<String> = code
        .status()
        .modules
        .into_iter()
        .filter(|m| m.current.is_some() || m.old.is_some())
        .map(|m| m.name)
        .collect();
    // Modules the script stages, with the functions their files export for apply.
    let mut staged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let has_point =
        plan.entry.instructions.iter().any(|i| matches!(i.value, Instruction::PointOfNoReturn));
    let mut seen_point = false;
    for spanned in &plan.entry.instructions {
        let at = format!("{}:{}", script.display(), spanned.pos);
        let mut problem = |msg: String| problems.push(format!("{at}: {msg}"));
        let known = |m: &str, staged: &BTreeMap<String, Vec<String>>| {
            loaded.contains(m) || staged.contains_key(m)
        };
        match &spanned.value {
            Instruction::PointOfNoReturn => seen_point = true,
            Instruction::LoadObjectCode { app, app_vsn, modules } => {
                let Some(dir) = plan.lib_dir(h, app, app_vsn) else {
                    problem(format!(
                        "application {app} {app_vsn} is in neither release {} nor {} (no lib/{app}-{app_vsn})",
                        plan.vsn, plan.from
                    ));
                    continue;
                };
                let app_file = dir.join(format!("{app}.app"));
                let listed = match h.trusted(&app_file).and_then(|()| Ok(AppSpec::read(&app_file)?))
                {
                    Ok(spec) => Some(spec.modules),
                    Err(e) => {
                        problem(format!("application {app} {app_vsn}: {e}"));
                        None
                    }
                };
                for module in modules {
                    if let Some(listed) = &listed
                        && !listed.contains(module)
                    {
                        problem(format!(
                            "module {module} is not a module of {app} {app_vsn}: {} lists [{}]",
                            app_file.display(),
                            listed.join(", ")
                        ));
                    }
                    let file = dir.join(format!("{module}.so"));
                    if let Err(e) = h.trusted(&file) {
                        problem(format!("module {module}: {e}"));
                        continue;
                    }
                    match elf::inspect_plugin(&file) {
                        Ok(found) => {
                            staged.insert(module.clone(), found.apply_functions);
                        }
                        Err(kind) => {
                            problem(format!("module {module}: {}: {kind}", file.display()))
                        }
                    }
                    match h.expected_hash(&plan.record, &file) {
                        Ok(None) => {}
                        Ok(Some(expected)) => match loader::sha256_file(&file) {
                            Ok(found) if found == expected => {}
                            Ok(found) => problem(format!(
                                "module {module}: {}: SHA-256 {} differs from the recorded {}",
                                file.display(),
                                loader::hex(&found),
                                loader::hex(&expected)
                            )),
                            Err(e) => problem(format!("module {module}: {}: {e}", file.display())),
                        },
                        Err(why) => problem(format!("module {module}: {why}")),
                    }
                }
            }
            // First, where the structural checks want it: the node restarts before the rest.
            Instruction::RestartNewEmulator => {}
            other
                if has_point && !seen_point && !matches!(other, Instruction::SyncNodes { .. }) =>
            {
                problem(format!(
                    "{} before point_of_no_return: only load_object_code may come before it",
                    other.name()
                ));
            }
            Instruction::Load { module, pre, .. } | Instruction::Remove { module, pre, .. } => {
                if *pre == PurgeMethod::SoftPurge && !loaded_old_is_free(h, module) {
                    problem(format!("old_processes {module}: its old code is in use (soft_purge)"));
                }
            }
            Instruction::Purge(modules)
            | Instruction::Resume(modules)
            | Instruction::Stop(modules)
            | Instruction::Start(modules) => {
                for m in modules.iter().filter(|m| !known(m, &staged)) {
                    problem(format!("unknown module {m}"));
                }
            }
            Instruction::Suspend(list) => {
                for (m, _) in list.iter().filter(|(m, _)| !known(m, &staged)) {
                    problem(format!("unknown module {m}"));
                }
            }
            Instruction::CodeChange { changes, .. } => {
                for (m, _) in changes.iter().filter(|(m, _)| !known(m, &staged)) {
                    problem(format!("unknown module {m}"));
                }
            }
            Instruction::Apply { module, function, args } => {
                if let Some(arities) = builtin_arity(module, function) {
                    if !arities.contains(&args.len()) {
                        problem(format!(
                            "{module}:{function} takes {arities:?} arguments, not {}",
                            args.len()
                        ));
                    } else if module == "application"
                        && matches!(function.as_str(), "load" | "start")
                    {
                        // application:start loads an application that is not loaded yet.
                        match args[0].as_atom() {
                            Some(app) if plan.app_file(h, app).is_some_and(|f| f.exists()) => {}
                            Some(app) if node.is_application_loaded(app) => {}
                            Some(app) => problem(format!(
                                "application:{function}: no {app}.app in release {} or {}",
                                plan.vsn, plan.from
                            )),
                            None => problem(format!(
                                "application:{function} needs an atom, got {}",
                                args[0]
                            )),
                        }
                    }
                } else if let Some(functions) = staged.get(module.as_str()) {
                    if !functions.iter().any(|f| f == function) {
                        problem(format!(
                            "unknown apply target {module}:{function}: the staged {module} exports [{}]",
                            functions.join(", ")
                        ));
                    }
                } else if !code.exports(module, function) {
                    problem(format!("unknown apply target {module}:{function}"));
                }
            }
            // Checked once for the script, by `restart_problems`.
            Instruction::RestartEmulator => {}
            Instruction::SyncNodes { nodes, .. } => {
                if h.cluster().is_none() {
                    problem(
                        "sync_nodes needs a cluster, and this node is in none (SPEC §12): boot it \
                         with hotcode boot ROOT --cluster URL --node NAME"
                            .to_owned(),
                    );
                }
                if let SyncTargets::Apply { module, function, args } = nodes {
                    let builtin = module == "hotcode" && function == "nodes" && args.is_empty();
                    let exported = staged
                        .get(module.as_str())
                        .is_some_and(|functions| functions.iter().any(|f| f == function))
                        || code.exports(module, function);
                    if !builtin && !exported {
                        problem(format!(
                            "unknown sync_nodes target {module}:{function}: neither hotcode:nodes() \
                             nor a function a loaded or staged module exports for apply"
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// Whether the script restarts the host: `restart_new_emulator` as its first instruction,
/// or `restart_emulator` as its last (anywhere else the structural checks refuse them).
fn restart_kind(instructions: &[Spanned<Instruction>]) -> Option<RestartKind> {
    if instructions.iter().any(|i| i.value == Instruction::RestartNewEmulator) {
        Some(RestartKind::NewEmulator)
    } else if instructions.iter().any(|i| i.value == Instruction::RestartEmulator) {
        Some(RestartKind::Emulator)
    } else {
        None
    }
}

/// What a host restart needs: one restart per script, a node that can restart its host,
/// and the target release's host binary (present, trusted, recorded).
fn restart_problems(h: &ReleaseHandler, plan: &Plan) -> Vec<String> {
    let Some(kind) = plan.restart else { return Vec::new() };
    let script = &plan.script;
    let at = |wanted: &Instruction| {
        plan.entry.instructions.iter().find(|i| &i.value == wanted).map_or_else(
            || script.display().to_string(),
            |i| format!("{}:{}", script.display(), i.pos),
        )
    };
    let mut problems = Vec::new();
    let instruction = match kind {
        RestartKind::NewEmulator => Instruction::RestartNewEmulator,
        RestartKind::Emulator => Instruction::RestartEmulator,
    };
    let here = at(&instruction);
    if kind == RestartKind::NewEmulator
        && plan.entry.instructions.iter().any(|i| i.value == Instruction::RestartEmulator)
    {
        problems.push(format!(
            "{}: restart_emulator after restart_new_emulator (at {here}): hotcode restarts the \
             host once per install; the new host already runs the rest of the script",
            at(&Instruction::RestartEmulator)
        ));
    }
    match h.restart_exe() {
        None => problems.push(format!(
            "{here}: {} needs a node that can restart its host, and this one cannot (no host \
             restart is configured; hotcode boot configures one)",
            instruction.name()
        )),
        Some(exe) => {
            if let Err(e) = h.host_binary(&exe, &plan.target.host_vsn, &plan.record) {
                problems.push(format!(
                    "{here}: {}: release {} runs on hotcode {}: {e}",
                    instruction.name(),
                    plan.vsn,
                    plan.target.host_vsn
                ));
            }
        }
    }
    problems
}

/// True if module `m` has no old code, or nobody holds it.
fn loaded_old_is_free(h: &ReleaseHandler, m: &str) -> bool {
    match h.node.code().holders(m) {
        Ok(holders) => holders.old.is_none_or(|old| old.holders.is_empty()),
        Err(_) => true,
    }
}
