//! Application upgrade files (`<app>.appup`): how one application moves between versions.
//!
//! ```text
//! {Vsn, [{UpFromVsn, [Instruction]}], [{DownToVsn, [Instruction]}]}.
//! ```
//!
//! An appup lives beside the `.app` of the application's *new* version and says, for each
//! older version, how to upgrade from it and how to downgrade back to it. Unlike a relup it is
//! written in OTP's *high-level* instructions (`update`, `load_module`, `add_application`,
//! ...), which say what changes rather than how: [`super::make_relup()`] turns the appups of
//! every changed application into one relup of low-level instructions, in the order OTP's
//! `systools` would, so people write the short file and never the long one. Low-level
//! relup instructions are allowed in an appup too and are passed through as they are.
//!
//! This module is the second parsing stage for the file, as [`super::relup`] is for relups:
//! every instruction becomes an [`AppupInstruction`] with OTP's defaults filled in (`PrePurge`
//! and `PostPurge` `brutal_purge`, `DepMods` `[]`, `Timeout` `default`, `Change` `soft`,
//! `ModType` `dynamic`), and every error names the file, the line and column of the
//! offending term, and the form that was expected there.
//!
//! Versions are strings and match exactly. OTP also accepts a binary as a regular expression
//! over versions; hotcode does not (SPEC §9), and says so rather than reading it as
//! something else.

use std::fmt;
use std::path::Path;

use plugin_api::Term;

use super::error::{ParseError, ParseErrorKind};
use super::names::NameKind;
use super::relup::{self, Direction, Instruction, PurgeMethod, Timeout, parse_instruction};
use super::shape::Form;
use super::terms::{Pos, RawTerm, Spanned, parse_single_term, read_single_term};

/// A whole `.appup` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Appup {
    /// The application version this file upgrades to (and downgrades from).
    pub vsn: String,
    /// Where `vsn` is written, for messages about it.
    pub vsn_pos: Pos,
    /// How to upgrade from each older version.
    pub up: Vec<AppupEntry>,
    /// Where the up list starts.
    pub up_pos: Pos,
    /// How to downgrade to each older version.
    pub down: Vec<AppupEntry>,
    /// Where the down list starts.
    pub down_pos: Pos,
}

/// The instructions for one older version, up or down.
#[derive(Debug, Clone, PartialEq)]
pub struct AppupEntry {
    /// For an up entry the version upgraded from; for a down entry the version downgraded to.
    pub vsn: String,
    /// The instructions, in the order written.
    pub instructions: Vec<AppupItem>,
    /// Where the entry starts.
    pub pos: Pos,
}

/// One instruction of an appup, with where and how it was written: messages about what it
/// turns into quote the instruction as its author wrote it, not as hotcode expanded it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppupItem {
    /// The instruction, with OTP's defaults filled in.
    pub instruction: AppupInstruction,
    /// Where it starts in the file.
    pub pos: Pos,
    /// The instruction as written, in term syntax (cut short after about a line).
    pub text: String,
}

/// An appup instruction: one of OTP's high-level instructions, or a relup instruction
/// passed through.
#[derive(Debug, Clone, PartialEq)]
pub enum AppupInstruction {
    /// `{update, Mod, ...}`: synchronised code replacement of the processes that run a module
    /// (suspend them, load the new code, let them change their state, resume them).
    Update(Update),
    /// `{load_module, Mod, ...}`: simple code replacement of a module no process runs.
    LoadModule {
        /// The module.
        module: String,
        /// How to get rid of old code that is in the way.
        pre: PurgeMethod,
        /// How to get rid of the code the load makes old.
        post: PurgeMethod,
        /// The modules it depends on (see [`Update::dep_mods`]).
        dep_mods: Vec<String>,
    },
    /// `{add_module, Mod}` or `{add_module, Mod, DepMods}`: load a module that is new.
    AddModule {
        /// The module.
        module: String,
        /// The modules it depends on.
        dep_mods: Vec<String>,
    },
    /// `{delete_module, Mod}` or `{delete_module, Mod, DepMods}`: remove a module that is gone.
    DeleteModule {
        /// The module.
        module: String,
        /// The modules it depends on.
        dep_mods: Vec<String>,
    },
    /// `{add_application, App}` or `{add_application, App, Type}`: load a new application's
    /// modules and load or start it.
    AddApplication {
        /// The application.
        app: String,
        /// What to do with it once its code is loaded.
        start: StartType,
    },
    /// `{remove_application, App}`: stop an application, remove its modules, unload it.
    RemoveApplication {
        /// The application.
        app: String,
    },
    /// `{restart_application, App}`: stop an application, replace all its modules, start it.
    RestartApplication {
        /// The application.
        app: String,
    },
    /// A low-level relup instruction, passed through as it is.
    Low(Instruction),
}

/// `{update, ...}` with every default filled in, as OTP normalises it.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The module whose processes are updated.
    pub module: String,
    /// Whether the processes switch to new code by themselves (`dynamic`, every callback
    /// module) or only when told (`static`, a supervisor's own code): it decides whether a
    /// downgrade changes the state before or after loading the old code.
    pub mod_type: ModType,
    /// How long to wait for each process to suspend.
    pub timeout: Timeout,
    /// Whether the processes change their state (`{advanced, Extra}`) or not (`soft`).
    pub change: Change,
    /// How to get rid of old code that is in the way.
    pub pre: PurgeMethod,
    /// How to get rid of the code the load makes old.
    pub post: PurgeMethod,
    /// The modules this one depends on: they are loaded before it on the way up and after it
    /// on the way down, and their processes are suspended after its own.
    pub dep_mods: Vec<String>,
    /// Whether it was written `{update, Mod, supervisor}`, for messages.
    pub supervisor: bool,
}

/// How the processes of an updated module treat their state.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The state is kept as it is; no `code_change`.
    Soft,
    /// `{advanced, Extra}`: each process's `code_change` converts its state, given `Extra`.
    Advanced(Term),
}

/// OTP's `ModType` of an `update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModType {
    /// The processes switch to new code on their own, at their next call: on a downgrade
    /// the state must be converted (by the newer code, which knows both layouts) *before*
    /// the old code is loaded.
    Dynamic,
    /// The processes only switch when asked, so the new code is loaded first both ways.
    Static,
}

/// What `add_application` does with an application once its code is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    /// Load and start it, permanent.
    Permanent,
    /// Load and start it, transient.
    Transient,
    /// Load and start it, temporary.
    Temporary,
    /// Load it only (an included application, whose processes its includer starts).
    Load,
    /// Neither load nor start it: only its code is loaded.
    None,
}

impl StartType {
    /// The atom the appup syntax uses.
    pub fn as_str(self) -> &'static str {
        match self {
            StartType::Permanent => "permanent",
            StartType::Transient => "transient",
            StartType::Temporary => "temporary",
            StartType::Load => "load",
            StartType::None => "none",
        }
    }

    /// Whether the application controller starts an application of this type (rather
    /// than only loading it, or neither).
    pub fn starts(self) -> bool {
        matches!(self, StartType::Permanent | StartType::Transient | StartType::Temporary)
    }

    /// The start type named by `atom`, if it is one.
    pub fn from_atom(atom: &str) -> Option<StartType> {
        [
            StartType::Permanent,
            StartType::Transient,
            StartType::Temporary,
            StartType::Load,
            StartType::None,
        ]
        .into_iter()
        .find(|start| start.as_str() == atom)
    }
}

impl fmt::Display for StartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Appup {
    /// Parses `text`, the contents of the `.appup` file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Appup, ParseError> {
        appup_from_term(path, &parse_single_term(path, text)?)
    }

    /// Reads and parses the `.appup` file at `path`.
    pub fn read(path: &Path) -> Result<Appup, ParseError> {
        appup_from_term(path, &read_single_term(path)?)
    }

    /// The entry for `vsn` in `direction`: for [`Direction::Up`] the one that upgrades from
    /// version `vsn`, for [`Direction::Down`] the one that downgrades to it. Versions match
    /// exactly (SPEC §9).
    pub fn entry_for(&self, vsn: &str, direction: Direction) -> Option<&AppupEntry> {
        let entries = match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        };
        entries.iter().find(|entry| entry.vsn == vsn)
    }
}

const APPUP_FORM: &str = "{Vsn, [{UpFromVsn, [Instruction]}], [{DownToVsn, [Instruction]}]}";

fn appup_from_term(path: &Path, term: &Spanned<RawTerm>) -> Result<Appup, ParseError> {
    let form = Form::new(path, term, APPUP_FORM);
    let [vsn, up, down] = form.tuple(term, 3)? else {
        return Err(form.mismatch());
    };
    Ok(Appup {
        vsn: version(&form, vsn, "Vsn")?,
        vsn_pos: vsn.pos,
        up: entries(path, &form.list(up)?, Direction::Up)?,
        up_pos: up.pos,
        down: entries(path, &form.list(down)?, Direction::Down)?,
        down_pos: down.pos,
    })
}

/// A version, which must be a string; a binary (OTP's regular expression) is refused with a
/// message that says why.
fn version(form: &Form<'_>, term: &Spanned<RawTerm>, name: &str) -> Result<String, ParseError> {
    if let RawTerm::Binary(_) = term.value {
        return Err(form.error_at(
            term,
            ParseErrorKind::Invalid(format!(
                "{name} is a binary, which OTP reads as a regular expression over versions; \
                 hotcode matches versions exactly (SPEC §9): write one entry per version, as \
                 a string"
            )),
        ));
    }
    form.name(term, NameKind::Vsn, name)
}

fn entries(
    path: &Path,
    terms: &[Spanned<RawTerm>],
    direction: Direction,
) -> Result<Vec<AppupEntry>, ParseError> {
    let (expected, name) = match direction {
        Direction::Up => ("{UpFromVsn, [Instruction]}", "UpFromVsn"),
        Direction::Down => ("{DownToVsn, [Instruction]}", "DownToVsn"),
    };
    let mut entries: Vec<AppupEntry> = Vec::with_capacity(terms.len());
    for term in terms {
        let form = Form::new(path, term, expected);
        let [vsn, instructions] = form.tuple(term, 2)? else {
            return Err(form.mismatch());
        };
        let vsn = version(&form, vsn, name)?;
        if let Some(first) = entries.iter().find(|entry| entry.vsn == vsn) {
            return Err(form.error_at(
                term,
                ParseErrorKind::Invalid(format!(
                    "a second {direction} entry for version \"{vsn}\" (the first is at {}); \
                     each version may have only one",
                    first.pos
                )),
            ));
        }
        let instructions = form
            .list(instructions)?
            .iter()
            .map(|instruction| parse_appup_instruction(path, instruction))
            .collect::<Result<_, _>>()?;
        entries.push(AppupEntry { vsn, instructions, pos: term.pos });
    }
    Ok(entries)
}

const UPDATE_FORMS: &str = "{update, Mod}, {update, Mod, supervisor}, {update, Mod, Change}, \
     {update, Mod, DepMods}, {update, Mod, Change, DepMods}, \
     {update, Mod, Change, PrePurge, PostPurge, DepMods}, \
     {update, Mod, Timeout, Change, PrePurge, PostPurge, DepMods} or \
     {update, Mod, ModType, Timeout, Change, PrePurge, PostPurge, DepMods}";
const LOAD_MODULE_FORMS: &str = "{load_module, Mod}, {load_module, Mod, DepMods} or \
     {load_module, Mod, PrePurge, PostPurge, DepMods}";
const ADD_MODULE_FORMS: &str = "{add_module, Mod} or {add_module, Mod, DepMods}";
const DELETE_MODULE_FORMS: &str = "{delete_module, Mod} or {delete_module, Mod, DepMods}";
const ADD_APPLICATION_FORMS: &str = "{add_application, App} or {add_application, App, Type}";
const REMOVE_APPLICATION_FORM: &str = "{remove_application, App}";
const RESTART_APPLICATION_FORM: &str = "{restart_application, App}";

/// Parses one appup instruction: a high-level one by its name, anything else as a relup
/// instruction ([`parse_instruction`]), whose errors already name the relup forms.
pub fn parse_appup_instruction(
    path: &Path,
    term: &Spanned<RawTerm>,
) -> Result<AppupItem, ParseError> {
    let items = term.value.as_tuple().unwrap_or_default();
    let name = items.first().and_then(|first| first.value.as_atom());
    let instruction = match name {
        Some("update") => AppupInstruction::Update(update(path, term, items)?),
        Some("load_module") => load_module(&Form::new(path, term, LOAD_MODULE_FORMS), items)?,
        Some(name @ ("add_module" | "delete_module")) => {
            let expected =
                if name == "add_module" { ADD_MODULE_FORMS } else { DELETE_MODULE_FORMS };
            let form = Form::new(path, term, expected);
            let (module, dep_mods) = match items {
                [_, module] => (form.name(module, NameKind::Module, "Mod")?, Vec::new()),
                [_, module, deps] => {
                    (form.name(module, NameKind::Module, "Mod")?, dep_mods(&form, deps)?)
                }
                _ => return Err(form.mismatch()),
            };
            if name == "add_module" {
                AppupInstruction::AddModule { module, dep_mods }
            } else {
                AppupInstruction::DeleteModule { module, dep_mods }
            }
        }
        Some("add_application") => {
            let form = Form::new(path, term, ADD_APPLICATION_FORMS);
            let (app, start) = match items {
                [_, app] => (form.name(app, NameKind::App, "App")?, StartType::Permanent),
                [_, app, start] => {
                    let start =
                        start.value.as_atom().and_then(StartType::from_atom).ok_or_else(|| {
                            form.bad_part(start, "permanent, transient, temporary, load or none")
                        })?;
                    (form.name(app, NameKind::App, "App")?, start)
                }
                _ => return Err(form.mismatch()),
            };
            AppupInstruction::AddApplication { app, start }
        }
        Some(name @ ("remove_application" | "restart_application")) => {
            let remove = name == "remove_application";
            let expected = if remove { REMOVE_APPLICATION_FORM } else { RESTART_APPLICATION_FORM };
            let form = Form::new(path, term, expected);
            let [_, app] = form.tuple(term, 2)? else {
                return Err(form.mismatch());
            };
            let app = form.name(app, NameKind::App, "App")?;
            if remove {
                AppupInstruction::RemoveApplication { app }
            } else {
                AppupInstruction::RestartApplication { app }
            }
        }
        _ => AppupInstruction::Low(parse_instruction(path, term)?.value),
    };
    Ok(AppupItem { instruction, pos: term.pos, text: term.value.describe() })
}

fn update(
    path: &Path,
    term: &Spanned<RawTerm>,
    items: &[Spanned<RawTerm>],
) -> Result<Update, ParseError> {
    // A wrong number of elements is reported with every form; a wrong element is reported
    // at the element, and naming all eight forms there would bury what is wrong.
    let whole = Form::new(path, term, UPDATE_FORMS);
    let form = &Form::new(path, term, "{update, Mod, ...}");
    let mut update = Update {
        module: String::new(),
        mod_type: ModType::Dynamic,
        timeout: Timeout::Default,
        change: Change::Soft,
        pre: PurgeMethod::BrutalPurge,
        post: PurgeMethod::BrutalPurge,
        dep_mods: Vec::new(),
        supervisor: false,
    };
    let Some((_, args)) = items.split_first() else {
        return Err(whole.mismatch());
    };
    let Some((module, rest)) = args.split_first() else {
        return Err(whole.mismatch());
    };
    update.module = form.name(module, NameKind::Module, "Mod")?;
    match rest {
        [] => {}
        [third] => match &third.value {
            RawTerm::Atom(atom) if atom == "supervisor" => {
                // OTP: a supervisor is static, and its state always changes (it re-reads its
                // child specifications), with Extra [].
                update.supervisor = true;
                update.mod_type = ModType::Static;
                update.change = Change::Advanced(Term::list([]));
            }
            RawTerm::List(_) => update.dep_mods = dep_mods(form, third)?,
            _ => {
                update.change = change(form, third, "supervisor, soft, {advanced, Extra} or [Mod]")?
            }
        },
        [change_term, deps] => {
            update.change = change(form, change_term, "soft or {advanced, Extra} for Change")?;
            update.dep_mods = dep_mods(form, deps)?;
        }
        [head @ .., change_term, pre, post, deps] if head.len() <= 2 => {
            if let [mod_type, _] = head {
                update.mod_type = match mod_type.value.as_atom() {
                    Some("dynamic") => ModType::Dynamic,
                    Some("static") => ModType::Static,
                    _ => return Err(form.bad_part(mod_type, "static or dynamic for ModType")),
                };
            }
            if let Some(timeout) = head.last() {
                update.timeout = relup::timeout(form, timeout)?;
            }
            update.change = change(form, change_term, "soft or {advanced, Extra} for Change")?;
            update.pre = relup::purge_method(form, pre)?;
            update.post = relup::purge_method(form, post)?;
            update.dep_mods = dep_mods(form, deps)?;
        }
        _ => return Err(whole.mismatch()),
    }
    Ok(update)
}

fn load_module(
    form: &Form<'_>,
    items: &[Spanned<RawTerm>],
) -> Result<AppupInstruction, ParseError> {
    let (module, pre, post, dep_mods) = match items {
        [_, module] => (module, None, None, Vec::new()),
        [_, module, deps] => (module, None, None, dep_mods(form, deps)?),
        [_, module, pre, post, deps] => (module, Some(pre), Some(post), dep_mods(form, deps)?),
        _ => return Err(form.mismatch()),
    };
    let purge = |term: Option<&Spanned<RawTerm>>| match term {
        Some(term) => relup::purge_method(form, term),
        None => Ok(PurgeMethod::BrutalPurge),
    };
    Ok(AppupInstruction::LoadModule {
        module: form.name(module, NameKind::Module, "Mod")?,
        pre: purge(pre)?,
        post: purge(post)?,
        dep_mods,
    })
}

fn change(form: &Form<'_>, term: &Spanned<RawTerm>, wanted: &str) -> Result<Change, ParseError> {
    match &term.value {
        RawTerm::Atom(atom) if atom == "soft" => Ok(Change::Soft),
        RawTerm::Tuple(items) => match items.as_slice() {
            [tag, extra] if tag.value.is_atom("advanced") => {
                Ok(Change::Advanced(extra.value.to_term()))
            }
            _ => Err(form.bad_part(term, wanted)),
        },
        _ => Err(form.bad_part(term, wanted)),
    }
}

fn dep_mods(form: &Form<'_>, term: &Spanned<RawTerm>) -> Result<Vec<String>, ParseError> {
    match term.value.as_list() {
        Some(items) => items
            .iter()
            .map(|item| form.name(item, NameKind::Module, "a module in DepMods"))
            .collect(),
        None => Err(form.bad_part(term, "[Mod] for DepMods")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use PurgeMethod::{BrutalPurge, SoftPurge};

    fn path() -> &'static Path {
        Path::new("lib/a-2/a.appup")
    }

    /// An appup whose up entry from "1" holds `instruction`, on line 2 from column 10.
    fn wrap(instruction: &str) -> String {
        format!("{{\"2\",\n [{{\"1\", [{instruction}]}}],\n []}}.\n")
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn update(module: &str) -> Update {
        Update {
            module: module.into(),
            mod_type: ModType::Dynamic,
            timeout: Timeout::Default,
            change: Change::Soft,
            pre: BrutalPurge,
            post: BrutalPurge,
            dep_mods: Vec::new(),
            supervisor: false,
        }
    }

    #[test]
    fn every_form_reads_with_otps_defaults() {
        let advanced = |extra: Term| Change::Advanced(extra);
        let cases: Vec<(&str, AppupInstruction)> = vec![
            ("{update, m}", AppupInstruction::Update(update("m"))),
            (
                "{update, m, supervisor}",
                AppupInstruction::Update(Update {
                    mod_type: ModType::Static,
                    change: advanced(Term::list([])),
                    supervisor: true,
                    ..update("m")
                }),
            ),
            ("{update, m, soft}", AppupInstruction::Update(update("m"))),
            (
                "{update, m, {advanced, {1, \"x\"}}}",
                AppupInstruction::Update(Update {
                    change: advanced(Term::tuple([Term::Int(1), "x".into()])),
                    ..update("m")
                }),
            ),
            (
                "{update, m, [d1, d2]}",
                AppupInstruction::Update(Update { dep_mods: names(&["d1", "d2"]), ..update("m") }),
            ),
            (
                "{update, m, {advanced, []}, [d]}",
                AppupInstruction::Update(Update {
                    change: advanced(Term::list([])),
                    dep_mods: names(&["d"]),
                    ..update("m")
                }),
            ),
            (
                "{update, m, soft, soft_purge, brutal_purge, []}",
                AppupInstruction::Update(Update { pre: SoftPurge, ..update("m") }),
            ),
            (
                "{update, m, 500, soft, brutal_purge, soft_purge, [d]}",
                AppupInstruction::Update(Update {
                    timeout: Timeout::Ms(500),
                    post: SoftPurge,
                    dep_mods: names(&["d"]),
                    ..update("m")
                }),
            ),
            (
                "{update, m, static, infinity, {advanced, x}, soft_purge, soft_purge, []}",
                AppupInstruction::Update(Update {
                    mod_type: ModType::Static,
                    timeout: Timeout::Infinity,
                    change: advanced(Term::atom("x")),
                    pre: SoftPurge,
                    post: SoftPurge,
                    ..update("m")
                }),
            ),
            (
                "{update, m, dynamic, default, soft, brutal_purge, brutal_purge, []}",
                AppupInstruction::Update(update("m")),
            ),
            (
                "{load_module, m}",
                AppupInstruction::LoadModule {
                    module: "m".into(),
                    pre: BrutalPurge,
                    post: BrutalPurge,
                    dep_mods: vec![],
                },
            ),
            (
                "{load_module, m, [d]}",
                AppupInstruction::LoadModule {
                    module: "m".into(),
                    pre: BrutalPurge,
                    post: BrutalPurge,
                    dep_mods: names(&["d"]),
                },
            ),
            (
                "{load_module, m, soft_purge, soft_purge, []}",
                AppupInstruction::LoadModule {
                    module: "m".into(),
                    pre: SoftPurge,
                    post: SoftPurge,
                    dep_mods: vec![],
                },
            ),
            (
                "{add_module, m}",
                AppupInstruction::AddModule { module: "m".into(), dep_mods: vec![] },
            ),
            (
                "{add_module, m, [d]}",
                AppupInstruction::AddModule { module: "m".into(), dep_mods: names(&["d"]) },
            ),
            (
                "{delete_module, m}",
                AppupInstruction::DeleteModule { module: "m".into(), dep_mods: vec![] },
            ),
            (
                "{delete_module, m, [d]}",
                AppupInstruction::DeleteModule { module: "m".into(), dep_mods: names(&["d"]) },
            ),
            (
                "{add_application, b}",
                AppupInstruction::AddApplication { app: "b".into(), start: StartType::Permanent },
            ),
            (
                "{add_application, b, load}",
                AppupInstruction::AddApplication { app: "b".into(), start: StartType::Load },
            ),
            (
                "{add_application, b, none}",
                AppupInstruction::AddApplication { app: "b".into(), start: StartType::None },
            ),
            ("{remove_application, b}", AppupInstruction::RemoveApplication { app: "b".into() }),
            ("{restart_application, b}", AppupInstruction::RestartApplication { app: "b".into() }),
            ("point_of_no_return", AppupInstruction::Low(Instruction::PointOfNoReturn)),
            (
                "{apply, {m, f, [1]}}",
                AppupInstruction::Low(Instruction::Apply {
                    module: "m".into(),
                    function: "f".into(),
                    args: vec![Term::Int(1)],
                }),
            ),
        ];
        for (text, expected) in cases {
            let appup = Appup::parse(path(), &wrap(text)).unwrap_or_else(|e| panic!("{text}: {e}"));
            let entry = appup.entry_for("1", Direction::Up).expect("the up entry");
            let [item] = entry.instructions.as_slice() else { panic!("{text}: one instruction") };
            assert_eq!(item.instruction, expected, "{text}");
            assert_eq!((item.pos, item.text.as_str()), (Pos::new(2, 10), text), "{text}");
        }
    }

    #[test]
    fn a_whole_file_reads_with_positions() {
        let text = "%% a 2\n{\"2\",\n [{\"1\", [{load_module, m}]},\n  {\"0\", []}],\n \
                    [{\"1\", [{load_module, m}]}]}.\n";
        let appup = Appup::parse(path(), text).expect("valid");
        assert_eq!((appup.vsn.as_str(), appup.vsn_pos), ("2", Pos::new(2, 2)));
        assert_eq!((appup.up_pos, appup.down_pos), (Pos::new(3, 2), Pos::new(5, 2)));
        let up: Vec<&str> = appup.up.iter().map(|entry| entry.vsn.as_str()).collect();
        assert_eq!(up, ["1", "0"]);
        assert_eq!(appup.up[1].pos, Pos::new(4, 3));
        assert!(appup.entry_for("0", Direction::Down).is_none());
        assert_eq!(appup.entry_for("1", Direction::Down).map(|e| e.instructions.len()), Some(1));
    }

    #[test]
    fn errors_point_at_the_term_and_say_what_was_expected() {
        // (instruction on line 2, column 10; expected "line:col: message" prefix)
        let cases = [
            ("{update}", "2:10: expected {update, Mod}, {update, Mod, supervisor}, "),
            (
                "{update, \"m\"}",
                "2:19: expected an atom for Mod, found \"m\", in {update, Mod, ...}",
            ),
            ("{update, m, hard}", "2:22: expected supervisor, soft, {advanced, Extra} or [Mod]"),
            ("{update, m, {advanced}}", "2:22: expected supervisor, soft, {advanced, Extra}"),
            ("{update, m, soft, x}", "2:28: expected [Mod] for DepMods, found x"),
            ("{update, m, soft, [\"d\"]}", "2:29: expected an atom for a module in DepMods"),
            ("{update, m, a, b, c}", "2:10: expected {update, Mod}, "),
            (
                "{update, m, soft, hard, brutal_purge, []}",
                "2:28: purge method must be soft_purge or brutal_purge, found hard",
            ),
            ("{update, m, -1, soft, brutal_purge, brutal_purge, []}", "2:22: timeout must be"),
            (
                "{update, m, hot, 5, soft, brutal_purge, brutal_purge, []}",
                "2:22: expected static or dynamic for ModType, found hot",
            ),
            ("{load_module, m, a, b}", "2:10: expected {load_module, Mod}, {load_module, Mod"),
            ("{add_module}", "2:10: expected {add_module, Mod} or {add_module, Mod, DepMods}"),
            ("{delete_module, m, [d], x}", "2:10: expected {delete_module, Mod} or"),
            (
                "{add_application, b, forever}",
                "2:31: expected permanent, transient, temporary, load or none, found forever",
            ),
            ("{remove_application, b, c}", "2:10: expected {remove_application, App}"),
            ("{restart_application, \"b\"}", "2:32: expected an atom for App"),
            ("{reload, m}", "2:10: unknown instruction reload"),
            ("{load, {m}}", "2:10: expected {load, {Module, PrePurge, PostPurge}}"),
        ];
        for (instruction, expected) in cases {
            let shown = match Appup::parse(path(), &wrap(instruction)) {
                Ok(appup) => panic!("{instruction}: read as {appup:?}"),
                Err(error) => error.to_string(),
            };
            assert!(
                shown.strip_prefix("lib/a-2/a.appup:").is_some_and(|s| s.starts_with(expected)),
                "{instruction}:\n  {shown}\n  {expected}"
            );
        }
    }

    #[test]
    fn file_shape_errors() {
        let cases = [
            ("{\"2\", []}.", "1:1: expected {Vsn, [{UpFromVsn, [Instruction]}]"),
            ("{'2', [], []}.", "1:2: expected a string for Vsn, found '2'"),
            ("{\"2\", [{\"1\", [], []}], []}.", "1:8: expected {UpFromVsn, [Instruction]}"),
            ("{\"2\", [], [{1, []}]}.", "1:13: expected a string for DownToVsn, found 1"),
            (
                "{\"2\", [{<<\"1\\\\..*\">>, []}], []}.",
                "1:9: UpFromVsn is a binary, which OTP reads as a regular expression",
            ),
            (
                "{\"2\", [{\"1\", []},\n {\"1\", []}], []}.",
                "2:2: a second up entry for version \"1\" (the first is at 1:8)",
            ),
            ("{\"2\", [{\"1\", x}], []}.", "1:8: expected {UpFromVsn, [Instruction]}, found"),
        ];
        for (text, expected) in cases {
            let shown = match Appup::parse(path(), text) {
                Ok(appup) => panic!("{text}: read as {appup:?}"),
                Err(error) => error.to_string(),
            };
            assert!(
                shown.strip_prefix("lib/a-2/a.appup:").is_some_and(|s| s.starts_with(expected)),
                "{text}:\n  {shown}\n  {expected}"
            );
        }
    }

    #[test]
    fn the_example_appups_read() {
        let plugins = &crate::release::test_crate_dir().join("../plugins");
        for (file, vsn) in [
            ("svc-2/svc.appup", "2"),
            ("greeter-2/greeter.appup", "2"),
            ("prim_app-2/prim_app.appup", "2"),
        ] {
            let appup = Appup::read(&plugins.join(file)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(appup.vsn, vsn, "{file}");
            for direction in [Direction::Up, Direction::Down] {
                assert!(appup.entry_for("1", direction).is_some(), "{file}: {direction} from 1");
            }
        }
    }
}
