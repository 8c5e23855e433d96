//! What the node trusts on disk: each release's own integrity record
//! (`releases/<vsn>/modules.sha256`), and the owner and mode of every file and directory on
//! the way from the root to a module or a record.
//!
//! Each release's files are verified against that release's record, never a merged map: a
//! record that disagrees with another release's about a shared file is refused at unpack,
//! and a bad record of a release that is not permanent is reported without stopping the
//! permanent release from booting. Module files are staged through the loader's one path
//! that hashes the private copy it maps, so the bytes checked are the bytes run.

use std::path::Path;

use crate::code::trust;
use crate::release::hashes::{HASHES_FILE, ModuleHashes, read_hashes};
use crate::release::names::root_path;

use super::{ReleaseError, ReleaseHandler, State};

/// One release's integrity record.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    /// The release records no digests: its modules load unverified (a warning says so).
    Absent,
    /// The digests of its module files, by root-relative path.
    Digests(ModuleHashes),
    /// The record could not be read or trusted: nothing of the release is loaded.
    Bad(String),
}

impl ReleaseHandler {
    /// Refuses a file under the root unless it and every directory above it up to the
    /// root are the node's own (owner this uid or root, writable by nobody else, no links).
    pub(crate) fn trusted(&self, path: &Path) -> Result<(), ReleaseError> {
        trust::check_under(&self.root, path).map_err(|e| ReleaseError::Invalid(e.to_string()))
    }

    /// Reads release `vsn`'s record from disk.
    pub(crate) fn read_record(&self, vsn: &str) -> Record {
        read_record(&self.root, vsn)
    }

    /// Reads every release's record. The permanent release's must be good (the node is
    /// about to run it); a bad record of another release is logged, and that release
    /// refuses to install until it is fixed.
    pub(crate) fn load_records(&self) -> Result<(), ReleaseError> {
        let mut state = self.lock();
        let mut records = std::collections::BTreeMap::new();
        for r in &state.releases {
            let record = self.read_record(&r.vsn);
            match &record {
                Record::Bad(why) if r.vsn == state.current => {
                    return Err(ReleaseError::Invalid(format!(
                        "the record of the running release {}: {why}",
                        r.vsn
                    )));
                }
                Record::Bad(why) => log::error!("release {}: {why}", r.vsn),
                Record::Absent => log::warn!(
                    "release {} records no module digests ({HASHES_FILE}); it loads unverified",
                    r.vsn
                ),
                Record::Digests(_) => {}
            }
            records.insert(r.vsn.clone(), record);
        }
        state.records = records;
        Ok(())
    }

    /// Release `vsn`'s record, as loaded.
    pub(super) fn record(&self, state: &State, vsn: &str) -> Record {
        state.records.get(vsn).cloned().unwrap_or(Record::Absent)
    }

    /// The digest `record` gives module file `file`: `Ok(None)` when the release records
    /// none at all, an error when its record is bad or does not list this file.
    pub(crate) fn expected_hash(
        &self,
        record: &Record,
        file: &Path,
    ) -> Result<Option<[u8; 32]>, String> {
        expected_hash(&self.root, record, file)
    }

    /// Stages `module` from `file`: the file must be trusted, and the private copy the
    /// loader maps is verified against the release's record when it has one.
    pub(crate) fn stage(
        &self,
        record: &Record,
        module: &str,
        file: &Path,
    ) -> Result<(), ReleaseError> {
        self.trusted(file)?;
        match self.expected_hash(record, file).map_err(ReleaseError::Invalid)? {
            Some(digest) => self.node.code().load_object_code_verified(module, file, &digest)?,
            None => self.node.code().load_object_code(module, file)?,
        };
        Ok(())
    }
}

/// Reads release `vsn`'s record from the root at `root`.
pub(crate) fn read_record(root: &Path, vsn: &str) -> Record {
    let path = match root_path(root, &["releases", vsn, HASHES_FILE]) {
        Ok(path) => path,
        Err(why) => return Record::Bad(why),
    };
    if !path.exists() {
        return Record::Absent;
    }
    if let Err(e) = trust::check_under(root, &path) {
        return Record::Bad(e.to_string());
    }
    match read_hashes(&path) {
        Ok(hashes) => Record::Digests(hashes),
        Err(e) => Record::Bad(e.to_string()),
    }
}

/// The digest `record` gives `file` (under `root`): `Ok(None)` when the release records
/// none at all, an error when its record is bad or does not list this file.
pub(crate) fn expected_hash(
    root: &Path,
    record: &Record,
    file: &Path,
) -> Result<Option<[u8; 32]>, String> {
    match record {
        Record::Absent => Ok(None),
        Record::Bad(why) => Err(why.clone()),
        Record::Digests(hashes) => {
            let key = file.strip_prefix(root).unwrap_or(file).to_string_lossy();
            match hashes.get(key.as_ref()) {
                Some(digest) => Ok(Some(*digest)),
                None => Err(format!(
                    "{} is not recorded in its release's {HASHES_FILE}",
                    file.display()
                )),
            }
        }
    }
}

/// Checks host binary `binary` under `root` as its release (`record`) vouches for it:
/// trusted like a module (owner, modes, no links), an executable regular file, and the
/// digest the record gives it (a release without a record runs it unverified, warned).
pub(crate) fn verify_host_binary(
    root: &Path,
    binary: &Path,
    record: &Record,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    trust::check_under(root, binary).map_err(|e| e.to_string())?;
    let meta = std::fs::symlink_metadata(binary).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.permissions().mode() & 0o100 == 0 {
        return Err("is not an executable regular file".to_owned());
    }
    match expected_hash(root, record, binary)? {
        None => {
            log::warn!("{}: its release records no digests; it runs unverified", binary.display())
        }
        Some(expected) => {
            let found = crate::code::loader::sha256_file(binary).map_err(|e| e.to_string())?;
            if found != expected {
                return Err(format!(
                    "SHA-256 {} differs from the recorded {}",
                    crate::code::loader::hex(&found),
                    crate::code::loader::hex(&expected)
                ));
            }
        }
    }
    Ok(())
}

/// The files two records disagree on: same root-relative path, different digests.
pub(crate) fn conflicts(a: &ModuleHashes, b: &ModuleHashes) -> Vec<String> {
    a.iter()
        .filter(|(file, digest)| b.get(*file).is_some_and(|other| other != *digest))
        .map(|(file, _)| file.clone())
        .collect()
}
