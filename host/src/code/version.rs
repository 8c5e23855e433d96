//! One loaded version of a module: what the host keeps of it, and its library.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use abi_stable::type_layout::TypeLayout;
use plugin_api::Behaviour;

use crate::code::hold::VersionCell;
use crate::code::loader::Opened;

/// A loaded version. Everything here is host-owned except the library itself, which is
/// closed exactly once, by the reaper, after a scan found no holder.
pub(crate) struct Version {
    /// Process-wide unique id (also in the private copy's file name).
    pub(crate) id: u64,
    /// The code server that loaded it.
    pub(crate) owner: u64,
    /// Module name.
    pub(crate) module: String,
    /// The module's vsn string.
    pub(crate) vsn: String,
    /// The module's behaviour.
    pub(crate) behaviour: Behaviour,
    /// The file it was loaded from.
    pub(crate) source: PathBuf,
    /// The private copy that is mapped (its file unlinked; the path names the mapping).
    pub(crate) copy: PathBuf,
    /// The SHA-256 of the bytes mapped.
    pub(crate) sha256: crate::code::loader::Sha256,
    /// The interface name, for library modules.
    pub(crate) interface: Option<String>,
    /// What callers touch.
    pub(crate) cell: &'static VersionCell,
    library: Mutex<Option<Opened>>,
}

// SAFETY: `Opened` holds raw pointers into the library's immutable static data (its
// interface table and layout), which any thread may read while the library is open;
// the library handle itself is Send and Sync. All access to `Opened` goes through the mutex.
unsafe impl Send for Version {}
// SAFETY: as above.
unsafe impl Sync for Version {}

impl Version {
    pub(crate) fn new(id: u64, owner: u64, source: PathBuf, opened: Opened) -> Version {
        let table = opened.interface.map(|i| i.table).unwrap_or(std::ptr::null());
        Version {
            id,
            owner,
            module: opened.name.clone(),
            vsn: opened.vsn.clone(),
            behaviour: opened.behaviour,
            source,
            copy: opened.copy.clone(),
            sha256: opened.sha256,
            interface: opened.interface.map(|i| i.name.to_owned()),
            cell: VersionCell::acquire(id, table),
            library: Mutex::new(Some(opened)),
        }
    }

    fn library(&self) -> MutexGuard<'_, Option<Opened>> {
        self.library.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the library out for closing; `None` if it was taken already.
    pub(crate) fn take_library(&self) -> Option<Opened> {
        self.library().take()
    }

    /// The exported function `name` for `apply`, while the library is open.
    pub(crate) fn function(&self, name: &str) -> Option<crate::code::loader::ExportedFnPtr> {
        self.library()
            .as_ref()
            .and_then(|o| o.functions.iter().find(|(n, _)| n == name).map(|(_, f)| *f))
    }

    /// The names of the functions exported for `apply`.
    pub(crate) fn function_names(&self) -> Vec<String> {
        self.library()
            .as_ref()
            .map(|o| o.functions.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// The exported interface's layout, while the library is open.
    pub(crate) fn interface_layout(&self) -> Option<&'static TypeLayout> {
        self.library().as_ref().and_then(|o| o.interface.map(|i| i.layout))
    }

    /// `module vsn (id N)`, for logs.
    pub(crate) fn label(&self) -> String {
        format!("module {} vsn {} (id {})", self.module, self.vsn, self.id)
    }
}
