//! The asymmetric fence that keeps the call path free of expensive barriers.
//!
//! A caller publishes the version it enters with a plain store followed by a *compiler*
//! fence, then re-reads the module's current version. A purger publishes its change
//! (a new current version, or a retiring flag), then issues `membarrier(PRIVATE_EXPEDITED)`,
//! which runs a full memory barrier on every CPU currently running one of our threads,
//! and only then scans the callers' slots. This is the store-buffering (Dekker) pattern
//! with the caller's half of the fence moved to the purger: either the purger sees the
//! caller's slot, or the caller's re-read sees the purger's change.
//!
//! Where `membarrier` is not available (old kernels, seccomp), callers fall back to a real
//! `SeqCst` fence; the flag that selects it is never written after start-up, and each
//! version cell keeps a copy of it beside the function table, so a call reads it from the
//! cache line it reads anyway.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering, compiler_fence, fence};

/// `membarrier` commands (linux/membarrier.h).
const CMD_QUERY: libc::c_int = 0;
const CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// True until registration succeeded: callers must then use a full fence themselves.
static CALLERS_NEED_FULL_FENCE: AtomicBool = AtomicBool::new(true);
static INIT: Once = Once::new();

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes two integer arguments and touches no memory of ours; an
    // unsupported command just returns -1 with errno set.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint, 0 as libc::c_int) }
}

/// Registers the process for expedited private membarriers, once.
///
/// Called before any thread publishes a hold and before any scan; cheap after the first time.
pub(crate) fn init() {
    INIT.call_once(|| {
        let supported = membarrier(CMD_QUERY);
        let wanted = CMD_PRIVATE_EXPEDITED | CMD_REGISTER_PRIVATE_EXPEDITED;
        if supported < 0 || (supported as libc::c_int & wanted) != wanted {
            log::warn!("membarrier(PRIVATE_EXPEDITED) is not available: calls use a full fence");
            return;
        }
        if membarrier(CMD_REGISTER_PRIVATE_EXPEDITED) != 0 {
            log::warn!(
                "membarrier registration failed ({}): calls use a full fence",
                std::io::Error::last_os_error()
            );
            return;
        }
        CALLERS_NEED_FULL_FENCE.store(false, Ordering::SeqCst);
        log::debug!("membarrier(PRIVATE_EXPEDITED) registered");
    });
}

/// Whether callers must issue a full fence themselves. True until registration succeeded;
/// it goes from true to false at most once and never back, so a copy taken earlier is
/// either still right or errs on the safe side (a version cell caches it).
pub(crate) fn callers_need_full_fence() -> bool {
    CALLERS_NEED_FULL_FENCE.load(Ordering::SeqCst)
}

/// The caller's half: orders a slot store before the following load of `current`. `full`
/// is [`callers_need_full_fence`], as read now or cached earlier.
#[inline(always)]
pub(crate) fn caller_fence_with(full: bool) {
    if full {
        fence(Ordering::SeqCst);
    } else {
        compiler_fence(Ordering::SeqCst);
    }
}

/// The purger's half: after it, every caller's earlier slot store is visible, or that
/// caller's next load of `current` sees what the purger published before.
pub(crate) fn purger_fence() {
    fence(Ordering::SeqCst);
    if !CALLERS_NEED_FULL_FENCE.load(Ordering::SeqCst) && membarrier(CMD_PRIVATE_EXPEDITED) != 0 {
        // Registration succeeded, so this cannot fail short of a kernel bug; but if it
        // does, the only sound thing left is to make every caller fence for itself and
        // wait for those already past the flag check to finish, which we can't observe.
        // Refuse to pretend: abort rather than unmap code that may be running.
        log::error!("membarrier failed after registration: {}", std::io::Error::last_os_error());
        std::process::abort();
    }
    fence(Ordering::SeqCst);
}
