//! Making a relup from the applications' `.appup` files, as OTP's `systools:make_relup` does.
//!
//! A relup script is long and easy to get wrong: every module needs its `load_object_code`
//! before the point of no return, every process that changes state must be suspended around
//! the load, and a downgrade converts state at a different moment than an upgrade. OTP's
//! answer is that people write, per application, a short `.appup` of *high-level*
//! instructions (`{update, Mod, {advanced, Extra}}`, `{load_module, Mod}`, ...), and a tool
//! writes the relup. [`make_relup`] is that tool for hotcode: it reads
//! `ROOT/releases/RELEASES`, the `.rel` of both releases and the `.app` of every application
//! involved, and for each application whose version differs between the two releases the
//! `.appup` of its *new* version (`<libdir>/<app>.appup`), and returns
//!
//! ```text
//! {To, [{From, [], UpInstructions}], [{From, [], DownInstructions}]}.
//! ```
//!
//! Hand-written relups remain for what an appup cannot say (SPEC §8's included-application
//! restarts are the example); [`write_relup`] writes the result where the release handler
//! looks for it.
//!
//! # How the scripts are put together
//!
//! As `systools` does, each direction is made from several scripts, in this order:
//! `remove_application` for every application that only the release being left has (except
//! included ones, see below), `add_application` for every application only the target
//! release has, then the up entry (from the old version) or down entry (to the old version)
//! of each changed application's appup, in the order of the new release's `.rel`. Upgrades
//! and downgrades both read the appup of the new version: it is the one that knows both.
//!
//! An application that another application of the same release *includes* is never started
//! by the controller (SPEC §4), so it is added with start type `load` (code and
//! `application:load`, no `application:start`) and removed without `application:stop`; its
//! removal comes *after* the appup scripts, because its processes live in its includer's
//! supervision tree, and the includer's appup must take them out of it before their code
//! goes.
//!
//! Every script is split at its own `point_of_no_return` (hotcode allows only
//! `load_object_code` before it), and the parts are merged: all `load_object_code` first,
//! merged into one per application (all of an application's modules in one instruction),
//! then one `point_of_no_return`, then everything else in order. Low-level instructions in
//! an appup pass through where they are written.
//!
//! # Translating the high-level instructions
//!
//! - `{update, Mod, ...}`: `suspend` the processes running `Mod`, `load` its new code,
//!   `code_change` them if the change is `{advanced, Extra}`, `resume` them. A `soft` update
//!   suspends, loads and resumes too (the processes meet the new code at their next callback,
//!   with no state conversion), exactly as `systools` does: `update` is for modules that
//!   processes run, `load_module` for those nobody runs. Upgrading, `code_change` comes after
//!   the `load` (the new code converts the old state up). Downgrading a `dynamic` module (the
//!   default; every callback module) it comes *before* the `load`: only the newer code knows
//!   both state layouts, so it converts its own state down while it is still current. A
//!   `static` module (`{update, Mod, supervisor}` is one, with `Extra` `[]`) is loaded first
//!   both ways.
//! - `{load_module, Mod, ...}` and `{add_module, Mod, ...}`: just `load`.
//! - `{delete_module, Mod, ...}`: `remove` then `purge`.
//! - `{add_application, App, Type}`: `load` each of its modules (as `add_module`), then
//!   `application:load` and, for `permanent`, `transient` or `temporary`,
//!   `application:start(App, Type)`. The controller only starts a loaded application, so
//!   the load is written out where OTP's `application:start` would do it implicitly.
//! - `{remove_application, App}`: `application:stop`, `remove` of each of its modules, one
//!   `purge` of them all, `application:unload`.
//! - `{restart_application, App}`: `application:stop`, `remove` and `purge` of the old
//!   version's modules, `load` of the new version's, `application:start(App, permanent)`.
//!
//! Every `load` gets a `load_object_code` from the target release's version of the
//! application that has the module: the new version upgrading, the old one downgrading.
//!
//! # DepMods
//!
//! `update`, `load_module`, `add_module` and `delete_module` may name the modules they depend
//! on (`DepMods`). Following `systools_rc` (OTP's source is the authority here; appup(4)
//! says the same for loads but claims suspends are reversed on downgrades, which the code
//! does not do), the instructions of modules connected by dependencies are translated
//! together, as one group, where the first of them is written:
//!
//! - *dependency order* puts every module before the modules it depends on (a topological
//!   order of the DepMods graph; modules in a dependency cycle, and modules with no order
//!   between them, keep the order of the appups);
//! - `suspend`: one instruction for the group, in dependency order, both ways: the callers
//!   stop before the modules they call, so no running caller waits on a suspended callee;
//! - `resume`: one instruction, in the reverse order: the callees run again first;
//! - `load` (and `remove`/`purge`) upgrading: reverse dependency order, so a module's new
//!   code only goes live once the new code of everything it depends on is there;
//! - `load` downgrading: dependency order, so a module goes back to its old code (which works
//!   with either version of what it depends on) before those modules lose the new functions
//!   its newer code may call;
//! - `code_change`: one instruction in dependency order (processes are suspended, so the
//!   order does not matter to them).
//!
//! As in `systools`, a module may be changed by only one such instruction per relup, and a
//! module named in `DepMods` must itself be changed by one (otherwise the order is
//! meaningless and the name is most likely a typo): both are errors naming the appup and
//! the instruction.
//!
//! # Errors
//!
//! A [`MakeRelupError`] names the file and, where it has one, the place and the appup
//! instruction concerned: `lib/svc-2/svc.appup:4:7: {update, svc_hnadler, ...}: module
//! svc_hnadler is not in svc 2's .app`. The finished relup is read back from its text and
//! checked with [`script_problems`] before it is returned; a problem found there is reported
//! against the appup instruction the offending relup instruction came from.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use plugin_api::Term;

use super::appup::{Appup, AppupInstruction, Change, ModType, StartType, Update};
use super::error::ParseError;
use super::files::{AppSpec, RelSpec, ReleaseEntry, read_releases, write_atomically};
use super::relup::{
    Direction, Instruction, PurgeMethod, Relup, RelupEntry, parse_relup, script_problems,
};
use super::terms::{Pos, Spanned};

/// A relup could not be made (or written).
///
/// It displays as `path:line:col: instruction: message`, leaving out the parts it does not
/// have; a [`MakeRelupErrorKind::Parse`] error displays as the [`ParseError`] it holds.
#[derive(Debug)]
pub struct MakeRelupError {
    /// The file the problem is in or about: an `.appup`, an `.app`, a `.rel`, RELEASES, or
    /// the relup being written.
    pub path: PathBuf,
    /// Where in that file, when the problem has a place.
    pub pos: Option<Pos>,
    /// The appup instruction concerned, as written (cut short), when there is one.
    pub instruction: Option<String>,
    /// What was wrong (boxed, so that a `Result` carrying the error stays small).
    pub kind: Box<MakeRelupErrorKind>,
}

impl MakeRelupError {
    fn new(path: &Path, pos: Option<Pos>, kind: MakeRelupErrorKind) -> MakeRelupError {
        MakeRelupError { path: path.to_path_buf(), pos, instruction: None, kind: Box::new(kind) }
    }
}

impl fmt::Display for MakeRelupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let MakeRelupErrorKind::Parse(error) = &*self.kind {
            return write!(f, "{error}");
        }
        write!(f, "{}", self.path.display())?;
        if let Some(pos) = self.pos {
            write!(f, ":{pos}")?;
        }
        f.write_str(": ")?;
        if let Some(instruction) = &self.instruction {
            write!(f, "{instruction}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

// As with `ParseError`, the underlying errors are part of the message rather than a
// `source`, so printing the whole chain does not say the same thing twice.
impl std::error::Error for MakeRelupError {}

impl From<ParseError> for MakeRelupError {
    fn from(error: ParseError) -> MakeRelupError {
        MakeRelupError {
            path: error.path.clone(),
            pos: error.pos,
            instruction: None,
            kind: Box::new(MakeRelupErrorKind::Parse(error)),
        }
    }
}

/// What kept a relup from being made.
///
/// The messages are written to follow `path:line:col: instruction: ` and read as one
/// sentence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MakeRelupErrorKind {
    /// A release file or appup could not be read or has the wrong shape.
    #[error("{0}")]
    Parse(ParseError),
    /// RELEASES has no release of that version.
    #[error("there is no release \"{vsn}\" in RELEASES")]
    NoRelease {
        /// The release asked for.
        vsn: String,
    },
    /// The two releases are the same one.
    #[error("a relup leads from one release to another, but both are \"{vsn}\"")]
    SameRelease {
        /// The release given twice.
        vsn: String,
    },
    /// RELEASES, a `.rel` and an `.app` disagree about a release.
    #[error("{0}")]
    Inconsistent(String),
    /// The releases run on different host versions: that needs a restart of the node (OTP's
    /// `restart_new_emulator`), which is not a relup's business in hotcode.
    #[error(
        "release \"{to}\" runs on hotcode {to_host}, release \"{from}\" on hotcode \
         {from_host}: changing the host needs a node restart, which a relup cannot do"
    )]
    HostChanged {
        /// The release upgraded from.
        from: String,
        /// Its host version.
        from_host: String,
        /// The release upgraded to.
        to: String,
        /// Its host version.
        to_host: String,
    },
    /// An application changes version, but its new version has no `.appup` (the error's path
    /// is where it was expected).
    #[error(
        "no .appup here, but application {app} changes from \"{from_vsn}\" to \"{to_vsn}\"; \
         write one saying how to upgrade from \"{from_vsn}\" and downgrade to it"
    )]
    MissingAppup {
        /// The application.
        app: String,
        /// Its version in the release upgraded from.
        from_vsn: String,
        /// Its version in the release upgraded to, whose directory should hold the appup.
        to_vsn: String,
    },
    /// The appup is for another version than the one beside which it lies.
    #[error("the appup is for {app} \"{appup_vsn}\", but it lies beside {app} \"{app_vsn}\"")]
    AppupVsn {
        /// The application.
        app: String,
        /// The version the appup names.
        appup_vsn: String,
        /// The version of the `.app` beside it.
        app_vsn: String,
    },
    /// The appup has no entry for the old version.
    #[error(
        "no {direction} entry {} \"{old_vsn}\": this relup takes {app} between \"{old_vsn}\" \
         and \"{new_vsn}\"",
        if *direction == Direction::Up { "from" } else { "to" }
    )]
    NoEntry {
        /// The application.
        app: String,
        /// Which list lacks the entry.
        direction: Direction,
        /// The version the entry should be for.
        old_vsn: String,
        /// The appup's version.
        new_vsn: String,
    },
    /// An instruction names a module that the application version it concerns does not have.
    #[error("module {module} is not in {app} {vsn}'s .app")]
    UnknownModule {
        /// The module.
        module: String,
        /// The application whose `.app` was searched first.
        app: String,
        /// The version of it searched.
        vsn: String,
    },
    /// An instruction names an application that the release it concerns does not have.
    #[error("application {app} is not in release \"{release}\", so it cannot be {action}")]
    ApplicationNotInRelease {
        /// The application.
        app: String,
        /// The release.
        release: String,
        /// What the instruction would do: `added`, `removed`, `restarted`.
        action: &'static str,
    },
    /// `remove_application` of an application the target release still has.
    #[error("application {app} is still in release \"{release}\", so it cannot be removed")]
    ApplicationStillInRelease {
        /// The application.
        app: String,
        /// The release that still has it.
        release: String,
    },
    /// `restart_application` of an included application, which only its includer can start.
    #[error(
        "application {app} is included in {includer}, whose supervisor runs its processes: \
         restart {includer} (or change its supervisor) instead"
    )]
    IncludedRestart {
        /// The included application.
        app: String,
        /// The application that includes it.
        includer: String,
    },
    /// Two instructions change one module.
    #[error(
        "module {module} is already changed by {first}; a relup may change a module with only \
         one update, load_module, add_module or delete_module"
    )]
    DuplicateModule {
        /// The module.
        module: String,
        /// Where the first instruction is, and what it is.
        first: String,
    },
    /// A `DepMods` entry that no instruction of the relup changes.
    #[error(
        "DepMods of {module} names {dependency}, which no update, load_module, add_module or \
         delete_module of this relup changes"
    )]
    UndefinedDependency {
        /// The module whose DepMods it is.
        module: String,
        /// The module named.
        dependency: String,
    },
    /// Two versions of one application's object code in one script.
    #[error(
        "object code of {app} \"{second}\", but the script already loads {app} \"{first}\"; \
         one script can load only one version of an application"
    )]
    ConflictingVersions {
        /// The application.
        app: String,
        /// The version loaded first.
        first: String,
        /// The other version.
        second: String,
    },
    /// Something other than `load_object_code` before an appup's `point_of_no_return`.
    #[error(
        "{name} before point_of_no_return: hotcode allows only load_object_code before it, \
         so that a failure there can still roll everything back"
    )]
    BeforePointOfNoReturn {
        /// The instruction's name.
        name: &'static str,
    },
    /// A second `point_of_no_return` in one appup entry.
    #[error("a second point_of_no_return (the first is at {first}); there may be only one")]
    DuplicatePointOfNoReturn {
        /// Where the first one is.
        first: Pos,
    },
    /// An instruction that a hotcode node cannot evaluate.
    #[error("{name} is not supported: {why}")]
    Unsupported {
        /// The instruction's name.
        name: &'static str,
        /// Why.
        why: &'static str,
    },
    /// The relup made would not pass the checks of [`script_problems`]; the error names the
    /// instruction it was made from.
    #[error("the relup made from this would be refused: {0}")]
    Script(ParseError),
    /// The relup text did not read back: a bug in the renderer.
    #[error("the rendered relup does not read back (a bug in hotcode): {0}")]
    Render(ParseError),
    /// [`write_relup`] was given the relup of another release.
    #[error("this is the relup of release \"{relup_vsn}\", not of \"{to}\"")]
    WrongRelease {
        /// The release the relup leads to.
        relup_vsn: String,
        /// The release it was to be written for.
        to: String,
    },
    /// The relup file could not be written.
    #[error("cannot write the relup ({0})")]
    Write(io::Error),
}

/// Where release `to`'s relup lives: `ROOT/releases/<to>/relup`.
pub fn relup_path(root: &Path, to: &str) -> PathBuf {
    root.join("releases").join(to).join("relup")
}

/// The text of the relup file for `relup`: a comment saying where it came from, then
/// [`Relup::render`]. [`make_relup`]'s positions are those of this text.
pub fn render_relup_file(relup: &Relup) -> String {
    format!(
        "%% The relup of release \"{}\", made by `hotcode make-relup` from the applications' \
         .appup files.\n{}",
        relup.vsn.escape_default(),
        relup.render()
    )
}

/// Writes `relup` to `ROOT/releases/<to>/relup` atomically ([`write_atomically`]), in the
/// text of [`render_relup_file`], and returns the path written.
pub fn write_relup(root: &Path, to: &str, relup: &Relup) -> Result<PathBuf, MakeRelupError> {
    let path = relup_path(root, to);
    if relup.vsn != to {
        return Err(MakeRelupError::new(
            &path,
            None,
            MakeRelupErrorKind::WrongRelease { relup_vsn: relup.vsn.clone(), to: to.to_owned() },
        ));
    }
    write_atomically(&path, render_relup_file(relup).as_bytes())
        .map_err(|error| MakeRelupError::new(&path, None, MakeRelupErrorKind::Write(error)))?;
    Ok(path)
}

/// Makes the relup of release `to` in the root `root`, with one up entry (from release
/// `from`) and one down entry (back to it), from the appups of the applications that change
/// between them, as the module documentation describes.
///
/// The relup returned is the one [`write_relup`] writes, read back from that text: its
/// positions are the file's, and it has passed [`script_problems`].
pub fn make_relup(root: &Path, from: &str, to: &str) -> Result<Relup, MakeRelupError> {
    let releases_path = root.join("releases").join("RELEASES");
    if from == to {
        return Err(MakeRelupError::new(
            &releases_path,
            None,
            MakeRelupErrorKind::SameRelease { vsn: from.to_owned() },
        ));
    }
    let entries = read_releases(&releases_path)?;
    let old = Release::read(root, &releases_path, &entries, from)?;
    let new = Release::read(root, &releases_path, &entries, to)?;
    if old.host_vsn != new.host_vsn {
        return Err(MakeRelupError::new(
            &new.rel_path,
            None,
            MakeRelupErrorKind::HostChanged {
                from: from.to_owned(),
                from_host: old.host_vsn.clone(),
                to: to.to_owned(),
                to_host: new.host_vsn.clone(),
            },
        ));
    }
    let changed = changed_apps(&old, &new)?;
    let path = relup_path(root, to);
    let up = Translation { direction: Direction::Up, target: &new, leaving: &old, relup: &path }
        .script(&changed)?;
    let down =
        Translation { direction: Direction::Down, target: &old, leaving: &new, relup: &path }
            .script(&changed)?;
    let entry = |script: &[(Instruction, Origin)]| RelupEntry {
        vsn: from.to_owned(),
        descr: Term::list([]),
        instructions: script
            .iter()
            .map(|(instruction, _)| Spanned::new(instruction.clone(), Pos::new(0, 0)))
            .collect(),
        pos: Pos::new(0, 0),
    };
    let relup = Relup { vsn: to.to_owned(), up: vec![entry(&up)], down: vec![entry(&down)] };
    // Read the relup back from the text that will be written, so that the positions are
    // the file's and the text is known to parse, then check it as `hotcode check` would.
    let relup = parse_relup(&path, &render_relup_file(&relup))
        .map_err(|error| MakeRelupError::new(&path, None, MakeRelupErrorKind::Render(error)))?;
    for (entry, origins) in relup.up.iter().zip([&up]).chain(relup.down.iter().zip([&down])) {
        if let Some(problem) = script_problems(&path, &entry.instructions).into_iter().next() {
            let index = entry.instructions.iter().position(|i| Some(i.pos) == problem.pos);
            let origin = index.and_then(|index| origins.get(index)).map(|(_, origin)| origin);
            return Err(match origin {
                Some(origin) if origin.text.is_some() => {
                    origin.error(MakeRelupErrorKind::Script(problem))
                }
                _ => MakeRelupError::new(&path, problem.pos, MakeRelupErrorKind::Script(problem)),
            });
        }
    }
    Ok(relup)
}

/// One release, with everything the translation needs to know about its applications.
struct Release {
    vsn: String,
    rel_path: PathBuf,
    host_vsn: String,
    /// In the order of the `.rel`, which is the boot order.
    apps: Vec<App>,
}

/// One application version of a release.
struct App {
    name: String,
    vsn: String,
    dir: PathBuf,
    spec: AppSpec,
}

impl Release {
    /// Reads release `vsn`: its entry in RELEASES (the library directories), its `.rel`
    /// (the applications, in boot order) and each application's `.app`, which must all agree.
    fn read(
        root: &Path,
        releases_path: &Path,
        entries: &[ReleaseEntry],
        vsn: &str,
    ) -> Result<Release, MakeRelupError> {
        let inconsistent = |path: &Path, message: String| {
            MakeRelupError::new(path, None, MakeRelupErrorKind::Inconsistent(message))
        };
        let Some(entry) = entries.iter().find(|entry| entry.vsn == vsn) else {
            return Err(MakeRelupError::new(
                releases_path,
                None,
                MakeRelupErrorKind::NoRelease { vsn: vsn.to_owned() },
            ));
        };
        let rel_path = root.join("releases").join(vsn).join(format!("{}.rel", entry.name));
        let rel = RelSpec::read(&rel_path)?;
        if rel.vsn != vsn {
            return Err(inconsistent(
                &rel_path,
                format!(
                    "this .rel is for release \"{}\", but it lies in release \"{vsn}\"",
                    rel.vsn
                ),
            ));
        }
        let mut apps = Vec::with_capacity(rel.apps.len());
        for rel_app in &rel.apps {
            let listed = entry.apps.iter().find(|app| app.name == rel_app.name);
            let Some(listed) = listed.filter(|app| app.vsn == rel_app.vsn) else {
                return Err(inconsistent(
                    releases_path,
                    format!(
                        "release \"{vsn}\" has no {} \"{}\" here, but its .rel ({}) lists it",
                        rel_app.name,
                        rel_app.vsn,
                        rel_path.display()
                    ),
                ));
            };
            let lib_dir = Path::new(&listed.lib_dir);
            let dir =
                if lib_dir.is_absolute() { lib_dir.to_path_buf() } else { root.join(lib_dir) };
            let app_path = dir.join(format!("{}.app", listed.name));
            let spec = AppSpec::read(&app_path)?;
            if spec.name != listed.name || spec.vsn != listed.vsn {
                return Err(inconsistent(
                    &app_path,
                    format!(
                        "this .app is for {} \"{}\", but release \"{vsn}\" has {} \"{}\" here",
                        spec.name, spec.vsn, listed.name, listed.vsn
                    ),
                ));
            }
            apps.push(App { name: listed.name.clone(), vsn: listed.vsn.clone(), dir, spec });
        }
        Ok(Release { vsn: vsn.to_owned(), rel_path, host_vsn: rel.host_vsn, apps })
    }

    fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.name == name)
    }

    /// The application of this release that includes `name`, if one does.
    fn includer_of(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.spec.included_applications.iter().any(|i| i == name))
    }

    /// The application that has `module`: `preferred` if it does, else the first one in
    /// boot order that does (as `systools` looks modules up).
    fn owner_of(&self, module: &str, preferred: &str) -> Option<&App> {
        let has = |app: &&App| app.spec.modules.iter().any(|m| m == module);
        self.app(preferred).filter(has).or_else(|| self.apps.iter().find(has))
    }
}

/// An application whose version changes, with the appup of its new version.
struct Changed {
    app: String,
    old_vsn: String,
    new_vsn: String,
    path: PathBuf,
    appup: Appup,
}

/// The applications of `new` whose version differs in `old`, with their appups, in the order
/// of `new`'s `.rel`.
fn changed_apps(old: &Release, new: &Release) -> Result<Vec<Changed>, MakeRelupError> {
    let mut changed = Vec::new();
    for app in &new.apps {
        let Some(before) = old.app(&app.name).filter(|before| before.vsn != app.vsn) else {
            continue;
        };
        let path = app.dir.join(format!("{}.appup", app.name));
        if !path.is_file() {
            return Err(MakeRelupError::new(
                &path,
                None,
                MakeRelupErrorKind::MissingAppup {
                    app: app.name.clone(),
                    from_vsn: before.vsn.clone(),
                    to_vsn: app.vsn.clone(),
                },
            ));
        }
        let appup = Appup::read(&path)?;
        if appup.vsn != app.vsn {
            return Err(MakeRelupError::new(
                &path,
                Some(appup.vsn_pos),
                MakeRelupErrorKind::AppupVsn {
                    app: app.name.clone(),
                    appup_vsn: appup.vsn.clone(),
                    app_vsn: app.vsn.clone(),
                },
            ));
        }
        changed.push(Changed {
            app: app.name.clone(),
            old_vsn: before.vsn.clone(),
            new_vsn: app.vsn.clone(),
            path,
            appup,
        });
    }
    Ok(changed)
}

/// Where an instruction of the generated script comes from, for messages.
#[derive(Debug, Clone)]
struct Origin {
    /// The appup, the `.rel` (for an application added or removed) or the relup itself.
    path: PathBuf,
    pos: Option<Pos>,
    /// The instruction as written in the appup, or the one a release difference implies;
    /// `None` for what the generator adds on its own (`point_of_no_return`).
    text: Option<String>,
}

impl Origin {
    fn error(&self, kind: MakeRelupErrorKind) -> MakeRelupError {
        MakeRelupError {
            path: self.path.clone(),
            pos: self.pos,
            instruction: self.text.clone(),
            kind: Box::new(kind),
        }
    }

    /// The place and the instruction, for a message about another instruction.
    fn describe(&self) -> String {
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
struct Sourced {
    instruction: AppupInstruction,
    origin: Origin,
    app: String,
}

/// An instruction after the expansion of the application-level ones: either one that takes
/// part in the DepMods ordering, or a low-level one that stays where it is.
enum Step {
    Dep(DepStep),
    Low(Instruction),
}

/// `update`, `load_module` (and `add_module`, which is one) or `delete_module`.
struct DepStep {
    module: String,
    action: DepAction,
    dep_mods: Vec<String>,
}

enum DepAction {
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
type Script = Vec<(Instruction, Origin)>;

/// The making of one direction's script.
struct Translation<'a> {
    direction: Direction,
    /// The release the script leads to: the code it loads is this release's.
    target: &'a Release,
    /// The release the script leaves.
    leaving: &'a Release,
    /// The relup being made, for the instructions the generator adds on its own.
    relup: &'a Path,
}

impl Translation<'_> {
    /// The whole low-level script, each instruction with its origin.
    fn script(&self, changed: &[Changed]) -> Result<Script, MakeRelupError> {
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
    fn merged_scripts(
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
        let mut scripts: Vec<Vec<Sourced>> = Vec::new();
        for app in removed.iter().filter(|app| self.leaving.includer_of(&app.name).is_none()) {
            scripts.push(remove(app));
        }
        for app in self.target.apps.iter().filter(|app| self.leaving.app(&app.name).is_none()) {
            let start = match self.target.includer_of(&app.name) {
                Some(_) => StartType::Load,
                None => StartType::Permanent,
            };
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
        for app in removed.iter().filter(|app| self.leaving.includer_of(&app.name).is_some()) {
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
    fn appup_script(&self, changed: &Changed) -> Result<Vec<Sourced>, MakeRelupError> {
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
    fn expand(&self, sourced: &Sourced) -> Result<Vec<Step>, MakeRelupError> {
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
                if *start != StartType::None {
                    steps.push(apply("load", vec![Term::atom(app)]));
                }
                if !matches!(start, StartType::None | StartType::Load) {
                    steps.push(apply("start", vec![Term::atom(app), Term::atom(start.as_str())]));
                }
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
                // An included application was never started by the controller, so it is
                // not stopped by it either: its includer's script takes its processes down.
                if self.leaving.includer_of(app).is_none() {
                    steps.push(apply("stop", vec![Term::atom(app)]));
                }
                steps.extend(removed_modules(&removed.spec.modules));
                steps.push(apply("unload", vec![Term::atom(app)]));
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
                steps.push(apply("start", vec![Term::atom(app), Term::atom("permanent")]));
                steps
            }
            AppupInstruction::Low(instruction) => match instruction {
                Instruction::SyncNodes { .. } => {
                    return Err(error(MakeRelupErrorKind::Unsupported {
                        name: "sync_nodes",
                        why: "it needs several nodes, and a hotcode node runs alone",
                    }));
                }
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
    fn lib_of(&self, sourced: &Sourced, module: &str) -> Result<(String, String), MakeRelupError> {
        match self.target.owner_of(module, &sourced.app) {
            Some(app) => Ok((app.name.clone(), app.vsn.clone())),
            None => Err(sourced.origin.error(self.unknown_module(self.target, sourced, module))),
        }
    }

    fn unknown_module(
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
    fn translate_dependent(
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
    fn translate_group(
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

/// A high-level instruction that the difference between the releases implies.
fn implied(instruction: AppupInstruction, rel: &Path, app: &str, text: String) -> Sourced {
    Sourced {
        instruction,
        origin: Origin { path: rel.to_path_buf(), pos: None, text: Some(text) },
        app: app.to_owned(),
    }
}

fn is_point_of_no_return(instruction: &AppupInstruction) -> bool {
    matches!(instruction, AppupInstruction::Low(Instruction::PointOfNoReturn))
}

/// The name an instruction starts with, for messages.
fn name_of(instruction: &AppupInstruction) -> &'static str {
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
fn removed_modules(modules: &[String]) -> Vec<Step> {
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

fn object_code_of((app, app_vsn): &(String, String), module: &str) -> Instruction {
    Instruction::LoadObjectCode {
        app: app.clone(),
        app_vsn: app_vsn.clone(),
        modules: vec![module.to_owned()],
    }
}

/// Merges the `load_object_code` instructions into one per application, in the order the
/// applications first appear, each listing its modules once in the order they first
/// appear. One script can only load one version of an application.
fn merge_object_code(
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

/// The nodes of the DepMods graph (`edges[a]` holds the nodes `a` depends on; nodes are
/// numbered in script order) in *dependency order*: every node before the nodes it depends
/// on. Nodes in one cycle, and nodes with no order between them, keep their script order:
/// the order is a topological order of the graph's strongly connected components in which,
/// whenever several components could come next, the one written first does.
fn dependency_order(edges: &[Vec<usize>]) -> Vec<usize> {
    let count = edges.len();
    // What each node reaches; the graphs are a few dozen modules at most, so a search per
    // node is simpler than it is slow.
    let reaches: Vec<Vec<bool>> = (0..count)
        .map(|start| {
            let mut seen = vec![false; count];
            let mut stack = vec![start];
            while let Some(node) = stack.pop() {
                if !std::mem::replace(&mut seen[node], true) {
                    stack.extend(&edges[node]);
                }
            }
            seen
        })
        .collect();
    // Each node's component is named by its first member.
    let component: Vec<usize> = (0..count)
        .map(|node| {
            (0..count).find(|&other| reaches[node][other] && reaches[other][node]).unwrap_or(node)
        })
        .collect();
    let mut component_edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (node, targets) in edges.iter().enumerate() {
        for &target in targets {
            if component[node] != component[target] {
                component_edges.insert((component[node], component[target]));
            }
        }
    }
    let mut incoming = vec![0usize; count];
    for &(_, to) in &component_edges {
        incoming[to] += 1;
    }
    let mut ready: BTreeSet<usize> =
        (0..count).filter(|&node| component[node] == node && incoming[node] == 0).collect();
    let mut order = Vec::with_capacity(count);
    while let Some(next) = ready.pop_first() {
        order.extend((0..count).filter(|&node| component[node] == next));
        for &(_, to) in component_edges.range((next, 0)..=(next, usize::MAX)) {
            incoming[to] -= 1;
            if incoming[to] == 0 {
                ready.insert(to);
            }
        }
    }
    order
}

/// The weakly connected component of each node of the DepMods graph, named by a
/// representative node: the modules translated together.
fn weak_components(edges: &[Vec<usize>]) -> Vec<usize> {
    fn root(parent: &mut [usize], mut node: usize) -> usize {
        while parent[node] != node {
            parent[node] = parent[parent[node]];
            node = parent[node];
        }
        node
    }
    let mut parent: Vec<usize> = (0..edges.len()).collect();
    for (node, targets) in edges.iter().enumerate() {
        for &target in targets {
            let (a, b) = (root(&mut parent, node), root(&mut parent, target));
            parent[a.max(b)] = a.min(b);
        }
    }
    (0..edges.len()).map(|node| root(&mut parent, node)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An application version of a synthetic root.
    #[derive(Clone, Copy)]
    struct AppV {
        name: &'static str,
        vsn: &'static str,
        modules: &'static [&'static str],
        includes: &'static [&'static str],
    }

    const fn app(name: &'static str, vsn: &'static str, modules: &'static [&'static str]) -> AppV {
        AppV { name, vsn, modules, includes: &[] }
    }

    /// Application `a`: version 2 drops module `x` and adds `n`.
    const A1: AppV = app("a", "1", &["m1", "m2", "m3", "x"]);
    const A2: AppV = app("a", "2", &["m1", "m2", "m3", "n"]);
    const B1: AppV = app("b", "1", &["b1", "b2"]);
    const C1: AppV = app("c", "1", &["c1"]);

    /// A root laid out as SPEC §6 with `releases` (the first permanent), their `.rel` files,
    /// RELEASES, each application's `.app` (no `.so`: making a relup never reads one), and
    /// `appups`: `(app-vsn, text)`, written to `lib/<app-vsn>/<app>.appup`.
    fn root(releases: &[(&str, &[AppV])], appups: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::Builder::new().prefix("make-relup-").tempdir().expect("temp dir");
        let r = root.path();
        let mut entries = Vec::new();
        for (index, (vsn, apps)) in releases.iter().enumerate() {
            for a in apps.iter() {
                let dir = r.join("lib").join(format!("{}-{}", a.name, a.vsn));
                std::fs::create_dir_all(&dir).expect("lib dir");
                let spec = format!(
                    "{{application, {}, [{{vsn, \"{}\"}}, {{modules, [{}]}}, \
                     {{included_applications, [{}]}}]}}.\n",
                    a.name,
                    a.vsn,
                    a.modules.join(", "),
                    a.includes.join(", ")
                );
                std::fs::write(dir.join(format!("{}.app", a.name)), spec).expect(".app");
            }
            let dir = r.join("releases").join(vsn);
            std::fs::create_dir_all(&dir).expect("release dir");
            let rel_apps: Vec<String> =
                apps.iter().map(|a| format!("{{{}, \"{}\"}}", a.name, a.vsn)).collect();
            let rel = format!(
                "{{release, {{\"r\", \"{vsn}\"}}, {{hotcode, \"0.1.0\"}}, [{}]}}.\n",
                rel_apps.join(", ")
            );
            std::fs::write(dir.join("r.rel"), rel).expect(".rel");
            let libs: Vec<String> = apps
                .iter()
                .map(|a| format!("{{{}, \"{}\", \"lib/{}-{}\"}}", a.name, a.vsn, a.name, a.vsn))
                .collect();
            let status = if index == 0 { "permanent" } else { "unpacked" };
            entries.push(format!(
                "{{release, \"r\", \"{vsn}\", \"0.1.0\", [{}], {status}}}",
                libs.join(", ")
            ));
        }
        std::fs::write(r.join("releases/RELEASES"), format!("[{}].\n", entries.join(",\n ")))
            .expect("RELEASES");
        for (app_vsn, text) in appups {
            let app = app_vsn.rsplit_once('-').map_or(*app_vsn, |(app, _)| app);
            std::fs::write(r.join("lib").join(app_vsn).join(format!("{app}.appup")), text)
                .expect(".appup");
        }
        root
    }

    /// The root of most cases: release "1" with `a` 1, release "2" with `a` 2, whose appup
    /// has `up` as its entry from "1" and `down` as its entry to "1".
    fn a_root(up: &str, down: &str) -> tempfile::TempDir {
        let appup = format!("{{\"2\",\n [{{\"1\", [{up}]}}],\n [{{\"1\", [{down}]}}]}}.\n");
        root(&[("1", &[A1]), ("2", &[A2])], &[("a-2", &appup)])
    }

    /// The up and down scripts of the relup from "1" to "2", one instruction per string.
    fn scripts(root: &Path) -> (Vec<String>, Vec<String>) {
        let relup = make_relup(root, "1", "2").unwrap_or_else(|e| panic!("{e}"));
        let text = |entry: &RelupEntry| {
            entry.instructions.iter().map(|i| i.value.to_string()).collect::<Vec<_>>()
        };
        assert_eq!((relup.up.len(), relup.down.len()), (1, 1));
        (text(&relup.up[0]), text(&relup.down[0]))
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// Every high-level instruction, written in the up entry and the down entry, with the
    /// exact scripts expected: `(case, up entry, down entry, up script, down script)`.
    const TRANSLATIONS: &[(&str, &str, &str, &str, &str)] = &[
        (
            "update advanced: code_change after the load up, before it down",
            "{update, m1, {advanced, x}}",
            "{update, m1, {advanced, x}}",
            r#"{load_object_code,{a,"2",[m1]}}
               point_of_no_return
               {suspend,[m1]}
               {load,{m1,brutal_purge,brutal_purge}}
               {code_change,up,[{m1,x}]}
               {resume,[m1]}"#,
            r#"{load_object_code,{a,"1",[m1]}}
               point_of_no_return
               {suspend,[m1]}
               {code_change,down,[{m1,x}]}
               {load,{m1,brutal_purge,brutal_purge}}
               {resume,[m1]}"#,
        ),
        (
            "update soft (the default change): suspend, load, resume, no code_change",
            "{update, m1}",
            "{update, m1, soft}",
            r#"{load_object_code,{a,"2",[m1]}}
               point_of_no_return
               {suspend,[m1]}
               {load,{m1,brutal_purge,brutal_purge}}
               {resume,[m1]}"#,
            r#"{load_object_code,{a,"1",[m1]}}
               point_of_no_return
               {suspend,[m1]}
               {load,{m1,brutal_purge,brutal_purge}}
               {resume,[m1]}"#,
        ),
        (
            "update supervisor: static with Extra [], so loaded first both ways",
            "{update, m1, supervisor}",
            "{update, m1, supervisor}",
            r#"{load_object_code,{a,"2",[m1]}}
               point_of_no_return
               {suspend,[m1]}
               {load,{m1,brutal_purge,brutal_purge}}
               {code_change,up,[{m1,[]}]}
               {resume,[m1]}"#,
            r#"{load_object_code,{a,"1",[m1]}}
               point_of_no_return
               {suspend,[m1]}
               {load,{m1,brutal_purge,brutal_purge}}
               {code_change,down,[{m1,[]}]}
               {resume,[m1]}"#,
        ),
        (
            "update with every field: ModType, Timeout, purge methods",
            "{update, m1, static, 100, {advanced, [1]}, soft_purge, soft_purge, []}",
            "{update, m1, dynamic, infinity, {advanced, [1]}, brutal_purge, soft_purge, []}",
            r#"{load_object_code,{a,"2",[m1]}}
               point_of_no_return
               {suspend,[{m1,100}]}
               {load,{m1,soft_purge,soft_purge}}
               {code_change,up,[{m1,[1]}]}
               {resume,[m1]}"#,
            r#"{load_object_code,{a,"1",[m1]}}
               point_of_no_return
               {suspend,[{m1,infinity}]}
               {code_change,down,[{m1,[1]}]}
               {load,{m1,brutal_purge,soft_purge}}
               {resume,[m1]}"#,
        ),
        (
            "update with a Timeout and a soft change",
            "{update, m1, 2000, soft, brutal_purge, brutal_purge, []}",
            "{update, m1, {advanced, []}, []}",
            r#"{load_object_code,{a,"2",[m1]}}
               point_of_no_return
               {suspend,[{m1,2000}]}
               {load,{m1,brutal_purge,brutal_purge}}
               {resume,[m1]}"#,
            r#"{load_object_code,{a,"1",[m1]}}
               point_of_no_return
               {suspend,[m1]}
               {code_change,down,[{m1,[]}]}
               {load,{m1,brutal_purge,brutal_purge}}
               {resume,[m1]}"#,
        ),
        (
            "load_module: just a load",
            "{load_module, m1}",
            "{load_module, m1, soft_purge, brutal_purge, []}",
            r#"{load_object_code,{a,"2",[m1]}}
               point_of_no_return
               {load,{m1,brutal_purge,brutal_purge}}"#,
            r#"{load_object_code,{a,"1",[m1]}}
               point_of_no_return
               {load,{m1,soft_purge,brutal_purge}}"#,
        ),
        (
            "add_module up is delete_module down",
            "{add_module, n}",
            "{delete_module, n}",
            r#"{load_object_code,{a,"2",[n]}}
               point_of_no_return
               {load,{n,brutal_purge,brutal_purge}}"#,
            r#"point_of_no_return
               {remove,{n,brutal_purge,brutal_purge}}
               {purge,[n]}"#,
        ),
        (
            "delete_module up is add_module down",
            "{delete_module, x, []}",
            "{add_module, x, []}",
            r#"point_of_no_return
               {remove,{x,brutal_purge,brutal_purge}}
               {purge,[x]}"#,
            r#"{load_object_code,{a,"1",[x]}}
               point_of_no_return
               {load,{x,brutal_purge,brutal_purge}}"#,
        ),
        (
            "restart_application: stop, old modules out, new ones in, start",
            "{restart_application, a}",
            "{restart_application, a}",
            r#"{load_object_code,{a,"2",[m1,m2,m3,n]}}
               point_of_no_return
               {apply,{application,stop,[a]}}
               {remove,{m1,brutal_purge,brutal_purge}}
               {remove,{m2,brutal_purge,brutal_purge}}
               {remove,{m3,brutal_purge,brutal_purge}}
               {remove,{x,brutal_purge,brutal_purge}}
               {purge,[m1,m2,m3,x]}
               {load,{m1,brutal_purge,brutal_purge}}
               {load,{m2,brutal_purge,brutal_purge}}
               {load,{m3,brutal_purge,brutal_purge}}
               {load,{n,brutal_purge,brutal_purge}}
               {apply,{application,start,[a,permanent]}}"#,
            r#"{load_object_code,{a,"1",[m1,m2,m3,x]}}
               point_of_no_return
               {apply,{application,stop,[a]}}
               {remove,{m1,brutal_purge,brutal_purge}}
               {remove,{m2,brutal_purge,brutal_purge}}
               {remove,{m3,brutal_purge,brutal_purge}}
               {remove,{n,brutal_purge,brutal_purge}}
               {purge,[m1,m2,m3,n]}
               {load,{m1,brutal_purge,brutal_purge}}
               {load,{m2,brutal_purge,brutal_purge}}
               {load,{m3,brutal_purge,brutal_purge}}
               {load,{x,brutal_purge,brutal_purge}}
               {apply,{application,start,[a,permanent]}}"#,
        ),
        (
            "low-level instructions pass through where they are written; object code first",
            "{apply, {m2, prepare, [1]}}, {load_module, m1}, {apply, {m2, done, []}}",
            "{load_object_code, {a, \"1\", [m2]}}, point_of_no_return, \
             {load, {m2, brutal_purge, brutal_purge}}, {load_module, m1}",
            r#"{load_object_code,{a,"2",[m1]}}
               point_of_no_return
               {apply,{m2,prepare,[1]}}
               {load,{m1,brutal_purge,brutal_purge}}
               {apply,{m2,done,[]}}"#,
            r#"{load_object_code,{a,"1",[m2,m1]}}
               point_of_no_return
               {load,{m2,brutal_purge,brutal_purge}}
               {load,{m1,brutal_purge,brutal_purge}}"#,
        ),
    ];

    #[test]
    fn every_high_level_instruction_translates_as_systools_does() {
        for (case, up, down, expected_up, expected_down) in TRANSLATIONS {
            let root = a_root(up, down);
            let (generated_up, generated_down) = scripts(root.path());
            assert_eq!(generated_up, lines(expected_up), "{case}: up");
            assert_eq!(generated_down, lines(expected_down), "{case}: down");
        }
    }

    /// DepMods: `(case, up entry = down entry, up script, down script)`. In dependency
    /// order (every module before the ones it depends on) suspend and code_change go both
    /// ways; loads go in reverse up (dependencies first) and in order down; resume in
    /// reverse. Where the instructions are written does not change the order, only where
    /// the group goes.
    const DEP_MODS: &[(&str, &str, &str, &str)] = &[
        (
            "a chain m1 -> m2 -> m3",
            "{update, m1, {advanced, []}, [m2]}, {update, m2, {advanced, []}, [m3]}, \
             {update, m3, {advanced, []}, []}",
            r#"{load_object_code,{a,"2",[m1,m2,m3]}}
               point_of_no_return
               {suspend,[m1,m2,m3]}
               {load,{m3,brutal_purge,brutal_purge}}
               {load,{m2,brutal_purge,brutal_purge}}
               {load,{m1,brutal_purge,brutal_purge}}
               {code_change,up,[{m1,[]},{m2,[]},{m3,[]}]}
               {resume,[m3,m2,m1]}"#,
            r#"{load_object_code,{a,"1",[m1,m2,m3]}}
               point_of_no_return
               {suspend,[m1,m2,m3]}
               {code_change,down,[{m1,[]},{m2,[]},{m3,[]}]}
               {load,{m1,brutal_purge,brutal_purge}}
               {load,{m2,brutal_purge,brutal_purge}}
               {load,{m3,brutal_purge,brutal_purge}}
               {resume,[m3,m2,m1]}"#,
        ),
        (
            "the same chain written backwards",
            "{update, m3, {advanced, []}}, {update, m2, {advanced, []}, [m3]}, \
             {update, m1, {advanced, []}, [m2]}",
            r#"{load_object_code,{a,"2",[m1,m2,m3]}}
               point_of_no_return
               {suspend,[m1,m2,m3]}
               {load,{m3,brutal_purge,brutal_purge}}
               {load,{m2,brutal_purge,brutal_purge}}
               {load,{m1,brutal_purge,brutal_purge}}
               {code_change,up,[{m1,[]},{m2,[]},{m3,[]}]}
               {resume,[m3,m2,m1]}"#,
            r#"{load_object_code,{a,"1",[m1,m2,m3]}}
               point_of_no_return
               {suspend,[m1,m2,m3]}
               {code_change,down,[{m1,[]},{m2,[]},{m3,[]}]}
               {load,{m1,brutal_purge,brutal_purge}}
               {load,{m2,brutal_purge,brutal_purge}}
               {load,{m3,brutal_purge,brutal_purge}}
               {resume,[m3,m2,m1]}"#,
        ),
        (
            "m1 depends on a library m3; m2 is unrelated and stays where it is written",
            "{load_module, m3}, {load_module, m2}, {update, m1, {advanced, []}, [m3]}",
            r#"{load_object_code,{a,"2",[m1,m3,m2]}}
               point_of_no_return
               {suspend,[m1]}
               {load,{m3,brutal_purge,brutal_purge}}
               {load,{m1,brutal_purge,brutal_purge}}
               {code_change,up,[{m1,[]}]}
               {resume,[m1]}
               {load,{m2,brutal_purge,brutal_purge}}"#,
            r#"{load_object_code,{a,"1",[m1,m3,m2]}}
               point_of_no_return
               {suspend,[m1]}
               {code_change,down,[{m1,[]}]}
               {load,{m1,brutal_purge,brutal_purge}}
               {load,{m3,brutal_purge,brutal_purge}}
               {resume,[m1]}
               {load,{m2,brutal_purge,brutal_purge}}"#,
        ),
        (
            "a cycle m1 <-> m2 keeps the written order, and m3 (on which m2 depends) follows",
            "{update, m2, {advanced, []}, [m1, m3]}, {update, m1, {advanced, []}, [m2]}, \
             {update, m3, {advanced, []}}",
            r#"{load_object_code,{a,"2",[m2,m1,m3]}}
               point_of_no_return
               {suspend,[m2,m1,m3]}
               {load,{m3,brutal_purge,brutal_purge}}
               {load,{m1,brutal_purge,brutal_purge}}
               {load,{m2,brutal_purge,brutal_purge}}
               {code_change,up,[{m2,[]},{m1,[]},{m3,[]}]}
               {resume,[m3,m1,m2]}"#,
            r#"{load_object_code,{a,"1",[m2,m1,m3]}}
               point_of_no_return
               {suspend,[m2,m1,m3]}
               {code_change,down,[{m2,[]},{m1,[]},{m3,[]}]}
               {load,{m2,brutal_purge,brutal_purge}}
               {load,{m1,brutal_purge,brutal_purge}}
               {load,{m3,brutal_purge,brutal_purge}}
               {resume,[m3,m1,m2]}"#,
        ),
    ];

    #[test]
    fn dep_mods_order_loads_suspends_and_resumes_up_and_down() {
        for (case, entry, expected_up, expected_down) in DEP_MODS {
            let root = a_root(entry, entry);
            let (up, down) = scripts(root.path());
            assert_eq!(up, lines(expected_up), "{case}: up");
            assert_eq!(down, lines(expected_down), "{case}: down");
        }
    }

    #[test]
    fn applications_added_and_removed_between_releases() {
        // b is new in release 2: added (loaded and started) going up, removed going down.
        let root = root(&[("1", &[A1]), ("2", &[A1, B1])], &[]);
        let (up, down) = scripts(root.path());
        assert_eq!(
            up,
            lines(
                r#"{load_object_code,{b,"1",[b1,b2]}}
                   point_of_no_return
                   {load,{b1,brutal_purge,brutal_purge}}
                   {load,{b2,brutal_purge,brutal_purge}}
                   {apply,{application,load,[b]}}
                   {apply,{application,start,[b,permanent]}}"#
            )
        );
        assert_eq!(
            down,
            lines(
                r#"point_of_no_return
                   {apply,{application,stop,[b]}}
                   {remove,{b1,brutal_purge,brutal_purge}}
                   {remove,{b2,brutal_purge,brutal_purge}}
                   {purge,[b1,b2]}
                   {apply,{application,unload,[b]}}"#
            )
        );
    }

    #[test]
    fn an_included_application_is_loaded_before_and_removed_after_its_includers_script() {
        // Release 2's a includes c, which its supervisor starts: c is loaded, never
        // started, before a's script going up; removed, never stopped, after it going down.
        const A2_WITH_C: AppV = AppV { includes: &["c"], ..A2 };
        let appup = "{\"2\", [{\"1\", [{update, m1, supervisor}]}], \
                     [{\"1\", [{update, m1, supervisor}]}]}.";
        let root = root(&[("1", &[A1]), ("2", &[A2_WITH_C, C1])], &[("a-2", appup)]);
        let (up, down) = scripts(root.path());
        assert_eq!(
            up,
            lines(
                r#"{load_object_code,{c,"1",[c1]}}
                   {load_object_code,{a,"2",[m1]}}
                   point_of_no_return
                   {load,{c1,brutal_purge,brutal_purge}}
                   {apply,{application,load,[c]}}
                   {suspend,[m1]}
                   {load,{m1,brutal_purge,brutal_purge}}
                   {code_change,up,[{m1,[]}]}
                   {resume,[m1]}"#
            )
        );
        assert_eq!(
            down,
            lines(
                r#"{load_object_code,{a,"1",[m1]}}
                   point_of_no_return
                   {suspend,[m1]}
                   {load,{m1,brutal_purge,brutal_purge}}
                   {code_change,down,[{m1,[]}]}
                   {resume,[m1]}
                   {remove,{c1,brutal_purge,brutal_purge}}
                   {purge,[c1]}
                   {apply,{application,unload,[c]}}"#
            )
        );
    }

    #[test]
    fn add_application_start_types() {
        let cases = [
            ("", "{apply,{application,load,[b]}} {apply,{application,start,[b,permanent]}}"),
            (
                ", temporary",
                "{apply,{application,load,[b]}} {apply,{application,start,[b,temporary]}}",
            ),
            (", load", "{apply,{application,load,[b]}}"),
            (", none", ""),
        ];
        for (start, applies) in cases {
            // b is in both releases, so only the appup's own add_application adds it (a
            // release that gains b would add it without being asked, as permanent).
            let appup = format!(
                "{{\"2\", [{{\"1\", [{{add_application, b{start}}}]}}], [{{\"1\", []}}]}}."
            );
            let root = root(&[("1", &[A1, B1]), ("2", &[A2, B1])], &[("a-2", &appup)]);
            let (up, _) = scripts(root.path());
            let mut expected = lines(
                r#"{load_object_code,{b,"1",[b1,b2]}}
                   point_of_no_return
                   {load,{b1,brutal_purge,brutal_purge}}
                   {load,{b2,brutal_purge,brutal_purge}}"#,
            );
            expected.extend(applies.split_whitespace().map(str::to_owned));
            assert_eq!(up, expected, "{start}");
        }
    }

    /// `(case, releases: 1 = a 1, 2 = a 2, appup of a 2 or None, expected message tail)`.
    /// Messages start with `path:line:col: ` relative to the root; the part after the root
    /// is compared.
    #[test]
    fn errors_name_the_appup_and_the_instruction() {
        let appup = |up: &str, down: &str| {
            Some(format!("{{\"2\",\n [{{\"1\", [{up}]}}],\n [{{\"1\", [{down}]}}]}}.\n"))
        };
        let cases: Vec<(&str, Option<String>, &str)> = vec![
            (
                "missing appup",
                None,
                "lib/a-2/a.appup: no .appup here, but application a changes from \"1\" to \"2\"",
            ),
            (
                "bad syntax",
                Some("{\"2\",\n [{\"1\", [{update, m1}]}]\n [{\"1\", []}]}.\n".to_owned()),
                "lib/a-2/a.appup:3:2: expected ',' or '}'",
            ),
            (
                "bad shape",
                appup("{update, m1, {advanced, []}}", "{update, m1, sideways}"),
                "lib/a-2/a.appup:3:23: expected supervisor, soft, {advanced, Extra} or [Mod], \
                 found sideways, in {update, Mod, ...}",
            ),
            (
                "unknown module",
                appup("{update, m1}", "{update, svc_hnadler, {advanced, []}}"),
                "lib/a-2/a.appup:3:10: {update, svc_hnadler, {advanced, []}}: module \
                 svc_hnadler is not in a 1's .app",
            ),
            (
                "unknown module up",
                appup("{load_module, x}", "{load_module, x}"),
                "lib/a-2/a.appup:2:10: {load_module, x}: module x is not in a 2's .app",
            ),
            (
                "nothing to delete",
                appup("{delete_module, n}", ""),
                "lib/a-2/a.appup:2:10: {delete_module, n}: module n is not in a 1's .app",
            ),
            (
                "no entry for the old version",
                Some("{\"2\", [{\"0\", []}],\n [{\"1\", []}]}.".to_owned()),
                "lib/a-2/a.appup:1:7: no up entry from \"1\": this relup takes a between \"1\" \
                 and \"2\"",
            ),
            (
                "no down entry",
                Some("{\"2\", [{\"1\", []}],\n [{\"0\", []}]}.".to_owned()),
                "lib/a-2/a.appup:2:2: no down entry to \"1\"",
            ),
            (
                "appup for another version",
                Some("{\"3\", [{\"1\", []}], [{\"1\", []}]}.".to_owned()),
                "lib/a-2/a.appup:1:2: the appup is for a \"3\", but it lies beside a \"2\"",
            ),
            (
                "undefined dependency",
                appup("{update, m1, {advanced, []}, [m9]}", ""),
                "lib/a-2/a.appup:2:10: {update, m1, {advanced, []}, [m9]}: DepMods of m1 names \
                 m9, which no update",
            ),
            (
                "a module changed twice",
                appup("{load_module, m1},\n {update, m1}", ""),
                "lib/a-2/a.appup:3:2: {update, m1}: module m1 is already changed by \
                 {load_module, m1} at ",
            ),
            (
                "something else before the point of no return",
                appup("{apply, {m1, f, []}}, point_of_no_return", ""),
                "lib/a-2/a.appup:2:10: {apply, {m1, f, []}}: apply before point_of_no_return",
            ),
            (
                "two points of no return",
                appup("point_of_no_return, point_of_no_return", ""),
                "lib/a-2/a.appup:2:30: point_of_no_return: a second point_of_no_return (the \
                 first is at 2:10)",
            ),
            (
                "unsupported",
                appup("restart_emulator", ""),
                "lib/a-2/a.appup:2:10: restart_emulator: restart_emulator is not supported",
            ),
            (
                "a load that the relup check would refuse",
                appup("{load, {m2, brutal_purge, brutal_purge}}", ""),
                "lib/a-2/a.appup:2:10: {load, {m2, brutal_purge, brutal_purge}}: the relup \
                 made from this would be refused: ",
            ),
            (
                "conflicting object code",
                appup("{load_module, m1}, {load_object_code, {a, \"1\", [m2]}}", ""),
                "lib/a-2/a.appup:2:10: {load_module, m1}: object code of a \"2\", but the \
                 script already loads a \"1\"",
            ),
            (
                "restart of an application that is not there",
                appup("{restart_application, b}", ""),
                "lib/a-2/a.appup:2:10: {restart_application, b}: application b is not in \
                 release \"1\", so it cannot be restarted",
            ),
            (
                "remove of an application that stays",
                appup("{remove_application, a}", ""),
                "lib/a-2/a.appup:2:10: {remove_application, a}: application a is still in \
                 release \"2\"",
            ),
        ];
        for (case, appup, expected) in cases {
            let appups: Vec<(&str, &str)> =
                appup.as_deref().map(|text| ("a-2", text)).into_iter().collect();
            let root = root(&[("1", &[A1]), ("2", &[A2])], &appups);
            let error = match make_relup(root.path(), "1", "2") {
                Ok(relup) => panic!("{case}: made {}", relup.render()),
                Err(error) => error,
            };
            let shown = error.to_string();
            let prefix = format!("{}/", root.path().display());
            let shown = shown.strip_prefix(&prefix).unwrap_or(&shown);
            assert!(shown.starts_with(expected), "{case}:\n  {shown}\n  {expected}");
        }
    }

    #[test]
    fn errors_about_the_releases() {
        let root = root(&[("1", &[A1]), ("2", &[A1])], &[]);
        let r = root.path();
        let message = |from: &str, to: &str| match make_relup(r, from, to) {
            Ok(relup) => panic!("made {}", relup.render()),
            Err(error) => error.to_string(),
        };
        assert!(message("1", "3").ends_with("RELEASES: there is no release \"3\" in RELEASES"));
        assert!(message("1", "1").contains("both are \"1\""));
        let error = make_relup(r, "1", "9").expect_err("no release 9");
        assert!(matches!(*error.kind, MakeRelupErrorKind::NoRelease { .. }));
        // An .app that is not what RELEASES says it is.
        std::fs::write(r.join("lib/a-1/a.app"), "{application, a, [{vsn, \"7\"}, {modules, []}]}.")
            .expect("write");
        assert!(message("1", "2").contains("this .app is for a \"7\", but release \"1\""));
    }

    #[test]
    fn the_relup_is_the_file_it_writes_and_passes_the_checks() {
        let root = a_root("{update, m1, {advanced, []}}", "{update, m1, {advanced, []}}");
        let relup = make_relup(root.path(), "1", "2").expect("made");
        assert!(relup.check(&relup_path(root.path(), "2")).is_ok());
        let path = write_relup(root.path(), "2", &relup).expect("written");
        assert_eq!(path, root.path().join("releases/2/relup"));
        let read = super::super::relup::read_relup(&path).expect("reads back");
        assert_eq!(read, relup, "positions and all");
        // Line 1 is the comment; the up script's first instruction is on line 4.
        assert_eq!(relup.up[0].instructions[0].pos, Pos::new(4, 5));
        let error = write_relup(root.path(), "1", &relup).expect_err("wrong release");
        assert!(error.to_string().contains("this is the relup of release \"2\", not of \"1\""));
    }

    #[test]
    fn dependency_order_is_topological_and_otherwise_keeps_the_written_order() {
        // (edges, order): edges[a] lists what a depends on.
        let cases: &[(&[&[usize]], &[usize])] = &[
            (&[], &[]),
            (&[&[], &[], &[]], &[0, 1, 2]),
            (&[&[1], &[2], &[]], &[0, 1, 2]),
            (&[&[], &[0], &[1]], &[2, 1, 0]),
            (&[&[1], &[0], &[]], &[0, 1, 2]),
            (&[&[2], &[], &[], &[1]], &[0, 2, 3, 1]),
            (&[&[1], &[0, 2], &[], &[3]], &[0, 1, 2, 3]),
        ];
        for (edges, expected) in cases {
            let edges: Vec<Vec<usize>> = edges.iter().map(|e| e.to_vec()).collect();
            assert_eq!(dependency_order(&edges), *expected, "{edges:?}");
        }
        assert_eq!(weak_components(&[vec![2], vec![], vec![], vec![1]]), vec![0, 1, 0, 1]);
    }
}
