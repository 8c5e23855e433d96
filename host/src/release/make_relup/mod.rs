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
//! As `systools_relup` does (OTP 25, checked side by side), each direction is made from
//! several scripts, in this order: `add_application` for every application only the target
//! release has (in its `.rel`'s order), then the up entry (from the old version) or down
//! entry (to the old version) of each changed application's appup, then
//! `remove_application` for every application only the release being left has (in its
//! `.rel`'s order). So the appup scripts run while the leaving applications still exist, and
//! may take their processes down first. Upgrades and downgrades both read the appup of the
//! new version: it is the one that knows both.
//!
//! The appup scripts come in the new release's *boot order*, which is systools'
//! (`systools_make:sort_appls`; relup(4): "in the same order as in the start script"):
//! each application after the applications it uses and includes, and otherwise in the
//! order of the `.rel`. An added application gets the start type its `.rel` entry gives it
//! (`{App, Vsn, Type}` or `{App, Vsn, Type, IncApps}`; `permanent` if none), and an
//! application's included applications are the `.rel`'s `IncApps` if it gives them, else
//! its `.app`'s.
//!
//! Where hotcode differs: an application that another application of the same release
//! *includes* is never started by the controller (SPEC §4), so when the `.rel` gives it no
//! type it is added with start type `load` (`application:load`, no `application:start`),
//! where systools would start it `permanent`. And a removed application is stopped only if
//! its release started it, and unloaded only if it loaded it: systools stops and unloads
//! every one and relies on the release handler ignoring a failed `apply`, which hotcode
//! does not (SPEC §9).
//!
//! Every script is split at its own `point_of_no_return` (hotcode allows only
//! `load_object_code` before it), and the parts are merged: all `load_object_code` first,
//! merged into one per application (all of an application's modules in one instruction),
//! then one `point_of_no_return`, then everything else in order. Low-level instructions in
//! an appup pass through where they are written.
//!
//! When the two releases name different host versions (`{hotcode, HostVsn}` in their
//! `.rel`; OTP's ERTS), the node must restart, and the scripts say so where systools puts
//! it: the up script begins with `restart_new_emulator` (the node restarts on the new host
//! with the old applications, then the rest runs there), the down script ends with
//! `restart_emulator` (the script runs, then the node restarts on the old host). An appup
//! may not write either itself.
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
//!   `application:start(App, Type)` for `permanent`, `transient` or `temporary` (which loads
//!   the application first, as OTP's does), `application:load(App)` for `load`, nothing for
//!   `none`.
//! - `{remove_application, App}`: `application:stop`, `remove` of each of its modules, one
//!   `purge` of them all, `application:unload` (see above for what is left out).
//! - `{restart_application, App}`: `application:stop`, `remove` and `purge` of the old
//!   version's modules, `load` of the new version's, then as `add_application` with the new
//!   release's start type for it.
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

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use plugin_api::Term;

use super::error::ParseError;
use super::files::{ReleaseEntry, read_releases, write_atomically};
use super::relup::{Direction, Instruction, Relup, RelupEntry, parse_relup, script_problems};
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
    make_relup_with(root, &releases_path, &entries, from, to)
}

/// [`make_relup`] with the releases given as `entries` rather than read from RELEASES (at
/// `releases_path`, named in errors): for a release being added to the root, which RELEASES
/// names only once its relup is made.
pub(crate) fn make_relup_with(
    root: &Path,
    releases_path: &Path,
    entries: &[ReleaseEntry],
    from: &str,
    to: &str,
) -> Result<Relup, MakeRelupError> {
    if from == to {
        return Err(MakeRelupError::new(
            releases_path,
            None,
            MakeRelupErrorKind::SameRelease { vsn: from.to_owned() },
        ));
    }
    let old = Release::read(root, releases_path, entries, from)?;
    let new = Release::read(root, releases_path, entries, to)?;
    let changed = changed_apps(&old, &new)?;
    let path = relup_path(root, to);
    let mut up =
        Translation { direction: Direction::Up, target: &new, leaving: &old, relup: &path }
            .script(&changed)?;
    let mut down =
        Translation { direction: Direction::Down, target: &old, leaving: &new, relup: &path }
            .script(&changed)?;
    // A new host version (OTP: a new ERTS) means a restart of the node, as systools writes
    // it: up, the node first restarts on the new host with the old applications and the
    // rest of the script runs there; down, the script runs, then the node restarts on the
    // old host.
    if old.host_vsn != new.host_vsn {
        let origin = |rel: &Path, host: &str| Origin {
            path: rel.to_owned(),
            pos: None,
            text: Some(format!("{{hotcode, \"{host}\"}}")),
        };
        up.insert(0, (Instruction::RestartNewEmulator, origin(&new.rel_path, &new.host_vsn)));
        down.push((Instruction::RestartEmulator, origin(&old.rel_path, &old.host_vsn)));
    }
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

mod dep_order;
use releases::{Release, changed_apps};
use translate::{Origin, Translation};
mod releases;
#[cfg(test)]
mod tests;
mod translate;
