//! Making release roots and release packages from built libraries: what `hotcode release
//! new | add | tar` and `cargo xtask dist` do, in one place.
//!
//! The inputs are what a person with a cargo workspace has: each application's `.app` file
//! (the `.appup` beside it, `<app>.appup` in the same directory, goes along when there is
//! one), and the built libraries of the modules the `.app` files list ([`Libraries`]: a
//! module `m` is `DIR/libm.so` or `DIR/m.so` in one of the given directories, or a file
//! named for it explicitly). From them:
//!
//! - [`new_root`] makes a release root (SPEC §6) with one release, permanent:
//!
//!   ```text
//!   ROOT/lib/<app>-<vsn>/<app>.app, <app>.appup, <module>.so
//!   ROOT/releases/<vsn>/<name>.rel
//!   ROOT/releases/<vsn>/modules.sha256
//!   ROOT/releases/RELEASES
//!   ROOT/host-<HostVsn>/bin/hotcode              (if a host binary is given; mode 0755)
//!   ROOT/run/                                    (mode 0700)
//!   ```
//!
//!   A release's host binary (OTP's `erts-<Vsn>/bin/`: what the node restarts on when an
//!   install moves to another host version, and what a plain boot of the release runs) is
//!   recorded in the release's `modules.sha256` like its modules; a host version, once in
//!   the root, never changes, as an application version does not.
//!
//! - [`add_release`] adds a release to a root, unpacked, with a relup made from the appups
//!   by [`make_relup`](super::make_relup()) (or one given, or none);
//! - [`make_tar`] packs one release of a root into a `.tar.gz` ([`super::package`]) that
//!   `hotcode ctl ROOT unpack PKG` puts on a running node.
//!
//! Everything is read and checked before anything is written: the `.app` and `.appup`
//! files, that every module has exactly one library and that each is a plugin (the caller's
//! [`ModuleCheck`]: this layer knows no libraries), that names and versions are words. Files
//! are written with mode 0644 and directories with 0755 (0700 for `run/`) whatever the
//! sources' modes, so nobody but their owner, the user who runs this, can change them: the
//! node refuses anything else. Module files are hashed as they are copied, so the record
//! holds the digests of the bytes written. A new root appears whole (it is made under a
//! temporary name beside it and renamed); an added release's directories are made under
//! temporary names and renamed into place, and RELEASES is written last, so a failure leaves
//! RELEASES as it was (directories that no release names are replaced by the next `add`, as
//! the release handler's unpack does).
//!
//! An application version is immutable: adding a release whose application version is in
//! the root already reuses its directory only if the new files are byte for byte the ones
//! there; otherwise the version must change.
//!
//! A root that a node runs on is changed only through the node (`ctl unpack`): the node
//! keeps RELEASES in memory and would overwrite an addition made behind its back. The CLI
//! takes the root's lock for `add`; a library caller must make sure no node runs on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::appup::Appup;
use super::error::ParseError;
use super::files::{
    AppSpec, ReleaseApp, ReleaseEntry, ReleaseStatus, read_releases, render_releases,
    write_atomically,
};
use super::hashes::{HASHES_FILE, ModuleHashes, read_hashes, render_hashes};
use super::make_relup::{MakeRelupError, make_relup_with, write_relup};
use super::names::{HOST_BINARY, NameKind, check_name, host_dir_name, lib_dir_name, root_path};
use super::package::{self, PackageError};
use super::relup::parse_relup;
use super::terms::{write_atom, write_quoted};

/// Checks that a module's library is a plugin the node would load; the message says why not.
/// The CLI passes `hotcode::code::elf::inspect_plugin`; tests may pass `&|_| Ok(())`.
pub type ModuleCheck<'a> = &'a dyn Fn(&Path) -> Result<(), String>;

/// Where the modules' built libraries are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Libraries {
    /// Directories searched in order: module `m` is `DIR/libm.so` (cargo's name for the
    /// cdylib of a crate `m`) or `DIR/m.so` (the name in a release root), the first found.
    pub dirs: Vec<PathBuf>,
    /// Libraries named per module, which win over the search: for crates whose name is not
    /// the module's (`m = target/release/libm_v2.so`). Each must be a module of the release.
    pub modules: BTreeMap<String, PathBuf>,
}

impl Libraries {
    /// The library of `module` of application `app`, as the fields' docs say.
    fn find(&self, app: &str, module: &str) -> Result<PathBuf, AssembleErrorKind> {
        if let Some(path) = self.modules.get(module) {
            return Ok(path.clone());
        }
        let mut looked = Vec::new();
        for dir in &self.dirs {
            for name in [format!("lib{module}.so"), format!("{module}.so")] {
                let path = dir.join(name);
                if path.is_file() {
                    return Ok(path);
                }
                looked.push(path);
            }
        }
        Err(AssembleErrorKind::ModuleNotFound {
            module: module.to_owned(),
            app: app.to_owned(),
            looked,
        })
    }
}

/// A release to assemble: its name and version and where its applications come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSource {
    /// The release's name (a word): `releases/<vsn>/<name>.rel`.
    pub name: String,
    /// The release's version (a word).
    pub vsn: String,
    /// The hotcode version it runs on (`{hotcode, HostVsn}`), normally
    /// `hotcode::release_handler::HOST_VSN`.
    pub host_vsn: String,
    /// The applications' `.app` files, in boot order.
    pub apps: Vec<PathBuf>,
    /// Where the modules' libraries are.
    pub libraries: Libraries,
    /// The host binary to keep as `ROOT/host-<HostVsn>/bin/hotcode`, if any (a release on
    /// another host version than the running one needs its binary in the root).
    pub host_binary: Option<PathBuf>,
}

/// Where [`add_release`] takes the new release's relup from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelupSource {
    /// Made from the appups ([`make_relup`](super::make_relup())), with an up entry from
    /// release `from` and a down entry back to it; `None` means the permanent release.
    Make {
        /// The release upgraded from.
        from: Option<String>,
    },
    /// A relup script written by hand, checked and copied byte for byte.
    File(PathBuf),
    /// No relup: the release can be unpacked and booted, not installed on a running node.
    None,
}

/// What [`new_root`] or [`add_release`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// The release's name.
    pub name: String,
    /// The release's version.
    pub vsn: String,
    /// Its applications as `<app>-<vsn>`, in boot order.
    pub apps: Vec<String>,
    /// How many module libraries it has.
    pub modules: usize,
    /// The application directories that were in the root already, identical, and reused.
    pub reused: Vec<String>,
    /// The relup written, if any.
    pub relup: Option<PathBuf>,
}

/// What [`make_tar`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The package file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// How many files it holds.
    pub files: usize,
}

/// A release root or package could not be made. Displays as `path: message`; an error
/// from a release file (or from making the relup, or the package) displays as that error.
#[derive(Debug)]
pub struct AssembleError {
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What was wrong (boxed, so that a `Result` carrying the error stays small).
    pub kind: Box<AssembleErrorKind>,
}

impl AssembleError {
    fn new(path: &Path, kind: AssembleErrorKind) -> AssembleError {
        AssembleError { path: path.to_owned(), kind: Box::new(kind) }
    }
}

impl fmt::Display for AssembleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            AssembleErrorKind::Parse(e) => write!(f, "{e}"),
            AssembleErrorKind::MakeRelup(e) => write!(f, "{e}"),
            AssembleErrorKind::Package(e) => write!(f, "{e}"),
            kind => write!(f, "{}: {kind}", self.path.display()),
        }
    }
}

// The underlying errors are part of the message, as with `ParseError`.
impl std::error::Error for AssembleError {}

impl From<ParseError> for AssembleError {
    fn from(e: ParseError) -> AssembleError {
        AssembleError::new(&e.path.clone(), AssembleErrorKind::Parse(e))
    }
}

impl From<MakeRelupError> for AssembleError {
    fn from(e: MakeRelupError) -> AssembleError {
        AssembleError::new(&e.path.clone(), AssembleErrorKind::MakeRelup(e))
    }
}

impl From<PackageError> for AssembleError {
    fn from(e: PackageError) -> AssembleError {
        AssembleError::new(&e.package.clone(), AssembleErrorKind::Package(e))
    }
}

/// What kept a release root or package from being made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleErrorKind {
    /// A release file (`.app`, `.appup`, relup, RELEASES, a record) is unreadable or
    /// malformed.
    #[error("{0}")]
    Parse(ParseError),
    /// The relup could not be made from the appups.
    #[error("{0}")]
    MakeRelup(MakeRelupError),
    /// The package could not be written.
    #[error("{0}")]
    Package(PackageError),
    /// A file or directory could not be read or written.
    #[error("{what} ({source})")]
    Io {
        /// What failed.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A name or version is not a word (see [`super::names`]).
    #[error("{0}")]
    BadName(String),
    /// `new_root` of a path that exists and is not an empty directory.
    #[error("exists and is not an empty directory; `release new` makes a new root")]
    RootExists,
    /// Two `.app` files of one release describe the same application.
    #[error("application {app} is given twice")]
    DuplicateApp {
        /// The application.
        app: String,
    },
    /// Two applications of one release list the same module.
    #[error("module {module} is listed by both {first} and {second}")]
    DuplicateModule {
        /// The module.
        module: String,
        /// The application that lists it first.
        first: String,
        /// The other.
        second: String,
    },
    /// No library was found for a module.
    #[error(
        "no library for module {module} of {app}: {}; give it with `--module {module}=FILE` \
         (or a directory holding lib{module}.so with `--lib-dir`)",
        looked_for(looked)
    )]
    ModuleNotFound {
        /// The module.
        module: String,
        /// Its application.
        app: String,
        /// The files looked for.
        looked: Vec<PathBuf>,
    },
    /// A library was named for a module that no application of the release lists.
    #[error("module {module} is in none of the release's .app files")]
    UnknownModule {
        /// The module.
        module: String,
    },
    /// A module's library is not a plugin the node would load.
    #[error("module {module}: not a hotcode plugin this host loads: {why}")]
    NotAPlugin {
        /// The module.
        module: String,
        /// Why.
        why: String,
    },
    /// The `.appup` beside an `.app` is for another version.
    #[error("the appup is for {app} \"{found}\", but its .app is {app} \"{expected}\"")]
    AppupVsn {
        /// The application.
        app: String,
        /// The appup's version.
        found: String,
        /// The `.app`'s.
        expected: String,
    },
    /// `add_release` of a version the root has already.
    #[error("release \"{vsn}\" is in the root already")]
    ReleaseExists {
        /// The version.
        vsn: String,
    },
    /// No release of that version in the root.
    #[error("there is no release \"{vsn}\" in RELEASES")]
    NoRelease {
        /// The version.
        vsn: String,
    },
    /// The root has no permanent release to make a relup from.
    #[error("no release is permanent, so there is no release to upgrade from; give --from")]
    NoPermanent,
    /// An application version in the root has other files than the ones given for it.
    #[error(
        "differs from the files given for it ({detail}), and release {release} uses it: an \
         application version never changes, so give the application a new vsn"
    )]
    AppVersionDiffers {
        /// What differs.
        detail: String,
        /// A release that uses the directory.
        release: String,
    },
    /// A host version in the root has another binary than the one given for it.
    #[error(
        "differs from the host binary given ({given}): a host version never changes in a \
         root, so give the binary a new host version"
    )]
    HostBinaryDiffers {
        /// The binary given.
        given: PathBuf,
    },
    /// A relup file given for a release is another release's.
    #[error("this is the relup of release \"{found}\", not of \"{expected}\"")]
    RelupVsn {
        /// The release it leads to.
        found: String,
        /// The release it was given for.
        expected: String,
    },
    /// A relup file given for a release has problems.
    #[error("the relup would be refused:\n  {}", problems.join("\n  "))]
    RelupProblems {
        /// Every problem, as `path:line:col: message`.
        problems: Vec<String>,
    },
    /// A release directory holds something other than regular files, or a record that
    /// does not match the files.
    #[error("{0}")]
    Invalid(String),
}

/// The files a search looked at, for [`AssembleErrorKind::ModuleNotFound`].
fn looked_for(looked: &[PathBuf]) -> String {
    if looked.is_empty() {
        return "no library directory was given".to_owned();
    }
    let shown: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
    format!("looked for {}", shown.join(", "))
}

fn io_err<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(io::Error) -> AssembleError + 'p {
    move |source| AssembleError::new(path, AssembleErrorKind::Io { what, source })
}

fn check_word(kind: NameKind, name: &str, source: &Path) -> Result<(), AssembleError> {
    check_name(kind, name)
        .map_err(|why| AssembleError::new(source, AssembleErrorKind::BadName(why)))
}

/// One application version, read and checked, before anything is written.
#[derive(Debug)]
struct PlannedApp {
    name: String,
    vsn: String,
    /// The files of its directory: `(file name, source)`, the `.app` first.
    files: Vec<(String, PathBuf)>,
    /// Its module file names (`<module>.so`), which the record lists.
    modules: Vec<String>,
}

impl PlannedApp {
    fn dir_name(&self) -> String {
        lib_dir_name(&self.name, &self.vsn)
    }
}

/// A release, read and checked.
#[derive(Debug)]
struct Planned {
    name: String,
    vsn: String,
    host_vsn: String,
    apps: Vec<PlannedApp>,
}

impl Planned {
    fn module_count(&self) -> usize {
        self.apps.iter().map(|a| a.modules.len()).sum()
    }

    /// Its entry in RELEASES, with `status`.
    fn entry(&self, status: ReleaseStatus) -> ReleaseEntry {
        ReleaseEntry {
            name: self.name.clone(),
            vsn: self.vsn.clone(),
            host_vsn: self.host_vsn.clone(),
            apps: self
                .apps
                .iter()
                .map(|a| ReleaseApp {
                    name: a.name.clone(),
                    vsn: a.vsn.clone(),
                    lib_dir: format!("lib/{}", a.dir_name()),
                })
                .collect(),
            status,
        }
    }

    /// The `.rel` file's text.
    fn rel_text(&self) -> String {
        let mut out = String::new();
        // Writing to a `String` cannot fail.
        let _ = self.write_rel(&mut out);
        out
    }

    fn write_rel(&self, out: &mut String) -> fmt::Result {
        out.write_str("{release, {")?;
        write_quoted(out, &self.name, '"')?;
        out.write_str(", ")?;
        write_quoted(out, &self.vsn, '"')?;
        out.write_str("}, {hotcode, ")?;
        write_quoted(out, &self.host_vsn, '"')?;
        out.write_str("},\n [")?;
        for (index, app) in self.apps.iter().enumerate() {
            if index > 0 {
                out.write_str(",\n  ")?;
            }
            out.write_char('{')?;
            write_atom(out, &app.name)?;
            out.write_str(", ")?;
            write_quoted(out, &app.vsn, '"')?;
            out.write_char('}')?;
        }
        out.write_str("]}.\n")
    }
}

/// Reads and checks everything `source` names.
fn plan(source: &ReleaseSource, check: ModuleCheck<'_>) -> Result<Planned, AssembleError> {
    let here = Path::new(&source.name);
    check_word(NameKind::Release, &source.name, here)?;
    check_word(NameKind::Vsn, &source.vsn, Path::new(&source.vsn))?;
    check_word(NameKind::Vsn, &source.host_vsn, Path::new(&source.host_vsn))?;
    let mut apps: Vec<PlannedApp> = Vec::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for app_file in &source.apps {
        let spec = AppSpec::read(app_file)?;
        if apps.iter().any(|a| a.name == spec.name) {
            return Err(AssembleError::new(
                app_file,
                AssembleErrorKind::DuplicateApp { app: spec.name },
            ));
        }
        let mut files = vec![(format!("{}.app", spec.name), app_file.clone())];
        let appup_file = app_file.with_extension("appup");
        if appup_file.is_file() {
            let appup = Appup::read(&appup_file)?;
            if appup.vsn != spec.vsn {
                return Err(AssembleError::new(
                    &appup_file,
                    AssembleErrorKind::AppupVsn {
                        app: spec.name.clone(),
                        found: appup.vsn,
                        expected: spec.vsn.clone(),
                    },
                ));
            }
            files.push((format!("{}.appup", spec.name), appup_file));
        }
        let mut modules = Vec::new();
        for module in &spec.modules {
            if let Some(first) = owners.insert(module.clone(), spec.name.clone()) {
                return Err(AssembleError::new(
                    app_file,
                    AssembleErrorKind::DuplicateModule {
                        module: module.clone(),
                        first,
                        second: spec.name.clone(),
                    },
                ));
            }
            let library = source
                .libraries
                .find(&spec.name, module)
                .map_err(|kind| AssembleError::new(app_file, kind))?;
            check(&library).map_err(|why| {
                AssembleError::new(
                    &library,
                    AssembleErrorKind::NotAPlugin { module: module.clone(), why },
                )
            })?;
            let file = format!("{module}.so");
            files.push((file.clone(), library));
            modules.push(file);
        }
        apps.push(PlannedApp { name: spec.name, vsn: spec.vsn, files, modules });
    }
    if let Some(binary) = &source.host_binary {
        open_regular(binary)?;
    }
    for (module, path) in &source.libraries.modules {
        if !owners.contains_key(module) {
            return Err(AssembleError::new(
                path,
                AssembleErrorKind::UnknownModule { module: module.clone() },
            ));
        }
    }
    Ok(Planned {
        name: source.name.clone(),
        vsn: source.vsn.clone(),
        host_vsn: source.host_vsn.clone(),
        apps,
    })
}

/// Creates directory `path` (mode 0755, less the umask).
fn make_dir(path: &Path) -> Result<(), AssembleError> {
    fs::DirBuilder::new().mode(0o755).create(path).map_err(io_err(path, "cannot create it"))
}

/// Creates `path` (mode 0644, less the umask) holding `bytes`.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), AssembleError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err(path, "cannot create it"))?;
    file.write_all(bytes).map_err(io_err(path, "cannot write it"))?;
    file.sync_all().map_err(io_err(path, "cannot write it"))
}

/// The SHA-256 of the regular file at `path`.
fn sha256_of(path: &Path) -> Result<[u8; 32], AssembleError> {
    let mut file = open_regular(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_err(path, "cannot read it"))?;
    Ok(hasher.finalize().into())
}

/// Opens `path`, which must be a regular file (a link to one is followed: sources are the
/// user's own build outputs).
fn open_regular(path: &Path) -> Result<fs::File, AssembleError> {
    let file = fs::File::open(path).map_err(io_err(path, "cannot open it"))?;
    let meta = file.metadata().map_err(io_err(path, "cannot read it"))?;
    if !meta.is_file() {
        return Err(AssembleError::new(
            path,
            AssembleErrorKind::Invalid("not a regular file".to_owned()),
        ));
    }
    Ok(file)
}

/// Copies `from` to the new file `to` (mode 0644) and returns the SHA-256 of the bytes
/// written.
fn copy_hashed(from: &Path, to: &Path) -> Result<[u8; 32], AssembleError> {
    copy_hashed_mode(from, to, 0o644)
}

/// [`copy_hashed`], with the new file's `mode` (less the umask).
fn copy_hashed_mode(from: &Path, to: &Path, mode: u32) -> Result<[u8; 32], AssembleError> {
    let mut input = open_regular(from)?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)
        .map_err(io_err(to, "cannot create it"))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buffer).map_err(io_err(from, "cannot read it"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        output.write_all(&buffer[..n]).map_err(io_err(to, "cannot write it"))?;
    }
    output.sync_all().map_err(io_err(to, "cannot write it"))?;
    // The umask may have taken more than group and others' write bits.
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .map_err(io_err(to, "cannot set its mode"))?;
    Ok(hasher.finalize().into())
}

/// `host-<HostVsn>/bin/hotcode`, the root-relative path of host version `host_vsn`'s binary.
fn host_binary_key(host_vsn: &str) -> String {
    format!("{}/bin/{}", host_dir_name(host_vsn), HOST_BINARY)
}

/// Writes host binary `from` as `dir/bin/hotcode` under the new directory `dir` (the
/// root's `host-<HostVsn>`, or a temporary name for it), mode 0755; returns its digest.
fn write_host_dir(dir: &Path, from: &Path) -> Result<[u8; 32], AssembleError> {
    make_dir(dir)?;
    make_dir(&dir.join("bin"))?;
    copy_hashed_mode(from, &dir.join("bin").join(HOST_BINARY), 0o755)
}

/// Writes `app`'s directory at `dir` (which must not exist) and returns its module files'
/// digests by root-relative path.
fn write_app_dir(dir: &Path, app: &PlannedApp) -> Result<ModuleHashes, AssembleError> {
    make_dir(dir)?;
    let mut digests = ModuleHashes::new();
    for (name, source) in &app.files {
        let digest = copy_hashed(source, &dir.join(name))?;
        if app.modules.contains(name) {
            digests.insert(format!("lib/{}/{name}", app.dir_name()), digest);
        }
    }
    Ok(digests)
}

/// Writes the release directory's files into `dir` (which must exist): the `.rel` and the
/// record.
fn write_release_files(
    dir: &Path,
    planned: &Planned,
    record: &ModuleHashes,
) -> Result<(), AssembleError> {
    write_new(&dir.join(format!("{}.rel", planned.name)), planned.rel_text().as_bytes())?;
    write_new(&dir.join(HASHES_FILE), render_hashes(record).as_bytes())
}

/// Makes a new release root at `root` holding the release `source` describes, permanent.
///
/// `root` must not exist or be an empty directory; its parent must exist. The root is made
/// under a temporary name beside it and renamed into place, so it appears whole or not at
/// all. `check` is called on every module library before anything is written.
pub fn new_root(
    root: &Path,
    source: &ReleaseSource,
    check: ModuleCheck<'_>,
) -> Result<Assembled, AssembleError> {
    let planned = plan(source, check)?;
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(root, "cannot look at it")(e)),
        Ok(meta) => {
            let empty = meta.is_dir()
                && fs::read_dir(root).map_err(io_err(root, "cannot read it"))?.next().is_none();
            if !empty {
                return Err(AssembleError::new(root, AssembleErrorKind::RootExists));
            }
        }
    }
    let name = root.file_name().and_then(|n| n.to_str()).unwrap_or("root");
    let parent = match root.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // Removed on drop: an error below leaves nothing behind.
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.new-"))
        .tempdir_in(parent)
        .map_err(io_err(parent, "cannot create a directory in it"))?;
    let dir = temp.path();
    make_dir(&dir.join("lib"))?;
    let mut record = ModuleHashes::new();
    for app in &planned.apps {
        record.extend(write_app_dir(&dir.join("lib").join(app.dir_name()), app)?);
    }
    if let Some(binary) = &source.host_binary {
        let digest = write_host_dir(&dir.join(host_dir_name(&planned.host_vsn)), binary)?;
        record.insert(host_binary_key(&planned.host_vsn), digest);
    }
    let releases = dir.join("releases");
    make_dir(&releases)?;
    let release_dir = releases.join(&planned.vsn);
    make_dir(&release_dir)?;
    write_release_files(&release_dir, &planned, &record)?;
    let entries = [planned.entry(ReleaseStatus::Permanent)];
    write_new(&releases.join("RELEASES"), render_releases(&entries).as_bytes())?;
    // The node's private directory (its socket and lock): its own, mode 0700.
    let run = dir.join("run");
    fs::DirBuilder::new().mode(0o700).create(&run).map_err(io_err(&run, "cannot create it"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(io_err(dir, "cannot set its mode"))?;
    // rename(2) replaces an empty directory, and fails if `root` is no longer empty.
    fs::rename(dir, root).map_err(io_err(root, "cannot move the new root into place"))?;
    // The directory is at `root` now; nothing is left to remove.
    let _ = temp.keep();
    Ok(Assembled {
        name: planned.name.clone(),
        vsn: planned.vsn.clone(),
        apps: planned.apps.iter().map(PlannedApp::dir_name).collect(),
        modules: planned.module_count(),
        reused: Vec::new(),
        relup: None,
    })
}

/// The regular files of directory `dir`, by name, sorted; anything else in it is refused.
fn regular_files(dir: &Path) -> Result<Vec<String>, AssembleError> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(io_err(dir, "cannot read it"))? {
        let item = item.map_err(io_err(dir, "cannot read it"))?;
        let path = item.path();
        let kind = item.file_type().map_err(io_err(&path, "cannot read it"))?;
        let Some(name) = item.file_name().to_str().map(str::to_owned) else {
            return Err(AssembleError::new(
                &path,
                AssembleErrorKind::Invalid("a file name that is not UTF-8".to_owned()),
            ));
        };
        if !kind.is_file() {
            return Err(AssembleError::new(
                &path,
                AssembleErrorKind::Invalid(
                    "not a regular file (a release directory holds only regular files)".to_owned(),
                ),
            ));
        }
        // A name a package may not carry (a `.tmp` file an interrupted write left, say):
        // packing it would make a package that `ctl unpack` refuses.
        check_word(NameKind::File, &name, &path)?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Whether the existing application directory `dir` holds exactly `app`'s files, byte for
/// byte: `Ok(None)` if it does, else what differs.
fn differences(dir: &Path, app: &PlannedApp) -> Result<Option<String>, AssembleError> {
    let existing = regular_files(dir)?;
    let mut given: Vec<String> = app.files.iter().map(|(name, _)| name.clone()).collect();
    given.sort();
    if existing != given {
        return Ok(Some(format!("it holds {}, given {}", existing.join(" "), given.join(" "))));
    }
    for (name, source) in &app.files {
        if sha256_of(&dir.join(name))? != sha256_of(source)? {
            return Ok(Some(format!("{name} is not {}", source.display())));
        }
    }
    Ok(None)
}

/// Copies `app`'s directory in under a temporary name inside `lib`, and returns it with the
/// digests of its module files.
fn stage_app_dir(lib: &Path, app: &PlannedApp) -> Result<(PathBuf, ModuleHashes), AssembleError> {
    let temp = lib.join(format!(".assemble-{}-{}", app.dir_name(), std::process::id()));
    if fs::symlink_metadata(&temp).is_ok() {
        fs::remove_dir_all(&temp).map_err(io_err(&temp, "cannot remove it"))?;
    }
    match write_app_dir(&temp, app) {
        Ok(digests) => Ok((temp, digests)),
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            Err(e)
        }
    }
}

/// Moves staged directory `temp` to `dest`, replacing a directory left there that no
/// release names.
fn put_in_place(temp: &Path, dest: &Path) -> Result<(), AssembleError> {
    if fs::symlink_metadata(dest).is_ok() {
        fs::remove_dir_all(dest).map_err(io_err(dest, "cannot replace it"))?;
    }
    fs::rename(temp, dest).map_err(io_err(dest, "cannot move it into place"))
}

/// Adds the release `source` describes to the root at `root`, unpacked, with its relup
/// from `relup`.
///
/// Everything is checked first (the inputs, `check` on every module library, that the
/// version is new, that an application version already in the root is byte for byte the one
/// given, a relup file's release and script). Then new application directories and the
/// release's directory are copied in under temporary names and renamed into place, a relup
/// is made (from the appups, with the new release as RELEASES will name it), and RELEASES is
/// written last. An error leaves RELEASES as it was, and removes what was written.
///
/// No node may run on `root` meanwhile (see the [module docs](self)).
pub fn add_release(
    root: &Path,
    source: &ReleaseSource,
    relup: &RelupSource,
    check: ModuleCheck<'_>,
) -> Result<Assembled, AssembleError> {
    let releases_path = root.join("releases").join("RELEASES");
    let entries = read_releases(&releases_path)?;
    let planned = plan(source, check)?;
    if entries.iter().any(|e| e.vsn == planned.vsn) {
        return Err(AssembleError::new(
            &releases_path,
            AssembleErrorKind::ReleaseExists { vsn: planned.vsn.clone() },
        ));
    }
    let relup_bytes = match relup {
        RelupSource::File(path) => Some(read_relup_file(path, &planned.vsn)?),
        RelupSource::Make { from: Some(from) } => {
            if !entries.iter().any(|e| &e.vsn == from) {
                return Err(AssembleError::new(
                    &releases_path,
                    AssembleErrorKind::NoRelease { vsn: from.clone() },
                ));
            }
            None
        }
        RelupSource::Make { from: None } => {
            if !entries.iter().any(|e| e.status == ReleaseStatus::Permanent) {
                return Err(AssembleError::new(&releases_path, AssembleErrorKind::NoPermanent));
            }
            None
        }
        RelupSource::None => None,
    };
    // Which application directories are new, which are reused.
    let lib = root.join("lib");
    let mut reused = Vec::new();
    let mut to_write = Vec::new();
    for app in &planned.apps {
        let dest = root_path(root, &["lib", &app.dir_name()])
            .map_err(|why| AssembleError::new(root, AssembleErrorKind::BadName(why)))?;
        let user =
            entries.iter().find(|e| e.apps.iter().any(|a| a.name == app.name && a.vsn == app.vsn));
        match user {
            Some(user) => {
                if let Some(detail) = differences(&dest, app)? {
                    return Err(AssembleError::new(
                        &dest,
                        AssembleErrorKind::AppVersionDiffers { detail, release: user.vsn.clone() },
                    ));
                }
                reused.push(app);
            }
            None => to_write.push((app, dest)),
        }
    }
    // The host binary: one already in the root must be the one given (it is recorded for
    // this release too); a new one is written.
    let host_dir = root_path(root, &[&host_dir_name(&planned.host_vsn)])
        .map_err(|why| AssembleError::new(root, AssembleErrorKind::BadName(why)))?;
    let host_file = host_dir.join("bin").join(HOST_BINARY);
    let host_exists = fs::symlink_metadata(&host_file).is_ok();
    if let (true, Some(given)) = (host_exists, &source.host_binary)
        && sha256_of(&host_file)? != sha256_of(given)?
    {
        return Err(AssembleError::new(
            &host_file,
            AssembleErrorKind::HostBinaryDiffers { given: given.clone() },
        ));
    }
    // Write: every step from here on is undone if a later one fails.
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        // 0755 whatever the umask: the node refuses a directory others may write.
        if !lib.is_dir() {
            make_dir(&lib)?;
        }
        let mut record = ModuleHashes::new();
        if host_exists {
            record.insert(host_binary_key(&planned.host_vsn), sha256_of(&host_file)?);
        } else if let Some(given) = &source.host_binary {
            let temp = root.join(format!(".assemble-host-{}", std::process::id()));
            if fs::symlink_metadata(&temp).is_ok() {
                fs::remove_dir_all(&temp).map_err(io_err(&temp, "cannot remove it"))?;
            }
            let digest = match write_host_dir(&temp, given) {
                Ok(digest) => digest,
                Err(e) => {
                    let _ = fs::remove_dir_all(&temp);
                    return Err(e);
                }
            };
            put_in_place(&temp, &host_dir)?;
            written.push(host_dir.clone());
            record.insert(host_binary_key(&planned.host_vsn), digest);
        }
        for app in &reused {
            for module in &app.modules {
                let file = format!("lib/{}/{module}", app.dir_name());
                record.insert(file.clone(), sha256_of(&root.join(&file))?);
            }
        }
        for (app, dest) in &to_write {
            let (temp, digests) = stage_app_dir(&lib, app)?;
            put_in_place(&temp, dest)?;
            written.push(dest.clone());
            record.extend(digests);
        }
        let releases = root.join("releases");
        let release_dir = root_path(root, &["releases", &planned.vsn])
            .map_err(|why| AssembleError::new(root, AssembleErrorKind::BadName(why)))?;
        let temp = releases.join(format!(".assemble-{}-{}", planned.vsn, std::process::id()));
        if fs::symlink_metadata(&temp).is_ok() {
            fs::remove_dir_all(&temp).map_err(io_err(&temp, "cannot remove it"))?;
        }
        make_dir(&temp)?;
        let staged =
            write_release_files(&temp, &planned, &record).and_then(|()| match &relup_bytes {
                Some(bytes) => write_new(&temp.join("relup"), bytes),
                None => Ok(()),
            });
        if let Err(e) = staged {
            let _ = fs::remove_dir_all(&temp);
            return Err(e);
        }
        put_in_place(&temp, &release_dir)?;
        written.push(release_dir.clone());
        let mut all = entries.clone();
        all.push(planned.entry(ReleaseStatus::Unpacked));
        let relup_path = match relup {
            RelupSource::Make { from } => {
                let from = match from {
                    Some(from) => from.clone(),
                    None => entries
                        .iter()
                        .find(|e| e.status == ReleaseStatus::Permanent)
                        .map(|e| e.vsn.clone())
                        .unwrap_or_default(),
                };
                let made = make_relup_with(root, &releases_path, &all, &from, &planned.vsn)?;
                let path = write_relup(root, &planned.vsn, &made)?;
                // A new file from an atomic write is private (0600); it is the release's.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                    .map_err(io_err(&path, "cannot set its mode"))?;
                Some(path)
            }
            RelupSource::File(_) => Some(release_dir.join("relup")),
            RelupSource::None => None,
        };
        write_atomically(&releases_path, render_releases(&all).as_bytes())
            .map_err(io_err(&releases_path, "cannot write it"))?;
        Ok(relup_path)
    })();
    match result {
        Ok(relup) => Ok(Assembled {
            name: planned.name.clone(),
            vsn: planned.vsn.clone(),
            apps: planned.apps.iter().map(PlannedApp::dir_name).collect(),
            modules: planned.module_count(),
            reused: reused.iter().map(|a| a.dir_name()).collect(),
            relup,
        }),
        Err(e) => {
            for dir in written.iter().rev() {
                let _ = fs::remove_dir_all(dir);
            }
            Err(e)
        }
    }
}

/// Reads a hand-written relup for release `vsn`: its bytes, once it is known to be that
/// release's and to pass the script checks.
fn read_relup_file(path: &Path, vsn: &str) -> Result<Vec<u8>, AssembleError> {
    let bytes = fs::read(path).map_err(io_err(path, "cannot read it"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        AssembleError::new(path, AssembleErrorKind::Invalid("not UTF-8 text".to_owned()))
    })?;
    let relup = parse_relup(path, text)?;
    if relup.vsn != vsn {
        return Err(AssembleError::new(
            path,
            AssembleErrorKind::RelupVsn { found: relup.vsn, expected: vsn.to_owned() },
        ));
    }
    let problems: Vec<String> = relup.problems(path).iter().map(ToString::to_string).collect();
    if !problems.is_empty() {
        return Err(AssembleError::new(path, AssembleErrorKind::RelupProblems { problems }));
    }
    Ok(bytes)
}

/// Packs release `vsn` of the root at `root` into the package `out` ([`super::package`]):
/// its release directory and the directories of its applications, as they are in the root.
///
/// The release's record, when it has one, must list every module its `.app` files name
/// and match the files, so that the node the package goes to will not refuse it for that.
pub fn make_tar(root: &Path, vsn: &str, out: &Path) -> Result<Packed, AssembleError> {
    let releases_path = root.join("releases").join("RELEASES");
    let entries = read_releases(&releases_path)?;
    let Some(entry) = entries.iter().find(|e| e.vsn == vsn) else {
        check_word(NameKind::Vsn, vsn, &releases_path)?;
        return Err(AssembleError::new(
            &releases_path,
            AssembleErrorKind::NoRelease { vsn: vsn.to_owned() },
        ));
    };
    let release_dir = root_path(root, &["releases", vsn])
        .map_err(|why| AssembleError::new(root, AssembleErrorKind::BadName(why)))?;
    let mut files = vec![
        package::Entry::Dir("releases".to_owned()),
        package::Entry::Dir(format!("releases/{vsn}")),
    ];
    let release_files = regular_files(&release_dir)?;
    let rel = format!("{}.rel", entry.name);
    if !release_files.contains(&rel) {
        return Err(AssembleError::new(
            &release_dir,
            AssembleErrorKind::Invalid(format!("release {vsn} has no {rel} here")),
        ));
    }
    for name in &release_files {
        files.push(package::Entry::File {
            path: format!("releases/{vsn}/{name}"),
            source: release_dir.join(name),
        });
    }
    files.push(package::Entry::Dir("lib".to_owned()));
    let mut modules = BTreeSet::new();
    for app in &entry.apps {
        // RELEASES's LibDir is always `lib/<app>-<vsn>` (checked when it is read).
        let dir = root.join(&app.lib_dir);
        files.push(package::Entry::Dir(app.lib_dir.clone()));
        for name in regular_files(&dir)? {
            files.push(package::Entry::File {
                path: format!("{}/{name}", app.lib_dir),
                source: dir.join(&name),
            });
        }
        let spec = AppSpec::read(&dir.join(format!("{}.app", app.name)))?;
        modules.extend(spec.modules.iter().map(|m| format!("{}/{m}.so", app.lib_dir)));
    }
    // The release's host binary goes along when the release records it.
    let record_path = release_dir.join(HASHES_FILE);
    let host_key = host_binary_key(&entry.host_vsn);
    if record_path.exists() && read_hashes(&record_path)?.contains_key(&host_key) {
        let dir = host_dir_name(&entry.host_vsn);
        files.push(package::Entry::Dir(dir.clone()));
        files.push(package::Entry::Dir(format!("{dir}/bin")));
        files.push(package::Entry::File { path: host_key.clone(), source: root.join(&host_key) });
    }
    if record_path.exists() {
        let record = read_hashes(&record_path)?;
        for module in &modules {
            if !record.contains_key(module) {
                return Err(AssembleError::new(
                    &record_path,
                    AssembleErrorKind::Invalid(format!("module file {module} is not recorded")),
                ));
            }
        }
        for (file, digest) in &record {
            if &sha256_of(&root.join(file))? != digest {
                return Err(AssembleError::new(
                    &root.join(file),
                    AssembleErrorKind::Invalid(format!(
                        "does not match its SHA-256 in {}",
                        record_path.display()
                    )),
                ));
            }
        }
    }
    let size = package::write(out, &files)?;
    let count = files.iter().filter(|f| matches!(f, package::Entry::File { .. })).count();
    Ok(Packed { path: out.to_owned(), size, files: count })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::files::RelSpec;

    /// The libraries here are not plugins: no module is checked.
    fn no_check(_: &Path) -> Result<(), String> {
        Ok(())
    }

    /// A scratch directory with application `a` version `vsn` (modules `m` and `n`): its
    /// `.app` in `apps/a-<vsn>/` and fake libraries `target/libm.so`, `target/n.so`.
    fn inputs(dir: &Path, vsn: &str) -> ReleaseSource {
        let apps = dir.join(format!("apps/a-{vsn}"));
        fs::create_dir_all(&apps).expect("mkdir");
        let app = apps.join("a.app");
        fs::write(
            &app,
            format!("{{application, a, [{{vsn, \"{vsn}\"}}, {{modules, [m, n]}}]}}.\n"),
        )
        .expect(".app");
        let target = dir.join("target");
        fs::create_dir_all(&target).expect("mkdir");
        fs::write(target.join("libm.so"), format!("m {vsn}")).expect("lib");
        fs::write(target.join("n.so"), format!("n {vsn}")).expect("lib");
        ReleaseSource {
            name: "we\"ird name".into(),
            vsn: vsn.into(),
            host_vsn: "0.1.0".into(),
            apps: vec![app],
            libraries: Libraries { dirs: vec![target], modules: BTreeMap::new() },
            host_binary: None,
        }
    }

    #[test]
    fn a_new_root_has_the_release_permanent_and_its_files_as_given() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        let source = inputs(dir.path(), "1");
        let made = new_root(&root, &source, &no_check).expect("new root");
        assert_eq!((made.apps.as_slice(), made.modules), (&["a-1".to_owned()][..], 2));
        let rel = RelSpec::read(&root.join("releases/1/we\"ird name.rel")).expect(".rel");
        assert_eq!((rel.name.as_str(), rel.apps[0].name.as_str()), ("we\"ird name", "a"));
        assert_eq!(fs::read(root.join("lib/a-1/m.so")).expect("m.so"), b"m 1");
        let record = read_hashes(&root.join("releases/1/modules.sha256")).expect("record");
        let files: Vec<&String> = record.keys().collect();
        assert_eq!(files, ["lib/a-1/m.so", "lib/a-1/n.so"]);
        let entries = read_releases(&root.join("releases/RELEASES")).expect("RELEASES");
        assert_eq!(entries, [planned_entry(&source)]);
        // Only the root: no temporary directory is left beside it.
        let beside: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(beside.is_empty(), "{beside:?}");
        // A second `new` on it is refused, and changes nothing.
        let error = new_root(&root, &source, &no_check).expect_err("exists");
        assert!(matches!(*error.kind, AssembleErrorKind::RootExists), "{error}");
    }

    fn planned_entry(source: &ReleaseSource) -> ReleaseEntry {
        plan(source, &no_check).expect("plan").entry(ReleaseStatus::Permanent)
    }

    #[test]
    fn a_named_library_wins_and_an_unknown_one_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = inputs(dir.path(), "1");
        let other = dir.path().join("libm_v1.so");
        fs::write(&other, "named").expect("lib");
        source.libraries.modules.insert("m".into(), other.clone());
        let planned = plan(&source, &no_check).expect("plan");
        assert_eq!(planned.apps[0].files[1], ("m.so".to_owned(), other.clone()));
        source.libraries.modules.insert("z".into(), other);
        let error = plan(&source, &no_check).expect_err("z is no module");
        assert!(error.to_string().ends_with("module z is in none of the release's .app files"));
        let failing = |_: &Path| Err("no HOTCODE_MODULE symbol".to_owned());
        source.libraries.modules.remove("z");
        let error = plan(&source, &failing).expect_err("not a plugin");
        assert!(error.to_string().contains("module m: not a hotcode plugin"), "{error}");
    }

    #[test]
    fn add_refuses_another_releases_relup_and_leaves_the_root_as_it_was() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        new_root(&root, &inputs(dir.path(), "1"), &no_check).expect("new root");
        let relup = dir.path().join("relup");
        fs::write(&relup, "{\"3\", [{\"1\", [], []}], [{\"1\", [], []}]}.\n").expect("relup");
        let error = add_release(
            &root,
            &inputs(dir.path(), "2"),
            &RelupSource::File(relup.clone()),
            &no_check,
        )
        .expect_err("another release's relup");
        assert!(error.to_string().contains("relup of release \"3\", not of \"2\""), "{error}");
        assert!(!root.join("lib/a-2").exists() && !root.join("releases/2").exists());
        fs::write(&relup, "{\"2\", [{\"1\", [], []}], [{\"1\", [], []}]}.\n").expect("relup");
        let made =
            add_release(&root, &inputs(dir.path(), "2"), &RelupSource::File(relup), &no_check)
                .expect("add");
        assert_eq!(made.relup, Some(root.join("releases/2/relup")));
        let entries = read_releases(&root.join("releases/RELEASES")).expect("RELEASES");
        let statuses: Vec<_> = entries.iter().map(|e| (e.vsn.as_str(), e.status)).collect();
        assert_eq!(statuses, [("1", ReleaseStatus::Permanent), ("2", ReleaseStatus::Unpacked)]);
    }
}
