//! Relup scripts (SPEC §5): reading them into typed instructions, and the checks that need
//! neither a file system nor a running node.
//!
//! A relup says, for one target release, how to get there from each older release (the up
//! entries) and how to go back to each of them (the down entries):
//!
//! ```text
//! {Vsn, [{UpFromVsn, Descr, Instructions}], [{DownToVsn, Descr, Instructions}]}.
//! ```
//!
//! This module is the second parsing stage for that file: it takes the raw term tree of
//! [`super::terms`] and turns every instruction into an [`Instruction`] with typed fields,
//! so the evaluator never looks at raw terms again and a malformed script is refused before
//! anything runs. Each error points at the offending term (`path:line:col`) and says what was
//! expected there.
//!
//! [`check_script`] adds the structural rules of SPEC §5.1 that can be decided from the script
//! alone: every `load` has staged code and `point_of_no_return` is where it must be.
//! `sync_nodes` is read here like any instruction; whether the node is in a cluster is the
//! release handler's check. What needs the release on disk (files exist, are plugins, `apply` targets
//! exist) or the running node (who holds old code) is checked by the release handler.
//!
//! **Invariant:** this module knows nothing of libraries, processes or the code server; it
//! only reads text. Its [`PurgeMethod`] is the script's word; the release handler turns it
//! into the code server's.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use plugin_api::Term;

use super::error::{ParseError, ParseErrorKind};
use super::names::NameKind;
use super::shape::Form;
use super::terms::{Pos, RawTerm, Spanned, parse_single_term, read_single_term, write_quoted};

/// A relup's `PrePurge` or `PostPurge`: what `load` and `remove` do with old code that is in
/// the way. This is the script's word; the release handler hands it to the code server as
/// the code layer's own `PurgeMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PurgeMethod {
    /// `soft_purge`: refuse (before) or leave it for later (after) if any thread holds it.
    SoftPurge,
    /// `brutal_purge`: purge it regardless.
    BrutalPurge,
}

impl fmt::Display for PurgeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PurgeMethod::SoftPurge => "soft_purge",
            PurgeMethod::BrutalPurge => "brutal_purge",
        })
    }
}

/// How long a `suspend` waits for a process that gives no timeout (SPEC §5.3).
pub const DEFAULT_SUSPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A whole relup file.
#[derive(Debug, Clone, PartialEq)]
pub struct Relup {
    /// The release this relup leads to (and, going down, leaves).
    pub vsn: String,
    /// How to upgrade to `vsn`, one entry per release it can upgrade from.
    pub up: Vec<RelupEntry>,
    /// How to downgrade from `vsn`, one entry per release it can downgrade to.
    pub down: Vec<RelupEntry>,
}

/// The script for one pair of releases.
#[derive(Debug, Clone, PartialEq)]
pub struct RelupEntry {
    /// For an up entry the release upgraded from; for a down entry the release downgraded to.
    pub vsn: String,
    /// A free description, returned by `install` as OTP's `{ok, OtherVsn, Descr}`.
    pub descr: Term,
    /// The instructions, in order, each with its position in the file.
    pub instructions: Vec<Spanned<Instruction>>,
    /// Where the entry starts in the file.
    pub pos: Pos,
}

/// Which way a script goes: towards the relup's release, or back from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// An upgrade: from an older release to the relup's release.
    Up,
    /// A downgrade: from the relup's release back to an older one.
    Down,
}

impl Direction {
    /// The atom the relup syntax uses: `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long `suspend` waits for a process to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// The default, [`DEFAULT_SUSPEND_TIMEOUT`].
    Default,
    /// Wait as long as it takes.
    Infinity,
    /// Wait this many milliseconds.
    Ms(u64),
}

impl Timeout {
    /// How long to wait, or `None` for no limit.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Timeout::Default => Some(DEFAULT_SUSPEND_TIMEOUT),
            Timeout::Infinity => None,
            Timeout::Ms(ms) => Some(Duration::from_millis(ms)),
        }
    }

    fn to_term(self) -> Term {
        match self {
            Timeout::Default => Term::atom("default"),
            Timeout::Infinity => Term::atom("infinity"),
            Timeout::Ms(ms) => Term::Int(i64::try_from(ms).unwrap_or(i64::MAX)),
        }
    }
}

/// One relup instruction (SPEC §5), with typed fields.
///
/// The enum is deliberately exhaustive: an evaluator that matches on it must handle every
/// instruction the SPEC defines.
#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    /// `{load_object_code, {App, AppVsn, [Module]}}`: open and check the modules' new code
    /// from the application's library directory, without making it reachable.
    LoadObjectCode {
        /// The application.
        app: String,
        /// Its version in the target release.
        app_vsn: String,
        /// The modules to stage.
        modules: Vec<String>,
    },
    /// `point_of_no_return`: before it a failure rolls everything back; after it it cannot.
    PointOfNoReturn,
    /// `{load, {Module, PrePurge, PostPurge}}`: make the staged code of a module current.
    Load {
        /// The module.
        module: String,
        /// How to get rid of old code that is in the way.
        pre: PurgeMethod,
        /// How to get rid of the code this load makes old.
        post: PurgeMethod,
    },
    /// `{remove, {Module, PrePurge, PostPurge}}`: make a module's current code old, with no
    /// successor.
    Remove {
        /// The module.
        module: String,
        /// How to get rid of old code that is in the way.
        pre: PurgeMethod,
        /// How to get rid of the code this makes old.
        post: PurgeMethod,
    },
    /// `{purge, [Module]}`: make the old code of the modules go away now.
    Purge(Vec<String>),
    /// `{suspend, [Module | {Module, Timeout}]}`: suspend the processes running the modules.
    Suspend(Vec<(String, Timeout)>),
    /// `{resume, [Module]}`: resume the processes this script suspended.
    Resume(Vec<String>),
    /// `{code_change, [{Module, Extra}]}` or `{code_change, up | down, [{Module, Extra}]}`:
    /// migrate the state of the suspended processes running the modules.
    CodeChange {
        /// `up` or `down` when the script says so; otherwise the evaluator uses the script's
        /// direction.
        mode: Option<Direction>,
        /// Each module and the `Extra` term passed to its `code_change`.
        changes: Vec<(String, Term)>,
    },
    /// `{stop, [Module]}`: terminate the processes running the modules, through their
    /// supervisors.
    Stop(Vec<String>),
    /// `{start, [Module]}`: restart the processes that `stop` terminated.
    Start(Vec<String>),
    /// `{apply, {Module, Function, [Arg]}}`: call a function.
    Apply {
        /// The module.
        module: String,
        /// The function.
        function: String,
        /// The arguments.
        args: Vec<Term>,
    },
    /// `{sync_nodes, Id, [Node]}` or `{sync_nodes, Id, {M, F, A}}`: tell every other listed
    /// node that this one reached `Id`, then wait until each of them reached it too (SPEC
    /// §12). hotcode's extension `{sync_nodes, Id, Nodes, Timeout}` bounds the wait.
    SyncNodes {
        /// The synchronisation point's name.
        id: Term,
        /// The nodes to wait for.
        nodes: SyncTargets,
        /// How long to wait: `None` as OTP (no limit), or the extension's `Timeout`.
        timeout: Option<Timeout>,
    },
    /// `restart_new_emulator`: restart the node on the new host version.
    RestartNewEmulator,
    /// `restart_emulator`: restart the node at the end of the script.
    RestartEmulator,
}

/// The nodes of a `sync_nodes`: listed, or the list a function returns.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncTargets {
    /// `[Node]`.
    Nodes(Vec<String>),
    /// `{M, F, A}`: the nodes are `apply(M, F, A)`, called when the line is reached.
    Apply {
        /// The module.
        module: String,
        /// The function.
        function: String,
        /// The arguments.
        args: Vec<Term>,
    },
}

/// Each instruction's name and form, as the SPEC writes it: the messages quote these.
const FORMS: &[(&str, &str)] = &[
    ("load_object_code", "{load_object_code, {App, AppVsn, [Module]}}"),
    ("point_of_no_return", "point_of_no_return"),
    ("load", "{load, {Module, PrePurge, PostPurge}}"),
    ("remove", "{remove, {Module, PrePurge, PostPurge}}"),
    ("purge", "{purge, [Module]}"),
    ("suspend", "{suspend, [Module | {Module, Timeout}]}"),
    ("resume", "{resume, [Module]}"),
    (
        "code_change",
        "{code_change, [{Module, Extra}]} or {code_change, up | down, [{Module, Extra}]}",
    ),
    ("stop", "{stop, [Module]}"),
    ("start", "{start, [Module]}"),
    ("apply", "{apply, {Module, Function, [Arg]}}"),
    (
        "sync_nodes",
        "{sync_nodes, Id, [Node] | {M, F, A}} or {sync_nodes, Id, [Node] | {M, F, A}, Timeout}",
    ),
    ("restart_new_emulator", "restart_new_emulator"),
    ("restart_emulator", "restart_emulator"),
];

impl Instruction {
    /// The instruction's name, the atom that starts it (`load`, `point_of_no_return`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::LoadObjectCode { .. } => "load_object_code",
            Instruction::PointOfNoReturn => "point_of_no_return",
            Instruction::Load { .. } => "load",
            Instruction::Remove { .. } => "remove",
            Instruction::Purge(_) => "purge",
            Instruction::Suspend(_) => "suspend",
            Instruction::Resume(_) => "resume",
            Instruction::CodeChange { .. } => "code_change",
            Instruction::Stop(_) => "stop",
            Instruction::Start(_) => "start",
            Instruction::Apply { .. } => "apply",
            Instruction::SyncNodes { .. } => "sync_nodes",
            Instruction::RestartNewEmulator => "restart_new_emulator",
            Instruction::RestartEmulator => "restart_emulator",
        }
    }

    /// The instruction as a term, as it would be written in a relup.
    pub fn to_term(&self) -> Term {
        let atoms = |names: &[String]| Term::list(names.iter().map(Term::atom));
        let tagged = |body: Term| Term::tuple([Term::atom(self.name()), body]);
        let purge = |module: &str, pre: PurgeMethod, post: PurgeMethod| {
            tagged(Term::tuple([
                Term::atom(module),
                Term::atom(pre.to_string()),
                Term::atom(post.to_string()),
            ]))
        };
        match self {
            Instruction::LoadObjectCode { app, app_vsn, modules } => {
                tagged(Term::tuple([Term::atom(app), Term::Str(app_vsn.clone()), atoms(modules)]))
            }
            Instruction::Load { module, pre, post } | Instruction::Remove { module, pre, post } => {
                purge(module, *pre, *post)
            }
            Instruction::Purge(modules)
            | Instruction::Resume(modules)
            | Instruction::Stop(modules)
            | Instruction::Start(modules) => tagged(atoms(modules)),
            Instruction::Suspend(modules) => {
                tagged(Term::list(modules.iter().map(|(module, timeout)| match timeout {
                    Timeout::Default => Term::atom(module),
                    _ => Term::tuple([Term::atom(module), timeout.to_term()]),
                })))
            }
            Instruction::CodeChange { mode, changes } => {
                let changes = Term::list(
                    changes
                        .iter()
                        .map(|(module, extra)| Term::tuple([Term::atom(module), extra.clone()])),
                );
                match mode {
                    Some(mode) => {
                        Term::tuple([Term::atom(self.name()), Term::atom(mode.as_str()), changes])
                    }
                    None => tagged(changes),
                }
            }
            Instruction::Apply { module, function, args } => tagged(Term::tuple([
                Term::atom(module),
                Term::atom(function),
                Term::List(args.clone()),
            ])),
            Instruction::SyncNodes { id, nodes, timeout } => {
                let nodes = match nodes {
                    SyncTargets::Nodes(nodes) => atoms(nodes),
                    SyncTargets::Apply { module, function, args } => Term::tuple([
                        Term::atom(module),
                        Term::atom(function),
                        Term::List(args.clone()),
                    ]),
                };
                let mut items = vec![Term::atom(self.name()), id.clone(), nodes];
                if let Some(timeout) = timeout {
                    items.push(match timeout {
                        Timeout::Default => Term::atom("default"),
                        Timeout::Infinity => Term::atom("infinity"),
                        Timeout::Ms(ms) => Term::Int(i64::try_from(*ms).unwrap_or(i64::MAX)),
                    });
                }
                Term::tuple(items)
            }
            Instruction::PointOfNoReturn
            | Instruction::RestartNewEmulator
            | Instruction::RestartEmulator => Term::atom(self.name()),
        }
    }
}

impl fmt::Display for Instruction {
    /// Writes the instruction in relup syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_term())
    }
}

impl Relup {
    /// The entry for going from or to `vsn` in `direction`: for [`Direction::Up`] the entry
    /// that upgrades from release `vsn`, for [`Direction::Down`] the entry that downgrades to
    /// release `vsn`. Versions match exactly (SPEC §9).
    pub fn entry_for(&self, vsn: &str, direction: Direction) -> Option<&RelupEntry> {
        let entries = match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        };
        entries.iter().find(|entry| entry.vsn == vsn)
    }

    /// Every structural problem of every entry, up entries first, as [`script_problems`]
    /// finds them; `path` is the relup's file, for the messages.
    pub fn problems(&self, path: &Path) -> Vec<ParseError> {
        self.up
            .iter()
            .chain(&self.down)
            .flat_map(|entry| script_problems(path, &entry.instructions))
            .collect()
    }

    /// Checks every entry as [`check_script`] does, returning the first problem.
    pub fn check(&self, path: &Path) -> Result<(), ParseError> {
        match self.problems(path).into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// The relup in OTP's file syntax, one instruction per line, ending with `.` and a
    /// newline: what `systools:make_relup` writes, and what [`parse_relup`] reads back to the
    /// same relup (the positions aside, which are those of the rendered text).
    ///
    /// One instruction per line keeps a generated script as easy to read and diff as a
    /// hand-written one, and makes every `path:line:col` that `hotcode check` reports about
    /// it point at exactly one instruction.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a `String` cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    fn write_to(&self, out: &mut String) -> fmt::Result {
        use fmt::Write as _;
        out.push('{');
        write_quoted(out, &self.vsn, '"')?;
        out.push_str(",\n");
        for (index, entries) in [&self.up, &self.down].into_iter().enumerate() {
            if entries.is_empty() {
                out.push_str(" []");
            }
            for (number, entry) in entries.iter().enumerate() {
                out.push_str(if number == 0 { " [{" } else { ",\n  {" });
                write_quoted(out, &entry.vsn, '"')?;
                write!(out, ", {},\n   [", entry.descr)?;
                for (number, instruction) in entry.instructions.iter().enumerate() {
                    if number > 0 {
                        out.push_str(",\n    ");
                    }
                    write!(out, "{}", instruction.value)?;
                }
                out.push_str("]}");
                if number + 1 == entries.len() {
                    out.push(']');
                }
            }
            out.push_str(if index == 0 { ",\n" } else { "\n}.\n" });
        }
        Ok(())
    }
}

/// Parses `text`, the contents of the relup file at `path`, into typed instructions.
///
/// This checks the syntax and the shape of every instruction, not the rules between
/// instructions: run [`Relup::check`] or [`check_script`] for those.
pub fn parse_relup(path: &Path, text: &str) -> Result<Relup, ParseError> {
    relup_from_term(path, &parse_single_term(path, text)?)
}

/// Reads and parses the relup file at `path`, as [`parse_relup`] does.
pub fn read_relup(path: &Path) -> Result<Relup, ParseError> {
    relup_from_term(path, &read_single_term(path)?)
}

/// Checks the rules of SPEC §5.1 that a script obeys on its own, returning the first
/// problem in file order. See [`script_problems`] for the rules.
pub fn check_script(path: &Path, instructions: &[Spanned<Instruction>]) -> Result<(), ParseError> {
    match script_problems(path, instructions).into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// Every problem with the rules of SPEC §5.1 that a script obeys on its own, in file order:
///
/// - every `load` names a module that an earlier `load_object_code` staged and no load since
///   has made current;
/// - `load_object_code` comes only before `point_of_no_return`, the one instruction not
///   allowed after it;
/// - `point_of_no_return` is there if any `load_object_code` is, and at most once;
/// - `restart_new_emulator` is the first instruction, and there is at most one (OTP's
///   appup(4): the node restarts on the new host with the old release's applications, and
///   the rest of the script runs after the restart);
/// - `restart_emulator` is the last instruction, and so there is at most one (appup(4):
///   the node restarts into the new release once the script has run).
///
/// What a restart means for a running node (a host binary for the release, the handover
/// of its sockets) is the release handler's business.
pub fn script_problems(path: &Path, instructions: &[Spanned<Instruction>]) -> Vec<ParseError> {
    let mut problems = Vec::new();
    let mut problem =
        |pos: Pos, kind: ParseErrorKind| problems.push(ParseError::at(path, pos, kind));
    // Module -> the load that made its staged code current, for a clearer second message.
    let mut staged: HashMap<&str, Pos> = HashMap::new();
    let mut made_current: HashMap<&str, Pos> = HashMap::new();
    let mut point: Option<Pos> = None;
    let mut first_object_code: Option<Pos> = None;
    let mut restart_new: Option<Pos> = None;
    let first = instructions.first().map(|i| i.pos);
    let last = instructions.last().map(|i| i.pos);
    for instruction in instructions {
        let pos = instruction.pos;
        match &instruction.value {
            Instruction::RestartNewEmulator => match (restart_new, first) {
                (Some(first), _) => {
                    problem(pos, ParseErrorKind::DuplicateRestartNewEmulator { first })
                }
                (None, Some(first)) if first != pos => {
                    restart_new = Some(pos);
                    problem(pos, ParseErrorKind::RestartNewEmulatorNotFirst { first });
                }
                (None, _) => restart_new = Some(pos),
            },
            Instruction::RestartEmulator => {
                if let Some(last) = last
                    && last != pos
                {
                    problem(pos, ParseErrorKind::RestartEmulatorNotLast { last });
                }
            }
            Instruction::LoadObjectCode { modules, .. } => {
                first_object_code.get_or_insert(pos);
                if let Some(point) = point {
                    problem(pos, ParseErrorKind::ObjectCodeAfterPointOfNoReturn { point });
                }
                for module in modules {
                    staged.insert(module, pos);
                    made_current.remove(module.as_str());
                }
            }
            Instruction::PointOfNoReturn => match point {
                Some(first) => problem(pos, ParseErrorKind::DuplicatePointOfNoReturn { first }),
                None => point = Some(pos),
            },
            Instruction::Load { module, .. } => {
                if staged.remove(module.as_str()).is_some() {
                    made_current.insert(module, pos);
                } else {
                    let reason = match made_current.get(module.as_str()) {
                        Some(loaded) => format!(
                            "the load at {loaded} already made its staged code current; \
                             loading it again needs another load_object_code"
                        ),
                        None => "no earlier load_object_code stages it".to_owned(),
                    };
                    problem(
                        pos,
                        ParseErrorKind::LoadWithoutObjectCode { module: module.clone(), reason },
                    );
                }
            }
            _ => {}
        }
    }
    if let (Some(pos), None) = (first_object_code, point) {
        problem(pos, ParseErrorKind::MissingPointOfNoReturn);
    }
    problems.sort_by_key(|problem| problem.pos);
    problems
}

const RELUP_FORM: &str =
    "{Vsn, [{UpFromVsn, Descr, Instructions}], [{DownToVsn, Descr, Instructions}]}";

fn relup_from_term(path: &Path, term: &Spanned<RawTerm>) -> Result<Relup, ParseError> {
    let form = Form::new(path, term, RELUP_FORM);
    let [vsn, up, down] = form.tuple(term, 3)? else {
        return Err(form.mismatch());
    };
    Ok(Relup {
        vsn: form.name(vsn, NameKind::Vsn, "Vsn")?,
        up: entries(path, &form.list(up)?, Direction::Up)?,
        down: entries(path, &form.list(down)?, Direction::Down)?,
    })
}

fn entries(
    path: &Path,
    terms: &[Spanned<RawTerm>],
    direction: Direction,
) -> Result<Vec<RelupEntry>, ParseError> {
    let (expected, name) = match direction {
        Direction::Up => ("{UpFromVsn, Descr, [Instruction]}", "UpFromVsn"),
        Direction::Down => ("{DownToVsn, Descr, [Instruction]}", "DownToVsn"),
    };
    let mut entries: Vec<RelupEntry> = Vec::with_capacity(terms.len());
    for term in terms {
        let form = Form::new(path, term, expected);
        let [vsn, descr, instructions] = form.tuple(term, 3)? else {
            return Err(form.mismatch());
        };
        let vsn = form.name(vsn, NameKind::Vsn, name)?;
        if let Some(first) = entries.iter().find(|entry| entry.vsn == vsn) {
            return Err(form.error_at(
                term,
                ParseErrorKind::Invalid(format!(
                    "a second {direction} entry for release \"{vsn}\" (the first is at {}); \
                     each release may have only one",
                    first.pos
                )),
            ));
        }
        let instructions = form
            .list(instructions)?
            .iter()
            .map(|instruction| parse_instruction(path, instruction))
            .collect::<Result<_, _>>()?;
        entries.push(RelupEntry { vsn, descr: descr.value.to_term(), instructions, pos: term.pos });
    }
    Ok(entries)
}

/// Parses one instruction; errors name the instruction's form.
pub fn parse_instruction(
    path: &Path,
    term: &Spanned<RawTerm>,
) -> Result<Spanned<Instruction>, ParseError> {
    let (name, args) = match &term.value {
        RawTerm::Atom(name) => (name.as_str(), None),
        RawTerm::Tuple(items) => match items.split_first() {
            Some((first, rest)) => match first.value.as_atom() {
                Some(name) => (name, Some(rest)),
                None => return Err(not_an_instruction(path, term)),
            },
            None => return Err(not_an_instruction(path, term)),
        },
        _ => return Err(not_an_instruction(path, term)),
    };
    let Some(&(_, expected)) = FORMS.iter().find(|(known, _)| *known == name) else {
        return Err(ParseError::at(
            path,
            term.pos,
            ParseErrorKind::UnknownInstruction(RawTerm::Atom(name.to_owned()).describe()),
        ));
    };
    let form = Form::new(path, term, expected);
    let instruction = match (name, args) {
        ("point_of_no_return", None) => Instruction::PointOfNoReturn,
        ("restart_new_emulator", None) => Instruction::RestartNewEmulator,
        ("restart_emulator", None) => Instruction::RestartEmulator,
        ("load_object_code", Some([body])) => {
            let [app, app_vsn, modules] = form.tuple(body, 3)? else {
                return Err(form.mismatch());
            };
            Instruction::LoadObjectCode {
                app: form.name(app, NameKind::App, "App")?,
                app_vsn: form.name(app_vsn, NameKind::Vsn, "AppVsn")?,
                modules: form.names(modules, NameKind::Module, "Module")?,
            }
        }
        ("load" | "remove", Some([body])) => {
            let [module, pre, post] = form.tuple(body, 3)? else {
                return Err(form.mismatch());
            };
            let module = form.name(module, NameKind::Module, "Module")?;
            let (pre, post) = (purge_method(&form, pre)?, purge_method(&form, post)?);
            if name == "load" {
                Instruction::Load { module, pre, post }
            } else {
                Instruction::Remove { module, pre, post }
            }
        }
        ("purge", Some([modules])) => {
            Instruction::Purge(form.names(modules, NameKind::Module, "Module")?)
        }
        ("resume", Some([modules])) => {
            Instruction::Resume(form.names(modules, NameKind::Module, "Module")?)
        }
        ("stop", Some([modules])) => {
            Instruction::Stop(form.names(modules, NameKind::Module, "Module")?)
        }
        ("start", Some([modules])) => {
            Instruction::Start(form.names(modules, NameKind::Module, "Module")?)
        }
        ("suspend", Some([modules])) => Instruction::Suspend(
            form.list(modules)?
                .iter()
                .map(|item| suspended(&form, item))
                .collect::<Result<_, _>>()?,
        ),
        ("code_change", Some([changes])) => {
            Instruction::CodeChange { mode: None, changes: code_changes(&form, changes)? }
        }
        ("code_change", Some([mode, changes])) => {
            let mode = match mode.value.as_atom() {
                Some("up") => Direction::Up,
                Some("down") => Direction::Down,
                _ => return Err(form.bad_part(mode, "up or down")),
            };
            Instruction::CodeChange { mode: Some(mode), changes: code_changes(&form, changes)? }
        }
        ("apply", Some([body])) => {
            let [module, function, args] = form.tuple(body, 3)? else {
                return Err(form.mismatch());
            };
            Instruction::Apply {
                module: form.name(module, NameKind::Module, "Module")?,
                function: form.atom(function, "Function")?,
                args: form.list(args)?.iter().map(|arg| arg.value.to_term()).collect(),
            }
        }
        ("sync_nodes", Some([id, nodes])) => Instruction::SyncNodes {
            id: id.value.to_term(),
            nodes: sync_targets(&form, nodes)?,
            timeout: None,
        },
        ("sync_nodes", Some([id, nodes, timeout])) => Instruction::SyncNodes {
            id: id.value.to_term(),
            nodes: sync_targets(&form, nodes)?,
            timeout: Some(self::timeout(&form, timeout)?),
        },
        _ => return Err(form.mismatch()),
    };
    Ok(Spanned::new(instruction, term.pos))
}

fn not_an_instruction(path: &Path, term: &Spanned<RawTerm>) -> ParseError {
    ParseError::at(
        path,
        term.pos,
        ParseErrorKind::Shape {
            expected: "an instruction: an atom such as point_of_no_return, or a tuple that \
                       starts with one, such as {load, {Module, PrePurge, PostPurge}}"
                .to_owned(),
            found: term.value.describe(),
            detail: None,
        },
    )
}

/// Reads a purge method, `soft_purge` or `brutal_purge`; the appup reader shares it.
pub(super) fn purge_method(
    form: &Form<'_>,
    term: &Spanned<RawTerm>,
) -> Result<PurgeMethod, ParseError> {
    match term.value.as_atom() {
        Some("soft_purge") => Ok(PurgeMethod::SoftPurge),
        Some("brutal_purge") => Ok(PurgeMethod::BrutalPurge),
        _ => Err(form.error_at(term, ParseErrorKind::PurgeMethod(term.value.describe()))),
    }
}

/// `[Node]` or `{M, F, A}`.
fn sync_targets(form: &Form<'_>, term: &Spanned<RawTerm>) -> Result<SyncTargets, ParseError> {
    if let RawTerm::Tuple(items) = &term.value {
        let [module, function, args] = items.as_slice() else {
            return Err(form.bad_part(term, "[Node] or {Module, Function, [Arg]}"));
        };
        return Ok(SyncTargets::Apply {
            module: form.name(module, NameKind::Module, "Module")?,
            function: form.atom(function, "Function")?,
            args: form.list(args)?.iter().map(|arg| arg.value.to_term()).collect(),
        });
    }
    Ok(SyncTargets::Nodes(form.atoms(term, "Node")?))
}

fn suspended(form: &Form<'_>, term: &Spanned<RawTerm>) -> Result<(String, Timeout), ParseError> {
    match &term.value {
        RawTerm::Atom(module) => Ok((module.clone(), Timeout::Default)),
        RawTerm::Tuple(items) => match items.as_slice() {
            [module, timeout] => {
                Ok((form.name(module, NameKind::Module, "Module")?, self::timeout(form, timeout)?))
            }
            _ => Err(form.bad_part(term, "Module or {Module, Timeout}")),
        },
        _ => Err(form.bad_part(term, "Module or {Module, Timeout}")),
    }
}

/// Reads a suspend timeout: milliseconds, `default` or `infinity`; the appup reader shares it.
pub(super) fn timeout(form: &Form<'_>, term: &Spanned<RawTerm>) -> Result<Timeout, ParseError> {
    match &term.value {
        // appup(4): `Timeout = int()>0 | default | infinity`.
        RawTerm::Int(ms) => match u64::try_from(*ms) {
            Ok(ms) if ms > 0 => Ok(Timeout::Ms(ms)),
            _ => Err(form.error_at(term, ParseErrorKind::Timeout(term.value.describe()))),
        },
        RawTerm::Atom(name) if name == "default" => Ok(Timeout::Default),
        RawTerm::Atom(name) if name == "infinity" => Ok(Timeout::Infinity),
        _ => Err(form.error_at(term, ParseErrorKind::Timeout(term.value.describe()))),
    }
}

fn code_changes(
    form: &Form<'_>,
    term: &Spanned<RawTerm>,
) -> Result<Vec<(String, Term)>, ParseError> {
    form.list(term)?
        .iter()
        .map(|item| match item.value.as_tuple() {
            Some([module, extra]) => {
                Ok((form.name(module, NameKind::Module, "Module")?, extra.value.to_term()))
            }
            _ => Err(form.bad_part(item, "{Module, Extra}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn path() -> &'static Path {
        Path::new("relups/x.relup")
    }

    /// A relup with one up and one down entry around `instructions`.
    fn wrap(instructions: &str) -> String {
        format!("%% case\n{{\"B\",\n[{{\"A\", [], [\n{instructions}\n]}}],\n[]}}.\n")
    }

    fn instructions(text: &str) -> Vec<Instruction> {
        match parse_relup(path(), &wrap(text)) {
            Ok(relup) => relup.up[0].instructions.iter().map(|i| i.value.clone()).collect(),
            Err(error) => panic!("{text:?}: {error}"),
        }
    }

    fn error(text: &str) -> String {
        match parse_relup(path(), text) {
            Ok(relup) => match relup.check(path()) {
                Ok(()) => panic!("{text:?} should be refused"),
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn every_instruction_parses_to_its_typed_form() {
        use PurgeMethod::{BrutalPurge, SoftPurge};
        let cases: Vec<(&str, Instruction)> = vec![
            (
                r#"{load_object_code, {ch_app, "1", [ch_sup, ch3]}}"#,
                Instruction::LoadObjectCode {
                    app: "ch_app".into(),
                    app_vsn: "1".into(),
                    modules: names(&["ch_sup", "ch3"]),
                },
            ),
            ("point_of_no_return", Instruction::PointOfNoReturn),
            (
                "{load, {m, soft_purge, brutal_purge}}",
                Instruction::Load { module: "m".into(), pre: SoftPurge, post: BrutalPurge },
            ),
            (
                "{remove, {m, brutal_purge, soft_purge}}",
                Instruction::Remove { module: "m".into(), pre: BrutalPurge, post: SoftPurge },
            ),
            ("{purge, [a, b]}", Instruction::Purge(names(&["a", "b"]))),
            ("{purge, []}", Instruction::Purge(vec![])),
            (
                "{suspend, [a, {b, 100}, {c, infinity}, {d, default}, {e, 1}]}",
                Instruction::Suspend(vec![
                    ("a".into(), Timeout::Default),
                    ("b".into(), Timeout::Ms(100)),
                    ("c".into(), Timeout::Infinity),
                    ("d".into(), Timeout::Default),
                    ("e".into(), Timeout::Ms(1)),
                ]),
            ),
            ("{resume, [a]}", Instruction::Resume(names(&["a"]))),
            (
                "{code_change, [{a, []}, {b, {x, \"y\"}}]}",
                Instruction::CodeChange {
                    mode: None,
                    changes: vec![
                        ("a".into(), Term::list([])),
                        ("b".into(), Term::tuple([Term::atom("x"), "y".into()])),
                    ],
                },
            ),
            (
                "{code_change, down, [{a, 1}]}",
                Instruction::CodeChange {
                    mode: Some(Direction::Down),
                    changes: vec![("a".into(), Term::Int(1))],
                },
            ),
            ("{stop, [a]}", Instruction::Stop(names(&["a"]))),
            ("{start, [a]}", Instruction::Start(names(&["a"]))),
            (
                "{apply, {application, start, [prim_app, permanent]}}",
                Instruction::Apply {
                    module: "application".into(),
                    function: "start".into(),
                    args: vec![Term::atom("prim_app"), Term::atom("permanent")],
                },
            ),
            (
                "{sync_nodes, id1, [n1@host]}",
                Instruction::SyncNodes {
                    id: Term::atom("id1"),
                    nodes: SyncTargets::Nodes(names(&["n1@host"])),
                    timeout: None,
                },
            ),
            ("restart_new_emulator", Instruction::RestartNewEmulator),
            ("restart_emulator", Instruction::RestartEmulator),
        ];
        for (text, expected) in cases {
            let parsed = instructions(text);
            assert_eq!(parsed, vec![expected.clone()], "{text}");
            // Written back, an instruction parses to itself.
            assert_eq!(instructions(&expected.to_string()), vec![expected], "{text}");
        }
    }

    #[test]
    fn shape_errors_point_at_the_term_and_say_what_was_expected() {
        // (instruction on line 4, column 2 of the wrapped relup; expected "line:col: message")
        let cases = [
            (
                "{load, {ch_sup, brutal}}",
                "4:2: expected {load, {Module, PrePurge, PostPurge}}, found {load, {ch_sup, brutal}}",
            ),
            ("{foo, bar}", "4:2: unknown instruction foo"),
            ("foo", "4:2: unknown instruction foo"),
            ("{'Foo bar'}", "4:2: unknown instruction 'Foo bar'"),
            ("42", "4:2: expected an instruction"),
            ("{\"load\", x}", "4:2: expected an instruction"),
            (
                "{load, {m, hard, soft_purge}}",
                "4:13: purge method must be soft_purge or brutal_purge, found hard",
            ),
            (
                "{load, {\"m\", soft_purge, soft_purge}}",
                "4:10: expected an atom for Module, found \"m\", in {load,",
            ),
            ("{suspend, [{m, -1}]}", "4:17: timeout must be a positive integer"),
            (
                "{suspend, [{m, soon}]}",
                "4:17: timeout must be a positive integer (milliseconds), default or infinity, found soon",
            ),
            ("{suspend, [\"m\"]}", "4:13: expected Module or {Module, Timeout}, found \"m\""),
            ("{code_change, sideways, [{m, []}]}", "4:16: expected up or down, found sideways"),
            ("{code_change, [m]}", "4:17: expected {Module, Extra}, found m"),
            ("{purge, m}", "4:2: expected {purge, [Module]}, found {purge, m}"),
            ("{apply, {m, f}}", "4:2: expected {apply, {Module, Function, [Arg]}}"),
            (
                "{point_of_no_return}",
                "4:2: expected point_of_no_return, found {point_of_no_return}",
            ),
            ("load", "4:2: expected {load, {Module, PrePurge, PostPurge}}, found load"),
        ];
        for (instruction, expected) in cases {
            let shown = error(&wrap(&format!(" {instruction}")));
            assert_eq!(
                shown.strip_prefix("relups/x.relup:").map(|s| s.starts_with(expected)),
                Some(true),
                "{instruction}: {shown}"
            );
        }
    }

    #[test]
    fn file_shape_errors() {
        let cases = [
            ("{\"B\", [], []}", None),
            ("{\"B\", []}.", Some("1:1: expected {Vsn, [{UpFromVsn")),
            ("{'B', [], []}.", Some("1:2: expected a string for Vsn, found 'B'")),
            (
                "{\"B\", [{\"A\", []}], []}.",
                Some("1:8: expected {UpFromVsn, Descr, [Instruction]}"),
            ),
            ("{\"B\", [], [{a, [], []}]}.", Some("1:13: expected a string for DownToVsn, found a")),
            (
                "{\"B\", [{\"A\", [], []},\n {\"A\", x, []}], []}.",
                Some("2:2: a second up entry for release \"A\" (the first is at 1:8)"),
            ),
            ("{\"B\", [], []}. {x}.", Some("1:16: the file must hold one term")),
        ];
        for (text, expected) in cases {
            let result = parse_relup(path(), text);
            match (expected, result) {
                (None, Err(error)) => {
                    assert!(error.to_string().contains("expected '.'"), "{error}")
                }
                (Some(expected), Err(error)) => {
                    let shown = error.to_string();
                    assert!(shown.starts_with(&format!("relups/x.relup:{expected}")), "{shown}");
                }
                (_, Ok(relup)) => panic!("{text} parsed as {relup:?}"),
            }
        }
    }

    #[test]
    fn script_checks_report_every_problem_in_file_order() {
        let script = wrap(
            " {load, {a, soft_purge, soft_purge}},\n \
             {load_object_code, {app, \"1\", [b]}},\n \
             point_of_no_return,\n \
             {load, {b, soft_purge, soft_purge}},\n \
             {load, {b, soft_purge, soft_purge}},\n \
             {load_object_code, {app, \"1\", [c]}},\n \
             point_of_no_return,\n \
             restart_emulator",
        );
        let relup = parse_relup(path(), &script).expect("well-formed");
        let problems: Vec<String> = relup.problems(path()).iter().map(|p| p.to_string()).collect();
        let expected = [
            "relups/x.relup:4:2: load of module a, but no earlier load_object_code stages it",
            "relups/x.relup:8:2: load of module b, but the load at 7:2 already made its staged \
             code current",
            "relups/x.relup:9:2: load_object_code after point_of_no_return (at 6:2)",
            "relups/x.relup:10:2: a second point_of_no_return (the first is at 6:2)",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (problem, expected) in problems.iter().zip(expected) {
            assert!(problem.starts_with(expected), "{problem:?} vs {expected:?}");
        }
        let missing =
            wrap(" {load_object_code, {app, \"1\", [b]}},\n {load, {b, soft_purge, soft_purge}}");
        let relup = parse_relup(path(), &missing).expect("well-formed");
        assert_eq!(
            relup.check(path()).map_err(|e| e.to_string()),
            Err("relups/x.relup:4:2: load_object_code without point_of_no_return: a script that \
                 loads object code must mark the point after which it cannot roll back"
                .to_owned())
        );
        // A script without object code needs no point of no return.
        let plain =
            wrap(" {suspend, [m]}, {code_change, [{m, []}]}, {resume, [m]}, restart_emulator");
        assert!(parse_relup(path(), &plain).expect("well-formed").check(path()).is_ok());
    }

    /// OTP's appup(4): `restart_new_emulator` comes first, once; `restart_emulator` last.
    #[test]
    fn restarts_are_first_once_or_last() {
        let problems = |instructions: &str| -> Vec<String> {
            let relup = parse_relup(path(), &wrap(instructions)).expect("well-formed");
            relup.problems(path()).iter().map(|p| p.to_string()).collect()
        };
        let ok = [
            " restart_new_emulator",
            " restart_emulator",
            " restart_new_emulator,\n {load_object_code, {a, \"2\", [m]}},\n point_of_no_return,\n \
             {load, {m, brutal_purge, brutal_purge}}",
            " {load_object_code, {a, \"2\", [m]}},\n point_of_no_return,\n \
             {load, {m, brutal_purge, brutal_purge}},\n restart_emulator",
            " restart_new_emulator,\n restart_emulator",
        ];
        for script in ok {
            assert_eq!(problems(script), Vec::<String>::new(), "{script}");
        }
        assert_eq!(
            problems(" {apply, {m, f, []}},\n restart_new_emulator"),
            ["relups/x.relup:5:2: restart_new_emulator must be the first instruction (the \
              first is at 4:2): the node restarts on the new host before anything else of the \
              script runs"]
        );
        assert_eq!(
            problems(" restart_new_emulator,\n restart_new_emulator"),
            ["relups/x.relup:5:2: a second restart_new_emulator (the first is at 4:2); there \
              may be only one"]
        );
        assert_eq!(
            problems(" restart_emulator,\n {apply, {m, f, []}}"),
            ["relups/x.relup:4:2: restart_emulator must be the last instruction (the last is at \
              5:2): the node restarts into the new release once the rest of the script has run"]
        );
        // Twice: the first of them is not last.
        let twice = problems(" restart_emulator,\n restart_emulator");
        assert_eq!(twice.len(), 1, "{twice:?}");
        assert!(twice[0].starts_with("relups/x.relup:4:2: restart_emulator must be the last"));
    }

    fn seed(name: &str) -> (PathBuf, Relup) {
        let path = crate::release::test_crate_dir().join("../relups").join(name);
        let relup = read_relup(&path).unwrap_or_else(|e| panic!("{e}"));
        if let Err(problem) = relup.check(&path) {
            panic!("{problem}");
        }
        (path, relup)
    }

    fn load(module: &str) -> Instruction {
        Instruction::Load {
            module: module.into(),
            pre: PurgeMethod::BrutalPurge,
            post: PurgeMethod::BrutalPurge,
        }
    }

    fn apply(module: &str, function: &str, args: &[&str]) -> Instruction {
        Instruction::Apply {
            module: module.into(),
            function: function.into(),
            args: args.iter().map(|a| Term::atom(*a)).collect(),
        }
    }

    #[test]
    fn seed_script_application_restart_parses_and_checks_both_ways() {
        let (_, relup) = seed("included-app-restart.relup");
        assert_eq!(relup.vsn, "B");
        let up = relup.entry_for("A", Direction::Up).expect("an up entry from A");
        let down = relup.entry_for("A", Direction::Down).expect("a down entry to A");
        assert!(relup.entry_for("B", Direction::Up).is_none());
        assert_eq!((up.instructions.len(), down.instructions.len()), (13, 13));
        assert_eq!(up.descr, Term::list([]));
        let up: Vec<&Instruction> = up.instructions.iter().map(|i| &i.value).collect();
        assert_eq!(
            up[0],
            &Instruction::LoadObjectCode {
                app: "ch_app".into(),
                app_vsn: "1".into(),
                modules: names(&["ch_sup", "ch3"]),
            }
        );
        assert_eq!(up[2], &Instruction::PointOfNoReturn);
        assert_eq!(up[3], &apply("application", "stop", &["prim_app"]));
        assert_eq!(up[6], &Instruction::Purge(names(&["prim_app", "prim_sup"])));
        assert_eq!(up[10], &load("ch3"));
        assert_eq!(up[12], &apply("application", "start", &["prim_app", "permanent"]));
        let down: Vec<&Instruction> = down.instructions.iter().map(|i| &i.value).collect();
        assert_eq!(down[3], &apply("application", "unload", &["ch_app"]));
        assert_eq!(
            down[4],
            &Instruction::Remove {
                module: "ch_sup".into(),
                pre: PurgeMethod::BrutalPurge,
                post: PurgeMethod::BrutalPurge,
            }
        );
    }

    #[test]
    fn seed_script_supervisor_change_parses_and_checks_both_ways() {
        let (_, relup) = seed("included-app-supervisor.relup");
        let up = relup.entry_for("A", Direction::Up).expect("an up entry from A");
        let down = relup.entry_for("A", Direction::Down).expect("a down entry to A");
        assert_eq!((up.instructions.len(), down.instructions.len()), (11, 12));
        let up: Vec<&Instruction> = up.instructions.iter().map(|i| &i.value).collect();
        assert_eq!(up[6], &Instruction::Suspend(vec![("prim_sup".into(), Timeout::Default)]));
        assert_eq!(
            up[8],
            &Instruction::CodeChange {
                mode: Some(Direction::Up),
                changes: vec![("prim_sup".into(), Term::list([]))],
            }
        );
        assert_eq!(up[10], &apply("supervisor", "restart_child", &["prim_sup", "ch_sup"]));
        let down = &down.instructions;
        assert_eq!(
            down[6].value,
            Instruction::CodeChange {
                mode: Some(Direction::Down),
                changes: vec![("prim_sup".into(), Term::list([]))],
            }
        );
        // Positions are those of the file: the down script's code_change is on line 24.
        assert_eq!(down[6].pos, Pos::new(24, 1));
    }

    /// The relup with every position cleared, to compare a relup with its rendering read
    /// back.
    fn unplaced(relup: &Relup) -> Relup {
        let mut relup = relup.clone();
        for entry in relup.up.iter_mut().chain(relup.down.iter_mut()) {
            entry.pos = Pos::new(0, 0);
            for instruction in &mut entry.instructions {
                instruction.pos = Pos::new(0, 0);
            }
        }
        relup
    }

    #[test]
    fn rendered_relups_read_back_the_same() {
        let seeds = [
            "included-app-restart.relup",
            "included-app-supervisor.relup",
            "service.relup",
            "service-3.relup",
        ];
        let mut relups: Vec<Relup> = seeds.into_iter().map(|name| seed(name).1).collect();
        let odd = "{\"C\", [{\"A\", \"from A\", []}, {\"B\", [x], [point_of_no_return]}], []}.";
        relups.push(parse_relup(path(), odd).expect("well-formed"));
        relups.push(parse_relup(path(), "{\"it's \\\"q\\\"\", [], []}.").expect("well-formed"));
        for relup in relups {
            let text = relup.render();
            let read = parse_relup(path(), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(unplaced(&read), unplaced(&relup), "{text}");
            // One instruction per line: each is alone on its line, with only brackets and
            // commas around it.
            for instruction in read.up.iter().chain(&read.down).flat_map(|e| &e.instructions) {
                let line = text.lines().nth(instruction.pos.line as usize - 1).unwrap_or("");
                let shown = instruction.value.to_string();
                let rest = line.trim_start().trim_start_matches('[').strip_prefix(shown.as_str());
                assert!(matches!(rest, Some("," | "]}," | "]}]," | "]}]")), "{line:?}");
            }
        }
        let (_, service) = seed("service.relup");
        let expected = r#"{"2",
 [{"1", [],
   [{load_object_code,{svc,"2",[svc_handler]}},
    point_of_no_return,
    {suspend,[svc_handler]},
    {load,{svc_handler,brutal_purge,brutal_purge}},
    {code_change,up,[{svc_handler,[]}]},
    {resume,[svc_handler]}]}],
 [{"1", [],
   [{load_object_code,{svc,"1",[svc_handler]}},
    point_of_no_return,
    {suspend,[svc_handler]},
    {code_change,down,[{svc_handler,[]}]},
    {load,{svc_handler,brutal_purge,brutal_purge}},
    {resume,[svc_handler]}]}]
}.
"#;
        assert_eq!(service.render(), expected);
    }

    /// The data-driven cases: `tests/relup_cases/good/*.relup` must parse and pass the
    /// checks; each `bad/*.relup` starts with `%% expect: LINE:COL: MESSAGE-PART` and must
    /// fail there with a message containing MESSAGE-PART. With `HOTCODE_BLESS=1` the
    /// expectation lines of bad cases are rewritten to the errors seen.
    #[test]
    fn relup_cases() {
        let root = &crate::release::test_crate_dir().join("tests/relup_cases");
        let bless = std::env::var_os("HOTCODE_BLESS").is_some();
        let mut failures = Vec::new();
        let mut counts = (0, 0);
        for (dir, good) in [("good", true), ("bad", false)] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
                .unwrap_or_else(|e| panic!("{}: {e}", root.join(dir).display()))
                .map(|entry| entry.expect("directory entry").path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "relup"))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).expect("readable case");
                let result =
                    parse_relup(&file, &text).and_then(|relup| relup.check(&file).map(|()| relup));
                let name = file.strip_prefix(root).unwrap_or(&file).display().to_string();
                if good {
                    counts.0 += 1;
                    if let Err(error) = result {
                        failures.push(format!("{name}: should pass, but {error}"));
                    }
                    continue;
                }
                counts.1 += 1;
                let error = match result {
                    Ok(_) => {
                        failures.push(format!("{name}: should fail, but passed"));
                        continue;
                    }
                    Err(error) => error,
                };
                let seen = match error.pos {
                    Some(pos) => format!("{pos}: {}", error.kind),
                    None => format!("?: {}", error.kind),
                };
                let first = text.lines().next().unwrap_or("");
                if bless {
                    let rest = text.split_once('\n').map_or("", |(_, rest)| rest);
                    std::fs::write(&file, format!("%% expect: {seen}\n{rest}")).expect("bless");
                    continue;
                }
                let Some(expected) = first.strip_prefix("%% expect: ") else {
                    failures.push(format!("{name}: first line must be `%% expect: L:C: message`"));
                    continue;
                };
                let (at, message) = expected.split_once(": ").unwrap_or((expected, ""));
                let position_matches = seen.split_once(": ").is_some_and(|(pos, _)| pos == at);
                if !position_matches || !error.kind.to_string().contains(message) {
                    failures.push(format!("{name}: expected {expected}\n    but got {seen}"));
                }
                assert!(error.path == file, "errors name the file");
            }
        }
        assert!(counts.0 >= 2 && counts.1 >= 9, "too few cases: {counts:?}");
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }
}
