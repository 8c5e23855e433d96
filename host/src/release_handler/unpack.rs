//! Adding and removing releases: `unpack` and `remove`, all or nothing.
//!
//! `unpack` takes a directory laid out as a root, or a release package (`.tar.gz`), which
//! is first extracted into a private temporary directory by
//! [`crate::release::package::extract`], every entry checked before it is written.
//!
//! A release package is a trust boundary: everything in it is parsed and validated before
//! anything is written (the `.rel`, each application's `.app`, the integrity record and the
//! files it lists), names and versions are words (never paths), and no link in it is
//! followed. New directories are copied under a temporary name inside the root and renamed
//! into place; RELEASES is written last. A library directory that exists already is used
//! only if its files are byte for byte the package's; one left half-copied by a crash is
//! replaced.
//!
//! `remove` first writes `releases/REMOVING` (the release and the directories it will
//! delete), then RELEASES without the release, then deletes, then drops `REMOVING`. A node
//! that boots with a `REMOVING` file finishes the removal if RELEASES no longer names the
//! release, and forgets it if it still does, so a crash at any step is completed or undone.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::code::loader::sha256_file;
use crate::code::trust;
use crate::release::files::{
    AppSpec, RelSpec, ReleaseApp, ReleaseEntry, ReleaseStatus, write_atomically,
};
use crate::release::hashes::{HASHES_FILE, ModuleHashes, read_hashes};
use crate::release::names::{
    HOST_BINARY, NameKind, check_name, check_relative, host_binary_path, host_dir_name,
    lib_dir_name, root_path,
};
use crate::release::package::{self, Limits};

use super::integrity::{Record, conflicts};
use super::{ReleaseError, ReleaseHandler, check_vsn, fault_point, io};

/// The file that records a removal in progress.
const REMOVING: &str = "REMOVING";
/// The prefix of directories being copied in by `unpack`.
const TEMP_PREFIX: &str = ".unpack-";

/// One application of a package.
struct PackagedApp {
    entry: ReleaseApp,
    /// `lib/<app>-<vsn>/` in the package.
    dir: PathBuf,
    /// The modules its `.app` names.
    modules: Vec<String>,
}

/// A package, read and validated, before anything is written.
struct Package {
    rel: RelSpec,
    /// `host-<HostVsn>/` in the package, when it carries the release's host binary.
    host_dir: Option<PathBuf>,
    /// `releases/<vsn>/` in the package.
    release_dir: PathBuf,
    /// Each application: its entry, its directory in the package and its modules.
    apps: Vec<PackagedApp>,
    record: Option<ModuleHashes>,
}

fn invalid(message: String) -> ReleaseError {
    ReleaseError::Invalid(message)
}

/// A real directory (not a link) at `path`.
fn real_dir(path: &Path) -> Result<(), ReleaseError> {
    let meta = fs::symlink_metadata(path).map_err(io(path))?;
    if meta.file_type().is_symlink() {
        return Err(invalid(format!(
            "{}: is a symbolic link; links are not followed",
            path.display()
        )));
    }
    if !meta.is_dir() {
        return Err(invalid(format!("{}: not a directory", path.display())));
    }
    Ok(())
}

/// Every regular file of a package directory, by name; a link or anything else that is
/// not a regular file or a directory is refused.
fn files_of(dir: &Path) -> Result<Vec<String>, ReleaseError> {
    real_dir(dir)?;
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(io(dir))? {
        let item = item.map_err(io(dir))?;
        let path = item.path();
        let kind = item.file_type().map_err(io(&path))?;
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| invalid(format!("{}: a file name that is not UTF-8", path.display())))?;
        if kind.is_file() {
            names.push(name);
        } else if kind.is_dir() {
            files_of(&path)?;
            names.push(format!("{name}/"));
        } else {
            return Err(invalid(format!(
                "{}: not a regular file or directory (links are not followed)",
                path.display()
            )));
        }
    }
    names.sort();
    Ok(names)
}

impl Package {
    fn read(from: &Path) -> Result<Package, ReleaseError> {
        let releases_dir = from.join("releases");
        real_dir(&releases_dir)?;
        let mut rels = Vec::new();
        for dir in fs::read_dir(&releases_dir).map_err(io(&releases_dir))? {
            let dir = dir.map_err(io(&releases_dir))?.path();
            if !fs::symlink_metadata(&dir).map_err(io(&dir))?.is_dir() {
                continue;
            }
            for file in fs::read_dir(&dir).map_err(io(&dir))? {
                let file = file.map_err(io(&dir))?.path();
                if file.extension().is_some_and(|e| e == "rel") {
                    rels.push(file);
                }
            }
        }
        let [rel_path] = rels.as_slice() else {
            return Err(invalid(format!(
                "{}: expected exactly one releases/<vsn>/<name>.rel, found {}",
                from.display(),
                rels.len()
            )));
        };
        let rel = RelSpec::read(rel_path)?;
        // A release on another host carries that host's binary, or the root has it already
        // (checked by unpack against the root); check-install verifies it before a restart.
        let host_dir = from.join(host_dir_name(&rel.host_vsn));
        let host_dir = match fs::symlink_metadata(&host_dir) {
            Ok(_) => {
                let binary = host_binary_path(from, &rel.host_vsn).map_err(invalid)?;
                if files_of(&host_dir)? != ["bin/"]
                    || files_of(&host_dir.join("bin"))? != [HOST_BINARY]
                {
                    return Err(invalid(format!(
                        "{}: a host directory holds bin/{HOST_BINARY} and nothing else",
                        host_dir.display()
                    )));
                }
                trust::open_regular(&binary).map_err(io(&binary))?;
                Some(host_dir)
            }
            Err(_) => None,
        };
        let release_dir = releases_dir.join(&rel.vsn);
        if rel_path.parent() != Some(release_dir.as_path()) {
            return Err(invalid(format!(
                "{}: release {} must be in releases/{}/",
                rel_path.display(),
                rel.vsn,
                rel.vsn
            )));
        }
        files_of(&release_dir)?;
        let mut apps = Vec::new();
        for app in &rel.apps {
            let name = lib_dir_name(&app.name, &app.vsn);
            let dir = from.join("lib").join(&name);
            files_of(&dir)?;
            let app_file = dir.join(format!("{}.app", app.name));
            let spec = AppSpec::read(&app_file)?;
            if spec.name != app.name || spec.vsn != app.vsn {
                return Err(invalid(format!(
                    "{}: describes {} {}, but the .rel names {} {}",
                    app_file.display(),
                    spec.name,
                    spec.vsn,
                    app.name,
                    app.vsn
                )));
            }
            for module in &spec.modules {
                let so = dir.join(format!("{module}.so"));
                trust::open_regular(&so)
                    .map_err(|e| invalid(format!("{}: module {module}: {e}", so.display())))?;
            }
            let entry = ReleaseApp {
                name: app.name.clone(),
                vsn: app.vsn.clone(),
                lib_dir: format!("lib/{name}"),
            };
            apps.push(PackagedApp { entry, dir, modules: spec.modules });
        }
        let record_path = release_dir.join(HASHES_FILE);
        let record = if record_path.exists() {
            let record = read_hashes(&record_path)?;
            Self::verify_record(from, &record_path, &rel, &apps, &record)?;
            Some(record)
        } else {
            None
        };
        if let (Some(dir), None) = (&host_dir, &record) {
            return Err(invalid(format!(
                "{}: a release that carries its host binary must record it in {}",
                dir.display(),
                release_dir.join(HASHES_FILE).display()
            )));
        }
        Ok(Package { rel, host_dir, release_dir, apps, record })
    }

    /// The record must list every module file of the release, only files of the release's
    /// own library directories, and the package's files must match it.
    fn verify_record(
        from: &Path,
        where_: &Path,
        rel: &RelSpec,
        apps: &[PackagedApp],
        record: &ModuleHashes,
    ) -> Result<(), ReleaseError> {
        let dirs: BTreeSet<&str> = apps.iter().map(|a| a.entry.lib_dir.as_str()).collect();
        let host = format!("{}/bin/{HOST_BINARY}", host_dir_name(&rel.host_vsn));
        if fs::symlink_metadata(from.join(&host)).is_ok() && !record.contains_key(&host) {
            return Err(invalid(format!(
                "{}: the host binary {host} is not recorded",
                where_.display()
            )));
        }
        for (file, digest) in record {
            check_relative(file).map_err(|why| invalid(format!("{}: {why}", where_.display())))?;
            let dir = Path::new(file).parent().and_then(Path::to_str).unwrap_or("");
            if !dirs.contains(dir) && *file != host {
                return Err(invalid(format!(
                    "{}: {file} is not in a library directory of release {}",
                    where_.display(),
                    rel.vsn
                )));
            }
            let path = from.join(file);
            let found = sha256_file(&path).map_err(io(&path))?;
            if &found != digest {
                return Err(invalid(format!(
                    "{}: SHA-256 {} differs from the {} recorded in {}",
                    path.display(),
                    crate::code::loader::hex(&found),
                    crate::code::loader::hex(digest),
                    where_.display()
                )));
            }
        }
        for app in apps {
            for module in &app.modules {
                let file = format!("{}/{module}.so", app.entry.lib_dir);
                if !record.contains_key(&file) {
                    return Err(invalid(format!(
                        "{}: module file {file} is not recorded",
                        where_.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Whether two directory trees hold the same files with the same contents.
fn same_tree(a: &Path, b: &Path) -> Result<bool, ReleaseError> {
    let (names_a, names_b) = (files_of(a)?, files_of(b)?);
    if names_a != names_b {
        return Ok(false);
    }
    for name in &names_a {
        let (pa, pb) = (a.join(name.trim_end_matches('/')), b.join(name.trim_end_matches('/')));
        let same = if name.ends_with('/') {
            same_tree(&pa, &pb)?
        } else {
            sha256_file(&pa).map_err(io(&pa))? == sha256_file(&pb).map_err(io(&pb))?
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies a package directory (regular files and directories only) to `to`, which must
/// not exist, with the node's own modes (no group or other write).
fn copy_dir(from: &Path, to: &Path) -> Result<(), ReleaseError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o755).create(to).map_err(io(to))?;
    for item in fs::read_dir(from).map_err(io(from))? {
        let item = item.map_err(io(from))?;
        let (src, dest) = (item.path(), to.join(item.file_name()));
        let kind = item.file_type().map_err(io(&src))?;
        if kind.is_dir() {
            copy_dir(&src, &dest)?;
        } else if kind.is_file() {
            let mut input = trust::open_regular(&src).map_err(io(&src))?;
            use std::os::unix::fs::PermissionsExt;
            // Executables (a host binary) stay executable; nothing is writable by others.
            let executable = input.metadata().map_err(io(&src))?.permissions().mode() & 0o100 != 0;
            let mut output = fs::File::create_new(&dest).map_err(io(&dest))?;
            std::io::copy(&mut input, &mut output).map_err(io(&dest))?;
            output.sync_all().map_err(io(&dest))?;
            let mode = if executable { 0o755 } else { 0o644 };
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(io(&dest))?;
        } else {
            return Err(invalid(format!("{}: not a regular file or directory", src.display())));
        }
    }
    Ok(())
}

/// Copies `from` to `dest` through a temporary directory beside it, renamed into place.
fn install_dir(from: &Path, dest: &Path) -> Result<(), ReleaseError> {
    let parent = dest.parent().unwrap_or(dest);
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    let temp = parent.join(format!("{TEMP_PREFIX}{name}-{}", std::process::id()));
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(io(&temp))?;
    }
    copy_dir(from, &temp)?;
    fault_point("unpack: copied a directory under its temporary name");
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(io(dest))?;
    }
    fs::rename(&temp, dest).map_err(io(dest))?;
    fault_point("unpack: renamed a directory into place");
    Ok(())
}

impl ReleaseHandler {
    /// `release_handler:unpack_release`: adds the release found at `from`, all or nothing,
    /// and returns its version. `from` is either a directory laid out as a root
    /// (`releases/<vsn>/<name>.rel`, optional `relup` and `modules.sha256`, and
    /// `lib/<app>-<vsn>/`) or a release package, a `.tar.gz` of the same
    /// ([`crate::release::package`], as `hotcode release tar` makes it).
    ///
    /// A package is first extracted into a private temporary directory, every entry
    /// checked before it is written (relative plain paths of words, regular files and
    /// directories only, the package layout, the size [`Limits`]), and it must hold its
    /// release's `modules.sha256`; a package refused there changes nothing in the root.
    /// The directory is then unpacked as any other.
    pub fn unpack(&self, from: &Path) -> Result<String, ReleaseError> {
        let meta = fs::metadata(from).map_err(io(from))?;
        if meta.is_dir() {
            return self.unpack_dir(from);
        }
        // Never a FIFO or a device: opened without blocking, refused unless regular.
        let file = trust::open_regular(from).map_err(io(from))?;
        let temp = tempfile::Builder::new()
            .prefix("hotcode-unpack-")
            .tempdir()
            .map_err(io(&std::env::temp_dir()))?;
        let extracted = package::extract(from, file, temp.path(), &Limits::default())?;
        log::info!(
            "{}: {} files ({} bytes) extracted into {}",
            from.display(),
            extracted.files.len(),
            extracted.bytes,
            temp.path().display()
        );
        // A package comes from elsewhere: its module bytes are loaded only against its own
        // record (`hotcode release tar` always writes one).
        let record = extracted.files.iter().any(|f| {
            f.strip_prefix("releases/")
                .is_some_and(|rest| rest.ends_with(&format!("/{HASHES_FILE}")))
        });
        if !record {
            return Err(invalid(format!(
                "{}: the package has no releases/<vsn>/{HASHES_FILE}: a package must record \
                 the SHA-256 of its module files (hotcode release tar writes it)",
                from.display()
            )));
        }
        self.unpack_dir(temp.path())
    }

    /// [`unpack`](Self::unpack) of a directory.
    fn unpack_dir(&self, from: &Path) -> Result<String, ReleaseError> {
        let package = Package::read(from)?;
        let vsn = package.rel.vsn.clone();
        let mut state = self.lock();
        if state.releases.iter().any(|r| r.vsn == vsn) {
            return Err(ReleaseError::AlreadyUnpacked { vsn });
        }
        if let Some(record) = &package.record {
            for (other, r) in &state.records {
                if let Record::Digests(theirs) = r {
                    let files = conflicts(record, theirs);
                    if !files.is_empty() {
                        return Err(invalid(format!(
                            "{}: release {vsn} records other digests than release {other} for {}",
                            package.release_dir.join(HASHES_FILE).display(),
                            files.join(", ")
                        )));
                    }
                }
            }
        }
        // Decide, for every directory, before writing anything.
        let used: BTreeSet<PathBuf> =
            state.releases.iter().flat_map(|r| r.apps.iter().map(|a| self.lib_dir(a))).collect();
        let mut to_copy = Vec::new();
        for app in &package.apps {
            let (src, dest) = (&app.dir, self.lib_dir(&app.entry));
            if fs::symlink_metadata(&dest).is_ok() {
                if same_tree(src, &dest)? {
                    continue;
                }
                if used.contains(&dest) {
                    return Err(invalid(format!(
                        "{}: differs from the package's {}, and a release uses it",
                        dest.display(),
                        src.display()
                    )));
                }
                // Left by an interrupted unpack or remove: replaced below.
            }
            to_copy.push((src.clone(), dest));
        }
        // The host binary: one the root has must be the package's (a host version never
        // changes); without one in either, a release on another host could not be installed.
        let host_dest =
            root_path(&self.root, &[&host_dir_name(&package.rel.host_vsn)]).map_err(invalid)?;
        let copy_host = match &package.host_dir {
            Some(src) if fs::symlink_metadata(&host_dest).is_ok() => {
                if !same_tree(src, &host_dest)? {
                    return Err(invalid(format!(
                        "{}: differs from the package's {}: a host version never changes",
                        host_dest.display(),
                        src.display()
                    )));
                }
                None
            }
            Some(src) => Some(src.clone()),
            None if package.rel.host_vsn != super::HOST_VSN
                && fs::symlink_metadata(&host_dest).is_err() =>
            {
                return Err(invalid(format!(
                    "release {vsn} runs on hotcode {}, and neither the package nor the root \
                     holds {}/bin/{HOST_BINARY}",
                    package.rel.host_vsn,
                    host_dest.display()
                )));
            }
            None => None,
        };
        fault_point("unpack: package read and checked");
        clean_temporaries(&self.root)?;
        if let Some(src) = &copy_host {
            install_dir(src, &host_dest)?;
        }
        fs::create_dir_all(self.root.join("lib")).map_err(io(&self.root))?;
        for (src, dest) in &to_copy {
            install_dir(src, dest)?;
        }
        install_dir(&package.release_dir, &self.release_dir(&vsn)?)?;
        // What was copied is what was checked: the package may have changed meanwhile.
        if let Some(record) = &package.record {
            self.verify_installed(&vsn, record)?;
        }
        let mut releases = state.releases.clone();
        releases.push(ReleaseEntry {
            name: package.rel.name.clone(),
            vsn: vsn.clone(),
            host_vsn: package.rel.host_vsn.clone(),
            apps: package.apps.iter().map(|a| a.entry.clone()).collect(),
            status: ReleaseStatus::Unpacked,
        });
        self.write(&releases)?;
        state.releases = releases;
        let record = self.read_record(&vsn);
        state.records.insert(vsn.clone(), record);
        log::info!("release {} {vsn} unpacked", package.rel.name);
        Ok(vsn)
    }

    /// `release_handler:remove_release(Vsn)`: deletes a release and the library
    /// directories no other release uses. Refused for the permanent and current releases.
    pub fn remove(&self, vsn: &str) -> Result<(), ReleaseError> {
        check_vsn(vsn)?;
        let mut state = self.lock();
        let Some(target) = state.releases.iter().find(|r| r.vsn == vsn).cloned() else {
            return Err(ReleaseError::UnknownRelease { vsn: vsn.to_owned() });
        };
        if target.status == ReleaseStatus::Permanent {
            return Err(ReleaseError::RemovePermanent { vsn: vsn.to_owned() });
        }
        if state.current == vsn {
            return Err(ReleaseError::RemoveCurrent { vsn: vsn.to_owned() });
        }
        let releases: Vec<ReleaseEntry> =
            state.releases.iter().filter(|r| r.vsn != vsn).cloned().collect();
        let used: BTreeSet<PathBuf> =
            releases.iter().flat_map(|r| r.apps.iter().map(|a| self.lib_dir(a))).collect();
        let mut dirs: Vec<String> = target
            .apps
            .iter()
            .filter(|a| !used.contains(&self.lib_dir(a)))
            .map(|a| a.lib_dir.clone())
            .collect();
        dirs.push(format!("releases/{vsn}"));
        let intent = self.root.join("releases").join(REMOVING);
        let text = std::iter::once(vsn.to_owned()).chain(dirs.iter().cloned()).collect::<Vec<_>>();
        write_atomically(&intent, format!("{}\n", text.join("\n")).as_bytes())
            .map_err(io(&intent))?;
        fault_point("remove: intent written");
        self.write(&releases)?;
        state.releases = releases;
        state.records.remove(vsn);
        self.delete_own_dirs(&dirs)?;
        fs::remove_file(&intent).map_err(io(&intent))?;
        fault_point("remove: intent dropped");
        log::info!("release {vsn} removed");
        Ok(())
    }

    /// Checks the installed record of `vsn` is `record`, and the installed files match it.
    fn verify_installed(&self, vsn: &str, record: &ModuleHashes) -> Result<(), ReleaseError> {
        let path = root_path(&self.root, &["releases", vsn, HASHES_FILE]).map_err(invalid)?;
        if &read_hashes(&path)? != record {
            return Err(invalid(format!("{}: changed while it was unpacked", path.display())));
        }
        for (file, digest) in record {
            let path = self.root.join(file);
            if &sha256_file(&path).map_err(io(&path))? != digest {
                return Err(invalid(format!("{}: changed while it was unpacked", path.display())));
            }
        }
        Ok(())
    }

    /// Deletes root-relative directories `lib/<app>-<vsn>` or `releases/<vsn>`, only if
    /// each is a real directory owned by this node's uid or root.
    fn delete_own_dirs(&self, dirs: &[String]) -> Result<(), ReleaseError> {
        for dir in dirs {
            let parts: Vec<&str> = dir.split('/').collect();
            let [top @ ("lib" | "releases"), name] = parts.as_slice() else {
                return Err(invalid(format!("refusing to delete {dir}: not a release directory")));
            };
            let path = root_path(&self.root, &[top, name]).map_err(invalid)?;
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if !meta.is_dir() {
                return Err(invalid(format!(
                    "refusing to delete {}: not a directory",
                    path.display()
                )));
            }
            trust::check_meta(&path, &meta).map_err(|e| invalid(e.to_string()))?;
            fs::remove_dir_all(&path).map_err(io(&path))?;
            log::info!("removed {}", path.display());
            fault_point("remove: deleted a directory");
        }
        Ok(())
    }

    /// At boot: completes or forgets a removal a crash interrupted, and deletes the
    /// temporary directories of an interrupted unpack.
    pub(crate) fn finish_interrupted(&self) -> Result<(), ReleaseError> {
        let intent = self.root.join("releases").join(REMOVING);
        if fs::symlink_metadata(&intent).is_ok() {
            let text = crate::release::terms::read_text(&intent)?;
            let mut lines = text.lines();
            let vsn = lines.next().unwrap_or("");
            check_name(NameKind::Vsn, vsn)
                .map_err(|why| invalid(format!("{}: {why}", intent.display())))?;
            let dirs: Vec<String> = lines.map(str::to_owned).collect();
            if self.lock().releases.iter().any(|r| r.vsn == vsn) {
                log::warn!("a removal of release {vsn} was interrupted before it began; undone");
            } else {
                log::warn!("a removal of release {vsn} was interrupted; finishing it");
                self.delete_own_dirs(&dirs)?;
            }
            fs::remove_file(&intent).map_err(io(&intent))?;
        }
        clean_temporaries(&self.root)
    }
}

/// Deletes `lib/.unpack-*` and `releases/.unpack-*`, left by an interrupted unpack.
fn clean_temporaries(root: &Path) -> Result<(), ReleaseError> {
    for top in ["lib", "releases"] {
        let dir = root.join(top);
        let Ok(items) = fs::read_dir(&dir) else { continue };
        for item in items {
            let item = item.map_err(io(&dir))?;
            let name = item.file_name();
            if name.to_string_lossy().starts_with(TEMP_PREFIX)
                && item.file_type().map_err(io(&dir))?.is_dir()
            {
                let path = item.path();
                fs::remove_dir_all(&path).map_err(io(&path))?;
                log::info!("removed {}, left by an interrupted unpack", path.display());
            }
        }
    }
    Ok(())
}
