//! Unloading versions that nothing can reach any more, once nothing holds them.
//!
//! A version is *retired* when it leaves the code server's slots (purged, or replaced and
//! unheld). Retiring puts it on the process-wide detached list, sets its cell's `reap` flag
//! and scans the hold slots. If no thread holds it, it is unloaded at once; otherwise the
//! last thread to release it sees the flag and calls [`on_release`], which scans again and
//! unloads. The list is process-wide because hold slots are: a version may outlive the
//! code server that loaded it, if a thread is still inside it when the server is dropped.
//!
//! A library that is still mapped after `dlclose` goes on the leaked list, is logged, and
//! is retried by [`retry_leaked`] (the code server calls it on every operation).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::code::hold::{self, Found};
use crate::code::loader::{self, Closed};
use crate::code::version::Version;

/// A library that stayed mapped after it was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakedLibrary {
    /// The module.
    pub module: String,
    /// The version string.
    pub vsn: String,
    /// The version's id.
    pub id: u64,
    /// The private copy that stays mapped.
    pub copy: PathBuf,
    /// Why it is considered leaked.
    pub reason: String,
    /// The code server that loaded it.
    pub(crate) owner: u64,
}

/// What became of a retired version.
#[derive(Debug, Clone)]
pub(crate) enum Retired {
    /// Unloaded and verified gone.
    Unloaded,
    /// Closed, but still mapped: reported and kept for a retry.
    Leaked(String),
    /// Still held by these threads; unloaded when the last one returns.
    Held(Vec<Found>),
}

#[derive(Default)]
struct Reaper {
    detached: Vec<Arc<Version>>,
    leaked: Vec<LeakedLibrary>,
}

static REAPER: Mutex<Reaper> = Mutex::new(Reaper { detached: Vec::new(), leaked: Vec::new() });

fn lock() -> MutexGuard<'static, Reaper> {
    // Every critical section below keeps the lists consistent at each step, so a panic
    // that poisoned the lock left nothing half-done.
    REAPER.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Retires `version`: it must already be unreachable for new callers (not current).
pub(crate) fn retire(version: Arc<Version>) -> Retired {
    let mut reaper = lock();
    version.cell.request_reap();
    let holders = hold::scan(&[version.cell]);
    if holders.is_empty() {
        unload(&mut reaper, &version)
    } else {
        log::info!(
            "{} detached; unloading it when its last holder returns ({} holding)",
            version.label(),
            holders.len()
        );
        reaper.detached.push(version);
        Retired::Held(holders)
    }
}

/// Called by a thread that just released a cell whose `reap` flag was set.
#[cold]
pub(crate) fn on_release(cell: &'static hold::VersionCell) {
    let mut reaper = lock();
    let Some(at) = reaper.detached.iter().position(|v| std::ptr::eq(v.cell, cell)) else {
        // Another releaser got there first, or the flag belonged to a cell's former use.
        return;
    };
    if hold::scan(&[cell]).is_empty() {
        let version = reaper.detached.swap_remove(at);
        let _ = unload(&mut reaper, &version);
    }
}

fn unload(reaper: &mut Reaper, version: &Version) -> Retired {
    let Some(opened) = version.take_library() else {
        return Retired::Unloaded;
    };
    let copy = opened.copy.clone();
    let outcome = match opened.close() {
        Closed::Unmapped => {
            log::info!("{} unloaded", version.label());
            Retired::Unloaded
        }
        Closed::Leaked(reason) => {
            log::warn!(
                "{} leaked: {reason}; {} stays mapped (a thread-local destructor registered \
                 by the plugin keeps it until that thread exits); will retry",
                version.label(),
                copy.display()
            );
            reaper.leaked.push(LeakedLibrary {
                module: version.module.clone(),
                vsn: version.vsn.clone(),
                id: version.id,
                copy,
                reason: reason.clone(),
                owner: version.owner,
            });
            Retired::Leaked(reason)
        }
    };
    // No slot holds the cell (we scanned after it stopped being current), so it can serve
    // another version. The library may be leaked, but nobody can reach it through the cell.
    version.cell.recycle();
    outcome
}

/// What became of retired version `id` so far: still detached (with its holders now),
/// leaked, or (on neither list) unloaded.
pub(crate) fn outcome(id: u64) -> Retired {
    let reaper = lock();
    if let Some(version) = reaper.detached.iter().find(|v| v.id == id) {
        return Retired::Held(hold::scan(&[version.cell]));
    }
    match reaper.leaked.iter().find(|l| l.id == id) {
        Some(leak) => Retired::Leaked(leak.reason.clone()),
        None => Retired::Unloaded,
    }
}

/// Retries every leaked library; returns those that are now gone.
pub(crate) fn retry_leaked() -> Vec<LeakedLibrary> {
    let mut reaper = lock();
    let mut gone = Vec::new();
    reaper.leaked.retain(|leak| match loader::retry_leaked(&leak.copy) {
        Closed::Unmapped => {
            log::info!("leaked {} {} (id {}) is unloaded now", leak.module, leak.vsn, leak.id);
            gone.push(leak.clone());
            false
        }
        Closed::Leaked(_) => true,
    });
    gone
}

/// The leaked libraries of code server `owner`.
pub(crate) fn leaked(owner: u64) -> Vec<LeakedLibrary> {
    lock().leaked.iter().filter(|l| l.owner == owner).cloned().collect()
}

/// The detached (retired but still held) versions of code server `owner`.
pub(crate) fn detached(owner: u64) -> Vec<Arc<Version>> {
    lock().detached.iter().filter(|v| v.owner == owner).cloned().collect()
}
