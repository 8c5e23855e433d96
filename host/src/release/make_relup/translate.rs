//! The translation itself: each changed application's appup script expanded into low-level
//! instructions as `systools_rc` does, and the scripts merged into one relup in systools'
//! order (object code first, then the point of no return, then each application's part).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use plugin_api::Term;

use super::dep_order::{dependency_order, weak_components};
use super::releases::{App, Changed, Release};
use super::{MakeRelupError, MakeRelupErrorKind};
use crate::release::appup::{AppupInstruction, Change, ModType, StartType, Update};
use crate::release::relup::{Direction, Instruction, PurgeMethod};
use crate::release::terms::Pos;

/// Where an instruction of the generated script comes from, for messages.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// The appup, the `.rel` (for an application added or removed) or the relup itself.
    pub(super) path: PathBuf,
    pub(super) pos: Option<Pos>,
    /// The instruction as written in the appup, or the one a release difference implies;
    /// `None` for what the generator adds on its own (`point_of_no_return`).
    pub(super) text: Option<String>,
}

impl Origin {
    pub(super) fn error(&self, kind: MakeRelupErrorKind) -> MakeRelupError {
        MakeRelupError {
            path: self.path.clone(),
            pos: self.pos,
            instruction: self.text.clone(),
            kind: Box::new(kind),
        }
    }

    /// The place and the instruction, for a message about another instruction.
    pub(super) fn describe(&self) -> String {
        let place = match self.pos {
            Some(pos) => format!("{}:{pos}", self.path.display()),
            None => self.path.display().to_string(),
        };
        match &self.text {
            Some(text) => format!("{text} at {place}"),
            None => place,
        }
    }
}

/// A high-level instruction of one of the merged scripts, with its origin and the
/// application whose appup (or release difference) it comes from.
pub(super) struct Sourced {
    pub(super) instruction: AppupInstruction,
    pub(super) origin: Origin,
    pub(super) app: String,
}

/// An instruction after the expansion of the application-level ones: either one that takes
/// part in the DepMods ordering, or a low-level one that stays where it is.
pub(super) enum Step {
    Dep(DepStep),
    Low(Instruction),
}

/// `update`, `load_module` (and `add_module`, which is one) or `delete_module`.
pub(super) struct DepStep {
    pub(super) module: String,
    pub(super) action: DepAction,
    pub(super) dep_mods: Vec<String>,
}

pub(super) enum DepAction {
    Update {
        update: Update,
        /// The application and version whose object code to load.
        lib: (String, String),
    },
    Load {
        pre: PurgeMethod,
        post: PurgeMethod,
        lib: (String, String),
    },
    Delete,
}

/// Low-level instructions, each with its origin.
pub(super) type Script = Vec<(Instruction, Origin)>;

/// The making of one direction's script.
pub(super) struct Translation<'a> {
    pub(super) direction: Direction,
    /// The release the script leads to: the code it loads is this release's.
    pub(super) target: &'a Release,
    /// The release the script leaves.
    pub(super) leaving: &'a Release,
    /// The relup being made, for the instructions the generator adds on its own.
    pub(super) relup: &'a Path,
}

impl Translation<'_> {
    /// The whole low-level script, each instruction with its origin.
    pub(super) fn script(&self, changed: &[Changed]) -> Result<Script, MakeRelupError> {
        let (before, after) = self.merged_scripts(changed)?;
        let mut steps = Vec::new();
        for sourced in &after {
            for step in self.expand(sourced)? {
                steps.push((step, sourced.origin.clone()));
            }
        }
        let (generated, after) = self.translate_dependent(steps)?;
        let mut script = merge_object_code(before.into_iter().chain(generated))?;
        script.push((
            Instruction::PointOfNoReturn,
            Origin { path: self.relup.to_path_buf(), pos: None, text: None },
        ));
        script.extend(after);
        Ok(script)
    }

    /// The scripts of this direction in `systools`' order (see the module documentation),
    /// merged: the `load_object_code` instructions written in them, and everything else that
    /// goes after the point of no return.
    pub(super) fn merged_scripts(
        &self,
        changed: &[Changed],
    ) -> Result<(Script, Vec<Sourced>), MakeRelupError> {
        let removed: Vec<&App> =
            self.leaving.apps.iter().filter(|app| self.target.app(&app.name).is_none()).collect();
        let remove = |app: &App| {
            vec![implied(
                AppupInstruction::RemoveApplication { app: app.name.clone() },
                &self.target.rel_path,
                &app.name,
                format!("{{remove_application, {}}}", app.name),
            )]
        };
        // systools_relup: the added applications' scripts, then the appup scripts (in the
        // boot order, `changed`'s), then the removed applications' scripts, each group in
        // its release's `.rel` order.
        let mut scripts: Vec<Vec<Sourced>> = Vec::new();
        for app in self.target.apps.iter().filter(|app| self.leaving.app(&app.name).is_none()) {
            let start = self.target.start_type(app);
            scripts.push(vec![implied(
                AppupInstruction::AddApplication { app: app.name.clone(), start },
                &self.target.rel_path,
                &app.name,
                format!("{{add_application, {}, {start}}}", app.name),
            )]);
        }
        for changed in changed {
            scripts.push(self.appup_script(changed)?);
        }
        for app in removed {
            scripts.push(remove(app));
        }

        let mut before = Vec::new();
        let mut after = Vec::new();
        for script in scripts {
            let point = script.iter().position(|s| is_point_of_no_return(&s.instruction));
            let first_point = point.and_then(|point| script[point].origin.pos);
            for (index, sourced) in script.into_iter().enumerate() {
                let past_point = point.is_none_or(|point| index > point);
                match &sourced.instruction {
                    AppupInstruction::Low(code @ Instruction::LoadObjectCode { .. }) => {
                        before.push((code.clone(), sourced.origin));
                    }
                    _ if Some(index) == point => {}
                    AppupInstruction::Low(Instruction::PointOfNoReturn) => {
                        return Err(sourced.origin.error(
                            MakeRelupErrorKind::DuplicatePointOfNoReturn {
                                first: first_point.unwrap_or(Pos::new(0, 0)),
                            },
                        ));
                    }
                    instruction if !past_point => {
                        return Err(sourced.origin.error(
                            MakeRelupErrorKind::BeforePointOfNoReturn {
                                name: name_of(instruction),
                            },
                        ));
                    }
                    _ => after.push(sourced),
                }
            }
        }
        Ok((before, after))
    }

    /// The entry of `changed`'s appup for this direction, each instruction with its origin.
    pub(super) fn appup_script(&self, changed: &Changed) -> Result<Vec<Sourced>, MakeRelupError> {
        let Some(entry) = changed.appup.entry_for(&changed.old_vsn, self.direction) else {
            let pos = match self.direction {
                Direction::Up => changed.appup.up_pos,
                Direction::Down => changed.appup.down_pos,
            };
            return Err(MakeRelupError::new(
                &changed.path,
                Some(pos),
                MakeRelupErrorKind::NoEntry {
                    app: changed.app.clone(),
                    direction: self.direction,
                    old_vsn: changed.old_vsn.clone(),
                    new_vsn: changed.new_vsn.clone(),
                },
            ));
        };
        Ok(entry
            .instructions
            .iter()
            .map(|item| Sourced {
                instruction: item.instruction.clone(),
                origin: Origin {
                    path: changed.path.clone(),
                    pos: Some(item.pos),
                    text: Some(item.text.clone()),
                },
                app: changed.app.clone(),
            })
            .collect())
    }

    /// The steps one high-level instruction stands for: the application-level instructions
    /// become module steps and applies; the module-level ones get the library to load from.
    pub(super) fn expand(&self, sourced: &Sourced) -> Result<Vec<Step>, MakeRelupError> {
        let error = |kind| sourced.origin.error(kind);
        let load = |module: &str, pre, post, dep_mods: &[String]| -> Result<Step, MakeRelupError> {
            Ok(Step::Dep(DepStep {
                module: module.to_owned(),
                action: DepAction::Load { pre, post, lib: self.lib_of(sourced, module)? },
                dep_mods: dep_mods.to_vec(),
            }))
        };
        let apply = |function: &str, args: Vec<Term>| {
            Step::Low(Instruction::Apply {
                module: "application".to_owned(),
                function: function.to_owned(),
                args,
            })
        };
        let brutal = PurgeMethod::BrutalPurge;
        Ok(match &sourced.instruction {
            AppupInstruction::Update(update) => vec![Step::Dep(DepStep {
                module: update.module.clone(),
                action: DepAction::Update {
                    update: update.clone(),
                    lib: self.lib_of(sourced, &update.module)?,
                },
                dep_mods: update.dep_mods.clone(),
            })],
            AppupInstruction::LoadModule { module, pre, post, dep_mods } => {
                vec![load(module, *pre, *post, dep_mods)?]
            }
            AppupInstruction::AddModule { module, dep_mods } => {
                vec![load(module, brutal, brutal, dep_mods)?]
            }
            AppupInstruction::DeleteModule { module, dep_mods } => {
                if self.leaving.owner_of(module, &sourced.app).is_none() {
                    return Err(error(self.unknown_module(self.leaving, sourced, module)));
                }
                vec![Step::Dep(DepStep {
                    module: module.clone(),
                    action: DepAction::Delete,
                    dep_mods: dep_mods.clone(),
                })]
            }
            AppupInstruction::AddApplication { app, start } => {
                let Some(added) = self.target.app(app) else {
                    return Err(error(MakeRelupErrorKind::ApplicationNotInRelease {
                        app: app.clone(),
                        release: self.target.vsn.clone(),
                        action: "added",
                    }));
                };
                let mut steps = Vec::new();
                for module in &added.spec.modules {
                    steps.push(Step::Dep(DepStep {
                        module: module.clone(),
                        action: DepAction::Load {
                            pre: brutal,
                            post: brutal,
                            lib: (added.name.clone(), added.vsn.clone()),
                        },
                        dep_mods: Vec::new(),
                    }));
                }
                steps.extend(start_steps(app, *start));
                steps
            }
            AppupInstruction::RemoveApplication { app } => {
                if self.target.app(app).is_some() {
                    return Err(error(MakeRelupErrorKind::ApplicationStillInRelease {
                        app: app.clone(),
                        release: self.target.vsn.clone(),
                    }));
                }
                let Some(removed) = self.leaving.app(app) else {
                    return Err(error(MakeRelupErrorKind::ApplicationNotInRelease {
                        app: app.clone(),
                        release: self.leaving.vsn.clone(),
                        action: "removed",
                    }));
                };
                let mut steps = Vec::new();
                // systools stops and unloads every removed application and lets the
                // release handler ignore what fails; hotcode fails a script on a failed
                // apply (SPEC §9), so it stops only what the release started (an included
                // application's processes are its includer's to take down) and unloads
                // only what it loaded.
                let start = self.leaving.start_type(removed);
                if start.starts() {
                    steps.push(apply("stop", vec![Term::atom(app)]));
                }
                steps.extend(removed_modules(&removed.spec.modules));
                if start != StartType::None {
                    steps.push(apply("unload", vec![Term::atom(app)]));
                }
                steps
            }
            AppupInstruction::RestartApplication { app } => {
                let (Some(old), Some(new)) = (self.leaving.app(app), self.target.app(app)) else {
                    let release = match self.leaving.app(app) {
                        None => &self.leaving.vsn,
                        Some(_) => &self.target.vsn,
                    };
                    return Err(error(MakeRelupErrorKind::ApplicationNotInRelease {
                        app: app.clone(),
                        release: release.clone(),
                        action: "restarted",
                    }));
                };
                let includer = self.leaving.includer_of(app).or(self.target.includer_of(app));
                if let Some(includer) = includer {
                    return Err(error(MakeRelupErrorKind::IncludedRestart {
                        app: app.clone(),
                        includer: includer.name.clone(),
                    }));
                }
                let mut steps = vec![apply("stop", vec![Term::atom(app)])];
                steps.extend(removed_modules(&old.spec.modules));
                for module in &new.spec.modules {
                    steps.push(Step::Dep(DepStep {
                        module: module.clone(),
                        action: DepAction::Load {
                            pre: brutal,
                            post: brutal,
                            lib: (new.name.clone(), new.vsn.clone()),
                        },
                        dep_mods: Vec::new(),
                    }));
                }
                steps.extend(start_steps(app, self.target.start_type(new)));
                steps
            }
            AppupInstruction::Low(instruction) => match instruction {
                Instruction::RestartNewEmulator | Instruction::RestartEmulator => {
                    return Err(error(MakeRelupErrorKind::Unsupported {
                        name: instruction.name(),
                        why: "hotcode restarts a node through its service manager, not a relup",
                    }));
                }
                other => vec![Step::Low(other.clone())],
            },
        })
    }

    /// The application and version whose object code `module` is loaded from: the target
    /// release's version of the application that has it.
    pub(super) fn lib_of(
        &self,
        sourced: &Sourced,
        module: &str,
    ) -> Result<(String, String), MakeRelupError> {
        match self.target.owner_of(module, &sourced.app) {
            Some(app) => Ok((app.name.clone(), app.vsn.clone())),
            None => Err(sourced.origin.error(self.unknown_module(self.target, sourced, module))),
        }
    }

    pub(super) fn unknown_module(
        &self,
        release: &Release,
        sourced: &Sourced,
        module: &str,
    ) -> MakeRelupErrorKind {
        MakeRelupErrorKind::UnknownModule {
            module: module.to_owned(),
            app: sourced.app.clone(),
            vsn: release.app(&sourced.app).map_or_else(String::new, |app| app.vsn.clone()),
        }
    }

    /// Translates the module steps into low-level instructions in DepMods order (see the
    /// module documentation), leaving the low-level steps where they are. Returns the
    /// `load_object_code` instructions the loads need, and the instructions that follow the
    /// point of no return.
    pub(super) fn translate_dependent(
        &self,
        steps: Vec<(Step, Origin)>,
    ) -> Result<(Script, Script), MakeRelupError> {
        // The graph's nodes are the module steps, numbered in script order.
        let nodes: Vec<(usize, &DepStep, &Origin)> = steps
            .iter()
            .enumerate()
            .filter_map(|(index, (step, origin))| match step {
                Step::Dep(step) => Some((index, step, origin)),
                Step::Low(_) => None,
            })
            .collect();
        let mut by_module: HashMap<&str, usize> = HashMap::new();
        for (node, &(_, step, origin)) in nodes.iter().enumerate() {
            if let Some(&first) = by_module.get(step.module.as_str()) {
                return Err(origin.error(MakeRelupErrorKind::DuplicateModule {
                    module: step.module.clone(),
                    first: nodes[first].2.describe(),
                }));
            }
            by_module.insert(&step.module, node);
        }
        let mut edges: Vec<Vec<usize>> = Vec::with_capacity(nodes.len());
        for &(_, step, origin) in &nodes {
            let targets = step.dep_mods.iter().map(|dependency| {
                by_module.get(dependency.as_str()).copied().ok_or_else(|| {
                    origin.error(MakeRelupErrorKind::UndefinedDependency {
                        module: step.module.clone(),
                        dependency: dependency.clone(),
                    })
                })
            });
            edges.push(targets.collect::<Result<_, _>>()?);
        }
        let order = dependency_order(&edges);
        let component = weak_components(&edges);

        // Each group is translated where its first step is written; low-level steps stay
        // where they are.
        let mut object_code = Vec::new();
        let mut after = Vec::new();
        let mut translated = vec![false; component.len()];
        let mut node_at = vec![None; steps.len()];
        for (node, &(index, ..)) in nodes.iter().enumerate() {
            node_at[index] = Some(node);
        }
        for ((step, origin), node) in steps.iter().zip(node_at) {
            match (step, node) {
                (Step::Low(instruction), _) => after.push((instruction.clone(), origin.clone())),
                (Step::Dep(_), Some(node)) => {
                    if std::mem::replace(&mut translated[component[node]], true) {
                        continue;
                    }
                    let group: Vec<(&DepStep, &Origin)> = order
                        .iter()
                        .filter(|&&other| component[other] == component[node])
                        .map(|&other| (nodes[other].1, nodes[other].2))
                        .collect();
                    self.translate_group(&group, &mut object_code, &mut after);
                }
                // Every module step is a node; this arm only completes the match.
                (Step::Dep(_), None) => {}
            }
        }
        Ok((object_code, after))
    }

    /// Translates one group of connected module steps, given in dependency order.
    pub(super) fn translate_group(
        &self,
        group: &[(&DepStep, &Origin)],
        object_code: &mut Script,
        after: &mut Script,
    ) {
        let updates: Vec<(&DepStep, &Update, &Origin)> = group
            .iter()
            .filter_map(|&(step, origin)| match &step.action {
                DepAction::Update { update, .. } => Some((step, update, origin)),
                _ => None,
            })
            .collect();
        // Each step's own instructions: a load, or a remove and its purge.
        let mut units: Vec<Vec<(Instruction, Origin)>> = Vec::new();
        for &(step, origin) in group {
            let module = step.module.clone();
            let unit = match &step.action {
                DepAction::Update { update, lib } => {
                    object_code.push((object_code_of(lib, &module), origin.clone()));
                    vec![Instruction::Load { module, pre: update.pre, post: update.post }]
                }
                DepAction::Load { pre, post, lib } => {
                    object_code.push((object_code_of(lib, &module), origin.clone()));
                    vec![Instruction::Load { module, pre: *pre, post: *post }]
                }
                DepAction::Delete => vec![
                    Instruction::Remove {
                        module: module.clone(),
                        pre: PurgeMethod::BrutalPurge,
                        post: PurgeMethod::BrutalPurge,
                    },
                    Instruction::Purge(vec![module]),
                ],
            };
            units.push(unit.into_iter().map(|i| (i, origin.clone())).collect());
        }
        let origin = updates.first().map(|(_, _, origin)| (*origin).clone());
        let tagged = |instruction: Option<Instruction>| match (instruction, &origin) {
            (Some(instruction), Some(origin)) => Some((instruction, origin.clone())),
            _ => None,
        };
        let code_change = |statics: Option<bool>| {
            let changes: Vec<(String, Term)> = updates
                .iter()
                .filter(|(_, update, _)| {
                    statics.is_none_or(|statics| (update.mod_type == ModType::Static) == statics)
                })
                .filter_map(|(step, update, _)| match &update.change {
                    Change::Advanced(extra) => Some((step.module.clone(), extra.clone())),
                    Change::Soft => None,
                })
                .collect();
            let mode = Some(self.direction);
            tagged((!changes.is_empty()).then_some(Instruction::CodeChange { mode, changes }))
        };
        let suspended =
            updates.iter().map(|(step, update, _)| (step.module.clone(), update.timeout));
        after.extend(tagged(Some(Instruction::Suspend(suspended.collect()))));
        match self.direction {
            Direction::Up => {
                after.extend(units.into_iter().rev().flatten());
                after.extend(code_change(None));
            }
            Direction::Down => {
                after.extend(code_change(Some(false)));
                after.extend(units.into_iter().flatten());
                after.extend(code_change(Some(true)));
            }
        }
        let resumed = updates.iter().rev().map(|(step, _, _)| step.module.clone());
        after.extend(tagged(Some(Instruction::Resume(resumed.collect()))));
    }
}

/// What makes an application loaded or started as `start` says, as systools writes it:
/// `application:start(App, Type)` (which loads it first), `application:load(App)` for
/// `load`, nothing for `none`.
pub(super) fn start_steps(app: &str, start: StartType) -> Vec<Step> {
    let apply = |function: &str, args: Vec<Term>| {
        Step::Low(Instruction::Apply {
            module: "application".to_owned(),
            function: function.to_owned(),
            args,
        })
    };
    match start {
        StartType::None => Vec::new(),
        StartType::Load => vec![apply("load", vec![Term::atom(app)])],
        _ => vec![apply("start", vec![Term::atom(app), Term::atom(start.as_str())])],
    }
}

/// A high-level instruction that the difference between the releases implies.
pub(super) fn implied(
    instruction: AppupInstruction,
    rel: &Path,
    app: &str,
    text: String,
) -> Sourced {
    Sourced {
        instruction,
        origin: Origin { path: rel.to_path_buf(), pos: None, text: Some(text) },
        app: app.to_owned(),
    }
}

pub(super) fn is_point_of_no_return(instruction: &AppupInstruction) -> bool {
    matches!(instruction, AppupInstruction::Low(Instruction::PointOfNoReturn))
}

/// The name an instruction starts with, for messages.
pub(super) fn name_of(instruction: &AppupInstruction) -> &'static str {
    match instruction {
        AppupInstruction::Update(_) => "update",
        AppupInstruction::LoadModule { .. } => "load_module",
        AppupInstruction::AddModule { .. } => "add_module",
        AppupInstruction::DeleteModule { .. } => "delete_module",
        AppupInstruction::AddApplication { .. } => "add_application",
        AppupInstruction::RemoveApplication { .. } => "remove_application",
        AppupInstruction::RestartApplication { .. } => "restart_application",
        AppupInstruction::Low(instruction) => instruction.name(),
    }
}

/// `remove` of each module, then one `purge` of them all, as `systools` writes a
/// `remove_application`.
pub(super) fn removed_modules(modules: &[String]) -> Vec<Step> {
    let brutal = PurgeMethod::BrutalPurge;
    let mut steps: Vec<Step> = modules
        .iter()
        .map(|module| {
            Step::Low(Instruction::Remove { module: module.clone(), pre: brutal, post: brutal })
        })
        .collect();
    steps.push(Step::Low(Instruction::Purge(modules.to_vec())));
    steps
}

pub(super) fn object_code_of((app, app_vsn): &(String, String), module: &str) -> Instruction {
    Instruction::LoadObjectCode {
        app: app.clone(),
        app_vsn: app_vsn.clone(),
        modules: vec![module.to_owned()],
    }
}

/// Merges the `load_object_code` instructions into one per application, in the order the
/// applications first appear, each listing its modules once in the order they first
/// appear. One script can only load one version of an application.
pub(super) fn merge_object_code(
    instructions: impl Iterator<Item = (Instruction, Origin)>,
) -> Result<Script, MakeRelupError> {
    let mut merged: Script = Vec::new();
    for (instruction, origin) in instructions {
        let Instruction::LoadObjectCode { app, app_vsn, modules } = instruction else {
            continue;
        };
        let known = merged.iter_mut().find_map(|(merged, _)| match merged {
            Instruction::LoadObjectCode { app: known, app_vsn, modules } if *known == app => {
                Some((app_vsn, modules))
            }
            _ => None,
        });
        match known {
            Some((known_vsn, _)) if *known_vsn != app_vsn => {
                return Err(origin.error(MakeRelupErrorKind::ConflictingVersions {
                    app,
                    first: known_vsn.clone(),
                    second: app_vsn,
                }));
            }
            Some((_, known_modules)) => {
                for module in modules {
                    if !known_modules.contains(&module) {
                        known_modules.push(module);
                    }
                }
            }
            None => {
                let mut unique: Vec<String> = Vec::with_capacity(modules.len());
                for module in modules {
                    if !unique.contains(&module) {
                        unique.push(module);
                    }
                }
                merged
                    .push((Instruction::LoadObjectCode { app, app_vsn, modules: unique }, origin));
            }
        }
    }
    Ok(merged)
}
