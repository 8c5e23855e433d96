//! The release files of SPEC §6 other than relups: `.app`, `.rel` and RELEASES.
//!
//! ```text
//! ROOT/lib/<app>-<vsn>/<app>.app   {application, App, [{vsn, V}, {modules, [..]}, ...]}.
//! ROOT/releases/<vsn>/<name>.rel   {release, {Name, Vsn}, {hotcode, HostVsn}, [{App, AppVsn}]}.
//! ROOT/releases/RELEASES           [{release, Name, Vsn, HostVsn, [{App, AppVsn, LibDir}], Status}].
//! ```
//!
//! Like [`super::relup`], this is the second parsing stage: it checks the raw term tree of
//! [`super::terms`] against each file's shape and returns typed values, or an error that
//! names the file, the line and column, and what was expected.
//!
//! RELEASES is the one file hotcode also writes, and the node's memory of which release is
//! permanent lives in it. Two rules follow (SPEC §6): every write is atomic
//! ([`write_releases_atomically`]: a temporary file in the same directory, fsync, rename over
//! the old one, fsync of the directory), so a crash leaves either the old file or the new
//! one; and a torn or garbage file is an error naming the file ([`read_releases`]), never a
//! silent fallback to some default that would boot the wrong release.

use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;

use plugin_api::Term;

use super::appup::StartType;
use super::error::{ParseError, ParseErrorKind};
use super::names::{NameKind, lib_dir_name};
use super::shape::Form;
use super::terms::{
    RawTerm, Spanned, parse_single_term, read_single_term, write_atom, write_quoted,
};

/// An application resource file, `<app>.app`: what an application is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// The application's name.
    pub name: String,
    /// Its version (`{vsn, V}`, required).
    pub vsn: String,
    /// A one-line description (`{description, D}`; empty if not given).
    pub description: String,
    /// Its modules (`{modules, [M]}`, required).
    pub modules: Vec<String>,
    /// Its callback module and start argument (`{mod, {M, Args}}`), if it has one; a library
    /// application has none.
    pub mod_: Option<(String, Term)>,
    /// The applications that must be started before it (`{applications, [A]}`).
    pub applications: Vec<String>,
    /// The applications it includes (`{included_applications, [A]}`): loaded, never started
    /// by the controller; their top supervisors run inside this application's tree.
    pub included_applications: Vec<String>,
    /// The names its processes register (`{registered, [N]}`), kept for tools.
    pub registered: Vec<String>,
    /// Its configuration parameters (`{env, [{Par, Val}]}`), in the order written.
    pub env: Vec<(String, Term)>,
}

const APP_FORM: &str = "{application, App, [{Key, Value}]}";

/// The `.app` keys this host reads, each with its form; other keys are ignored.
const APP_KEYS: &[(&str, &str)] = &[
    ("vsn", "{vsn, Vsn}"),
    ("description", "{description, Description}"),
    ("modules", "{modules, [Module]}"),
    ("mod", "{mod, {Module, StartArgs}}"),
    ("applications", "{applications, [App]}"),
    ("included_applications", "{included_applications, [App]}"),
    ("registered", "{registered, [Name]}"),
    ("env", "{env, [{Par, Val}]}"),
];

impl AppSpec {
    /// Parses `text`, the contents of the `.app` file at `path`.
    ///
    /// Keys this host does not use (`id`, `maxT`, `start_phases`, ...) are ignored, as OTP
    /// ignores keys it does not know; a key given twice is an error.
    pub fn parse(path: &Path, text: &str) -> Result<AppSpec, ParseError> {
        app_from_term(path, &parse_single_term(path, text)?)
    }

    /// Reads and parses the `.app` file at `path`.
    pub fn read(path: &Path) -> Result<AppSpec, ParseError> {
        app_from_term(path, &read_single_term(path)?)
    }
}

fn app_from_term(path: &Path, term: &Spanned<RawTerm>) -> Result<AppSpec, ParseError> {
    let form = Form::new(path, term, APP_FORM);
    let [tag, name, keys] = form.tuple(term, 3)? else {
        return Err(form.mismatch());
    };
    if !tag.value.is_atom("application") {
        return Err(form.mismatch());
    }
    let mut spec = AppSpec {
        name: form.name(name, NameKind::App, "App")?,
        vsn: String::new(),
        description: String::new(),
        modules: Vec::new(),
        mod_: None,
        applications: Vec::new(),
        included_applications: Vec::new(),
        registered: Vec::new(),
        env: Vec::new(),
    };
    let mut seen: Vec<(&str, &Spanned<RawTerm>)> = Vec::new();
    let pairs = form.list(keys)?;
    for pair in pairs.iter() {
        let Some([key, value]) = pair.value.as_tuple() else {
            return Err(form.bad_part(pair, "{Key, Value}"));
        };
        let key_name = form.atom(key, "Key")?;
        let Some(&(key_name, expected)) = APP_KEYS.iter().find(|(k, _)| *k == key_name) else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key_name) {
            return Err(form.error_at(
                pair,
                ParseErrorKind::Invalid(format!(
                    "key {key_name} is given twice (first at {})",
                    first.pos
                )),
            ));
        }
        seen.push((key_name, pair));
        let form = Form::new(path, pair, expected);
        match key_name {
            "vsn" => spec.vsn = form.name(value, NameKind::Vsn, "Vsn")?,
            "description" => spec.description = form.string(value, "Description")?,
            "modules" => spec.modules = form.names(value, NameKind::Module, "Module")?,
            "applications" => spec.applications = form.names(value, NameKind::App, "App")?,
            "included_applications" => {
                spec.included_applications = form.names(value, NameKind::App, "App")?
            }
            "registered" => spec.registered = form.atoms(value, "Name")?,
            "mod" => {
                let [module, args] = form.tuple(value, 2)? else {
                    return Err(form.mismatch());
                };
                spec.mod_ =
                    Some((form.name(module, NameKind::Module, "Module")?, args.value.to_term()));
            }
            _ => {
                for entry in form.list(value)?.iter() {
                    let Some([par, val]) = entry.value.as_tuple() else {
                        return Err(form.bad_part(entry, "{Par, Val}"));
                    };
                    spec.env.push((form.atom(par, "Par")?, val.value.to_term()));
                }
            }
        }
    }
    for required in ["vsn", "modules"] {
        if !seen.iter().any(|(k, _)| *k == required) {
            return Err(form.error_at(
                keys,
                ParseErrorKind::Invalid(format!(
                    "application {} has no {{{required}, ...}}; an .app file must give it",
                    spec.name
                )),
            ));
        }
    }
    Ok(spec)
}

/// A release resource file, `<name>.rel`: which applications, at which versions, make up a
/// release.
#[derive(Debug, Clone, PartialEq)]
pub struct RelSpec {
    /// The release's name.
    pub name: String,
    /// The release's version.
    pub vsn: String,
    /// The hotcode host version it runs on (where OTP writes the erts version).
    pub host_vsn: String,
    /// Its applications, in boot order.
    pub apps: Vec<RelApp>,
}

/// One application of a [`RelSpec`]: OTP's `{App, Vsn}`, `{App, Vsn, Type}`, `{App, Vsn,
/// IncApps}` or `{App, Vsn, Type, IncApps}` (rel(4)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelApp {
    /// The application.
    pub name: String,
    /// Its version in the release.
    pub vsn: String,
    /// Its start type, when the `.rel` gives one: `permanent` (OTP's default),
    /// `transient`, `temporary`, `load` (loaded, not started) or `none` (its code loaded,
    /// the application neither loaded nor started).
    pub start_type: Option<StartType>,
    /// The applications it includes in this release, when the `.rel` says (it overrides
    /// the `.app`'s `included_applications`).
    pub included: Option<Vec<String>>,
}

impl RelApp {
    /// `{App, Vsn}`: an application with no type or included applications of its own.
    pub fn new(name: impl Into<String>, vsn: impl Into<String>) -> RelApp {
        RelApp { name: name.into(), vsn: vsn.into(), start_type: None, included: None }
    }
}

const REL_FORM: &str = "{release, {Name, Vsn}, {hotcode, HostVsn}, [{App, AppVsn} | {App, \
                        AppVsn, Type} | {App, AppVsn, IncApps} | {App, AppVsn, Type, IncApps}]}";

impl RelSpec {
    /// Parses `text`, the contents of the `.rel` file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<RelSpec, ParseError> {
        rel_from_term(path, &parse_single_term(path, text)?)
    }

    /// Reads and parses the `.rel` file at `path`.
    pub fn read(path: &Path) -> Result<RelSpec, ParseError> {
        rel_from_term(path, &read_single_term(path)?)
    }
}

fn rel_from_term(path: &Path, term: &Spanned<RawTerm>) -> Result<RelSpec, ParseError> {
    let form = Form::new(path, term, REL_FORM);
    let [tag, release, host, apps] = form.tuple(term, 4)? else {
        return Err(form.mismatch());
    };
    if !tag.value.is_atom("release") {
        return Err(form.mismatch());
    }
    let [name, vsn] = form.tuple(release, 2)? else {
        return Err(form.mismatch());
    };
    let [host_tag, host_vsn] = form.tuple(host, 2)? else {
        return Err(form.mismatch());
    };
    if !host_tag.value.is_atom("hotcode") {
        // OTP writes `erts` here; say so, since that is the likely mistake.
        return Err(form.bad_part(host_tag, "hotcode (the host, where OTP writes erts)"));
    }
    let mut spec = RelSpec {
        name: form.name(name, NameKind::Release, "Name")?,
        vsn: form.name(vsn, NameKind::Vsn, "Vsn")?,
        host_vsn: form.name(host_vsn, NameKind::Vsn, "HostVsn")?,
        apps: Vec::new(),
    };
    let app_forms = "{App, AppVsn}, {App, AppVsn, Type}, {App, AppVsn, IncApps} or {App, AppVsn, Type, IncApps}";
    for app in form.list(apps)?.iter() {
        let Some([app_name, app_vsn, rest @ ..]) = app.value.as_tuple() else {
            return Err(form.bad_part(app, app_forms));
        };
        let app_name = form.name(app_name, NameKind::App, "App")?;
        if spec.apps.iter().any(|known| known.name == app_name) {
            return Err(form.error_at(
                app,
                ParseErrorKind::Invalid(format!("application {app_name} is listed twice")),
            ));
        }
        let mut entry = RelApp::new(app_name, form.name(app_vsn, NameKind::Vsn, "AppVsn")?);
        let start_type = |term: &Spanned<RawTerm>| {
            term.value.as_atom().and_then(StartType::from_atom).ok_or_else(|| {
                form.bad_part(term, "permanent, transient, temporary, load or none for Type")
            })
        };
        match rest {
            [] => {}
            // `{App, Vsn, IncApps}`: a list (even `[]`); otherwise a type.
            [third] if third.value.as_elements(third.pos).is_some() => {
                entry.included = Some(form.names(third, NameKind::App, "IncApp")?);
            }
            [third] => entry.start_type = Some(start_type(third)?),
            [third, fourth] => {
                entry.start_type = Some(start_type(third)?);
                entry.included = Some(form.names(fourth, NameKind::App, "IncApp")?);
            }
            _ => return Err(form.bad_part(app, app_forms)),
        }
        spec.apps.push(entry);
    }
    Ok(spec)
}

/// The status of a release in RELEASES (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseStatus {
    /// Unpacked into ROOT, not installed.
    Unpacked,
    /// Installed and running, not yet made permanent. SPEC §6: never written to disk, so a
    /// node that dies during an install boots the permanent release.
    Current,
    /// The release the node boots.
    Permanent,
    /// A release that was permanent before the present one.
    Old,
}

impl ReleaseStatus {
    /// The atom RELEASES uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Unpacked => "unpacked",
            ReleaseStatus::Current => "current",
            ReleaseStatus::Permanent => "permanent",
            ReleaseStatus::Old => "old",
        }
    }

    /// The status named by `atom`, if it is one.
    pub fn from_atom(atom: &str) -> Option<ReleaseStatus> {
        [
            ReleaseStatus::Unpacked,
            ReleaseStatus::Current,
            ReleaseStatus::Permanent,
            ReleaseStatus::Old,
        ]
        .into_iter()
        .find(|status| status.as_str() == atom)
    }
}

impl fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One release in RELEASES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseEntry {
    /// The release's name.
    pub name: String,
    /// The release's version.
    pub vsn: String,
    /// The hotcode host version it runs on.
    pub host_vsn: String,
    /// Its applications and where their libraries are.
    pub apps: Vec<ReleaseApp>,
    /// Its status.
    pub status: ReleaseStatus,
}

/// One application of a [`ReleaseEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseApp {
    /// The application.
    pub name: String,
    /// Its version in the release.
    pub vsn: String,
    /// Its library directory (`ROOT/lib/<app>-<vsn>`). A string rather than a path, so that
    /// it is always written back exactly as read.
    pub lib_dir: String,
}

const RELEASES_FORM: &str = "[{release, Name, Vsn, HostVsn, [{App, AppVsn, LibDir}], Status}]";
const RELEASE_FORM: &str = "{release, Name, Vsn, HostVsn, [{App, AppVsn, LibDir}], Status}";

/// Parses `text`, the contents of the RELEASES file at `path`.
///
/// Besides the shape, it refuses what a well-kept RELEASES never holds: two entries for one
/// version, or more than one permanent release.
pub fn parse_releases(path: &Path, text: &str) -> Result<Vec<ReleaseEntry>, ParseError> {
    releases_from_term(path, &parse_single_term(path, text)?)
}

/// Reads and parses the RELEASES file at `path`. A file that is missing, unreadable, torn
/// or garbage is an error naming it.
pub fn read_releases(path: &Path) -> Result<Vec<ReleaseEntry>, ParseError> {
    releases_from_term(path, &read_single_term(path)?)
}

fn releases_from_term(
    path: &Path,
    term: &Spanned<RawTerm>,
) -> Result<Vec<ReleaseEntry>, ParseError> {
    let form = Form::new(path, term, RELEASES_FORM);
    let mut entries: Vec<(ReleaseEntry, &Spanned<RawTerm>)> = Vec::new();
    let items = form.list(term)?;
    for item in items.iter() {
        let entry = release_from_term(path, item)?;
        if let Some((_, first)) = entries.iter().find(|(e, _)| e.vsn == entry.vsn) {
            return Err(form.error_at(
                item,
                ParseErrorKind::Invalid(format!(
                    "release \"{}\" is listed twice (first at {})",
                    entry.vsn, first.pos
                )),
            ));
        }
        if entry.status == ReleaseStatus::Permanent {
            let other = entries.iter().find(|(e, _)| e.status == ReleaseStatus::Permanent);
            if let Some((other, _)) = other {
                return Err(form.error_at(
                    item,
                    ParseErrorKind::Invalid(format!(
                        "releases \"{}\" and \"{}\" are both permanent; only one can be",
                        other.vsn, entry.vsn
                    )),
                ));
            }
        }
        entries.push((entry, item));
    }
    Ok(entries.into_iter().map(|(entry, _)| entry).collect())
}

fn release_from_term(path: &Path, term: &Spanned<RawTerm>) -> Result<ReleaseEntry, ParseError> {
    let form = Form::new(path, term, RELEASE_FORM);
    let [tag, name, vsn, host_vsn, apps, status] = form.tuple(term, 6)? else {
        return Err(form.mismatch());
    };
    if !tag.value.is_atom("release") {
        return Err(form.mismatch());
    }
    let mut entry = ReleaseEntry {
        name: form.name(name, NameKind::Release, "Name")?,
        vsn: form.name(vsn, NameKind::Vsn, "Vsn")?,
        host_vsn: form.name(host_vsn, NameKind::Vsn, "HostVsn")?,
        apps: Vec::new(),
        status: match status.value.as_atom().and_then(ReleaseStatus::from_atom) {
            Some(status) => status,
            None => {
                return Err(form.bad_part(status, "unpacked, current, permanent or old for Status"));
            }
        },
    };
    for app in form.list(apps)?.iter() {
        let Some([app_name, app_vsn, lib_dir]) = app.value.as_tuple() else {
            return Err(form.bad_part(app, "{App, AppVsn, LibDir}"));
        };
        let name = form.name(app_name, NameKind::App, "App")?;
        let vsn = form.name(app_vsn, NameKind::Vsn, "AppVsn")?;
        let dir = form.string(lib_dir, "LibDir")?;
        // The library directory is derived, never trusted: a LibDir that points anywhere
        // else would make `remove` delete it.
        let expected = format!("lib/{}", lib_dir_name(&name, &vsn));
        if dir != expected {
            return Err(form.error_at(
                lib_dir,
                ParseErrorKind::Invalid(format!(
                    "LibDir of {name} {vsn} must be {expected:?} (under the root), not {dir:?}"
                )),
            ));
        }
        entry.apps.push(ReleaseApp { name, vsn, lib_dir: dir });
    }
    Ok(entry)
}

/// Writes `entries` in RELEASES syntax: one release per line, parseable by
/// [`parse_releases`] back to the same entries.
///
/// It writes what it is given; keeping `current` off the disk (SPEC §6) is the caller's
/// rule.
pub fn render_releases(entries: &[ReleaseEntry]) -> String {
    let mut out = String::new();
    // Writing to a `String` cannot fail.
    let _ = write_releases(&mut out, entries);
    out
}

fn write_releases(out: &mut String, entries: &[ReleaseEntry]) -> fmt::Result {
    if entries.is_empty() {
        return out.write_str("[].\n");
    }
    for (index, entry) in entries.iter().enumerate() {
        out.write_str(if index == 0 { "[" } else { ",\n " })?;
        out.write_str("{release, ")?;
        for text in [&entry.name, &entry.vsn, &entry.host_vsn] {
            write_quoted(out, text, '"')?;
            out.write_str(", ")?;
        }
        out.write_char('[')?;
        for (index, app) in entry.apps.iter().enumerate() {
            if index > 0 {
                out.write_str(", ")?;
            }
            out.write_char('{')?;
            write_atom(out, &app.name)?;
            out.write_str(", ")?;
            write_quoted(out, &app.vsn, '"')?;
            out.write_str(", ")?;
            write_quoted(out, &app.lib_dir, '"')?;
            out.write_char('}')?;
        }
        write!(out, "], {}}}", entry.status)?;
    }
    out.write_str("].\n")
}

/// Replaces the file at `path` with `contents` atomically: a reader (or a node booting after
/// a crash) sees the old contents or the new, never a mix or a truncated file.
///
/// The contents go to a temporary file in the same directory (so the rename stays within
/// one file system), which is flushed to disk and renamed over `path`; then the directory is
/// flushed so the rename itself survives a crash. The new file keeps the permissions of the
/// one it replaces. On failure `path` is untouched and the temporary file is removed. Errors
/// name `path`.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let context = |error: io::Error| {
        io::Error::new(error.kind(), format!("cannot write {}: {error}", path.display()))
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name() else {
        return Err(context(io::Error::new(io::ErrorKind::InvalidInput, "the path names no file")));
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(context)?;
    if let Ok(metadata) = fs::metadata(path) {
        temp.as_file().set_permissions(metadata.permissions()).map_err(context)?;
    }
    temp.write_all(contents).map_err(context)?;
    temp.as_file().sync_all().map_err(context)?;
    temp.persist(path).map_err(|error| context(error.error))?;
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(context)
}

/// Writes `entries` to the RELEASES file at `path` atomically ([`write_atomically`]).
pub fn write_releases_atomically(path: &Path, entries: &[ReleaseEntry]) -> io::Result<()> {
    write_atomically(path, render_releases(entries).as_bytes())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const APP: &str = r#"%% The application resource file of prim_app.
{application, prim_app,
 [{description, "The primary application"},
  {vsn, "2"},
  {modules, [prim_app, prim_sup]},
  {registered, [prim_sup]},
  {applications, [kernel, stdlib]},
  {included_applications, [ch_app]},
  {mod, {prim_app, []}},
  {start_phases, []},
  {env, [{port, 8080}, {name, "x"}]}]}.
"#;

    fn message<T: fmt::Debug>(result: Result<T, ParseError>) -> String {
        match result {
            Ok(value) => panic!("should fail, parsed {value:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn app_files_parse_with_optional_keys_and_unknown_ones_ignored() {
        let spec = AppSpec::parse(Path::new("prim_app.app"), APP).expect("valid .app");
        assert_eq!(
            spec,
            AppSpec {
                name: "prim_app".into(),
                vsn: "2".into(),
                description: "The primary application".into(),
                modules: vec!["prim_app".into(), "prim_sup".into()],
                mod_: Some(("prim_app".into(), Term::list([]))),
                applications: vec!["kernel".into(), "stdlib".into()],
                included_applications: vec!["ch_app".into()],
                registered: vec!["prim_sup".into()],
                env: vec![("port".into(), Term::Int(8080)), ("name".into(), "x".into())],
            }
        );
        let minimal = "{application, ch_app, [{vsn, \"1\"}, {modules, []}]}.";
        let spec = AppSpec::parse(Path::new("ch_app.app"), minimal).expect("valid .app");
        assert_eq!((spec.mod_, spec.description.as_str()), (None, ""));
    }

    #[test]
    fn bad_app_files_are_refused_with_positions() {
        let cases = [
            ("{application, a, [{modules, []}]}.", "a.app:1:18: application a has no {vsn, ...}"),
            (
                "{application, a, [{vsn, \"1\"}]}.",
                "a.app:1:18: application a has no {modules, ...}",
            ),
            (
                "{application, a, [{vsn, 1}, {modules, []}]}.",
                "a.app:1:25: expected a string for Vsn, found 1, in {vsn, Vsn}",
            ),
            (
                "{application, a, [{vsn, \"1\"}, {vsn, \"2\"}, {modules, []}]}.",
                "a.app:1:31: key vsn is given twice (first at 1:19)",
            ),
            (
                "{application, a, [{vsn, \"1\"}, {modules, [b, \"c\"]}]}.",
                "a.app:1:45: expected an atom for Module, found \"c\", in {modules, [Module]}",
            ),
            (
                "{application, a, [{vsn, \"1\"}, {modules, []}, {mod, m}]}.",
                "a.app:1:46: expected {mod, {Module, StartArgs}}, found {mod, m}",
            ),
            ("{app, a, []}.", "a.app:1:1: expected {application, App, [{Key, Value}]}"),
            ("{application, a, [vsn]}.", "a.app:1:19: expected {Key, Value}, found vsn"),
        ];
        for (text, expected) in cases {
            let shown = message(AppSpec::parse(Path::new("a.app"), text));
            assert!(shown.starts_with(expected), "{text}\n  {shown}\n  {expected}");
        }
    }

    #[test]
    fn rel_files_parse_and_insist_on_hotcode() {
        let text = "{release, {\"prim\", \"B\"}, {hotcode, \"0.1.0\"},\n [{prim_app, \"2\"}, {ch_app, \"1\"}]}.\n";
        let spec = RelSpec::parse(Path::new("prim.rel"), text).expect("valid .rel");
        assert_eq!(
            spec,
            RelSpec {
                name: "prim".into(),
                vsn: "B".into(),
                host_vsn: "0.1.0".into(),
                apps: vec![RelApp::new("prim_app", "2"), RelApp::new("ch_app", "1"),],
            }
        );
        let erts = message(RelSpec::parse(
            Path::new("prim.rel"),
            "{release, {\"prim\", \"B\"}, {erts, \"13\"}, []}.",
        ));
        assert!(
            erts.starts_with(
                "prim.rel:1:27: expected hotcode (the host, where OTP writes erts), found erts"
            ),
            "{erts}"
        );
        let twice = message(RelSpec::parse(
            Path::new("prim.rel"),
            "{release, {\"prim\", \"B\"}, {hotcode, \"1\"}, [{a, \"1\"}, {a, \"2\"}]}.",
        ));
        assert!(twice.starts_with("prim.rel:1:53: application a is listed twice"), "{twice}");
    }

    fn sample() -> Vec<ReleaseEntry> {
        let app = |name: &str, vsn: &str| ReleaseApp {
            name: name.into(),
            vsn: vsn.into(),
            lib_dir: format!("lib/{name}-{vsn}"),
        };
        vec![
            ReleaseEntry {
                name: "prim".into(),
                vsn: "A".into(),
                host_vsn: "0.1.0".into(),
                apps: vec![app("prim_app", "1")],
                status: ReleaseStatus::Permanent,
            },
            ReleaseEntry {
                name: "prim".into(),
                vsn: "B".into(),
                host_vsn: "0.1.0".into(),
                apps: vec![app("prim_app", "2"), app("ch_app", "1")],
                status: ReleaseStatus::Unpacked,
            },
        ]
    }

    #[test]
    fn releases_render_one_per_line_and_parse_back() {
        let text = render_releases(&sample());
        assert_eq!(
            text,
            "[{release, \"prim\", \"A\", \"0.1.0\", [{prim_app, \"1\", \"lib/prim_app-1\"}], permanent},\n \
             {release, \"prim\", \"B\", \"0.1.0\", [{prim_app, \"2\", \"lib/prim_app-2\"}, \
             {ch_app, \"1\", \"lib/ch_app-1\"}], unpacked}].\n"
        );
        assert_eq!(parse_releases(Path::new("RELEASES"), &text).expect("parses"), sample());
        assert_eq!(render_releases(&[]), "[].\n");
        assert_eq!(parse_releases(Path::new("RELEASES"), "[].\n").expect("parses"), vec![]);
    }

    #[test]
    fn torn_or_garbage_releases_are_errors_naming_the_file() {
        let full = render_releases(&sample());
        // Every proper prefix of a RELEASES file is refused: there is no partial read.
        for cut in 0..full.trim_end().len() {
            let Some(torn) = full.get(..cut) else { continue };
            let result = parse_releases(Path::new("/root/releases/RELEASES"), torn);
            let shown = message(result);
            assert!(shown.starts_with("/root/releases/RELEASES:"), "cut at {cut}: {shown}");
        }
        let cases = [
            ("\u{7f}ELF\u{2}\u{1}", "RELEASES:1:1: "),
            ("garbage here", "RELEASES:1:9: expected '.' after the term, found atom here"),
            ("{release, \"a\"}.", "RELEASES:1:1: expected [{release, Name, Vsn"),
            (
                "[{release, \"p\", \"A\", \"1\", [], installed}].",
                "RELEASES:1:31: expected unpacked, current, permanent or old for Status, found installed",
            ),
            (
                "[{release, \"p\", \"A\", \"1\", [], old},\n {release, \"p\", \"A\", \"1\", [], old}].",
                "RELEASES:2:2: release \"A\" is listed twice (first at 1:2)",
            ),
            (
                "[{release, \"p\", \"A\", \"1\", [], permanent},\n {release, \"p\", \"B\", \"1\", [], permanent}].",
                "RELEASES:2:2: releases \"A\" and \"B\" are both permanent",
            ),
            ("", "RELEASES:1:1: the file holds no term"),
        ];
        for (text, expected) in cases {
            let shown = message(parse_releases(Path::new("RELEASES"), text));
            assert!(shown.starts_with(expected), "{text:?}\n  {shown}\n  {expected}");
        }
        let missing = message(read_releases(Path::new("/nonexistent/RELEASES")));
        assert!(missing.starts_with("/nonexistent/RELEASES: cannot read the file"), "{missing}");
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = dir.path().join("RELEASES");
        fs::write(&binary, [0x7f, b'E', b'L', b'F', 0xff, 0xfe, 0]).expect("write");
        let shown = message(read_releases(&binary));
        assert!(
            shown.starts_with(&format!("{}:1:5: the file is not UTF-8 text", binary.display())),
            "{shown}"
        );
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary_behind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("RELEASES");
        write_releases_atomically(&path, &sample()).expect("first write");
        assert_eq!(read_releases(&path).expect("reads back"), sample());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let mut changed = sample();
        changed[1].status = ReleaseStatus::Permanent;
        changed[0].status = ReleaseStatus::Old;
        write_releases_atomically(&path, &changed).expect("second write");
        assert_eq!(read_releases(&path).expect("reads back"), changed);
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the replacement keeps the file's permissions");
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["RELEASES"]);
        // A failed write names the file and leaves nothing behind either.
        let error = write_atomically(&dir.path().join("no/such/dir/RELEASES"), b"[].\n")
            .expect_err("no directory");
        assert!(error.to_string().contains("no/such/dir/RELEASES"), "{error}");
    }

    /// Names and versions: words (names.rs), some with quotes, spaces and non-ASCII.
    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9_][a-zA-Z0-9_ .\"'\\-]{0,12}", "[a-z][a-zé@_ ]{0,8}"]
    }

    fn arb_entry() -> impl Strategy<Value = ReleaseEntry> {
        let app = (arb_text(), arb_text()).prop_map(|(name, vsn)| ReleaseApp {
            lib_dir: format!("lib/{}", lib_dir_name(&name, &vsn)),
            name,
            vsn,
        });
        let status = prop_oneof![
            Just(ReleaseStatus::Unpacked),
            Just(ReleaseStatus::Current),
            Just(ReleaseStatus::Old),
        ];
        (arb_text(), arb_text(), arb_text(), proptest::collection::vec(app, 0..4), status).prop_map(
            |(name, vsn, host_vsn, apps, status)| ReleaseEntry {
                name,
                vsn,
                host_vsn,
                apps,
                status,
            },
        )
    }

    proptest! {
        #[test]
        fn rendered_releases_parse_back_equal(
            entries in proptest::collection::vec(arb_entry(), 0..4),
            permanent in any::<proptest::sample::Index>(),
        ) {
            // Versions are unique and at most one release is permanent in a valid file.
            let mut entries = entries;
            for (index, entry) in entries.iter_mut().enumerate() {
                entry.vsn = format!("{}#{index}", entry.vsn);
            }
            if !entries.is_empty() {
                let chosen = permanent.index(entries.len());
                entries[chosen].status = ReleaseStatus::Permanent;
            }
            let text = render_releases(&entries);
            let parsed = parse_releases(Path::new("RELEASES"), &text);
            prop_assert!(parsed.is_ok(), "{text:?}: {:?}", parsed.as_ref().err().map(|e| e.to_string()));
            prop_assert_eq!(parsed.ok(), Some(entries));
        }

        #[test]
        fn release_files_never_panic_on_arbitrary_text(text in any::<String>()) {
            let path = Path::new("x");
            let _ = parse_releases(path, &text);
            let _ = AppSpec::parse(path, &text);
            let _ = RelSpec::parse(path, &text);
        }
    }
}
