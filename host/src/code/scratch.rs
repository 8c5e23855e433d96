//! Where the private copies of libraries live, and how nothing of them is left behind.
//!
//! The loader copies each library to a private, uniquely named file and `dlopen`s the copy
//! (glibc hands back the object it already has for a path or inode it has seen). It unlinks
//! the copy as soon as it is open: a mapping outlives its file's name, and
//! `/proc/self/maps` still shows the path (followed by ` (deleted)`), which is all the
//! unload check needs. So a scratch directory holds a file only between a copy and its
//! `dlopen`; what is left to clean up is the directory itself, and at most a copy whose
//! load the process's death interrupted.
//!
//! Each code server has its own directory, `<parent>/<pid>-<n>` (`n` counts the code
//! servers this process made), mode 0700, inside a parent that must be this uid's private
//! directory: `ROOT/run/lib` for a booted release, `$TMPDIR/hotcode-<uid>` otherwise. The
//! parent is made with mode 0700 if missing and refused if it is a symbolic link, someone
//! else's, or open to group or others; the directory above it must not let others rename
//! what it holds (owned by this uid or root, and not writable by group or others unless
//! sticky, as `/tmp` is).
//!
//! The owner holds an exclusive `flock(2)` on its directory for as long as it lives, so
//! whether the owner is alive has a certain answer, even once its pid is reused: whoever
//! can take the lock knows the owner is gone. The directory is removed
//!
//! - when its code server is dropped;
//! - at `exit(3)`, by a hook registered with `atexit`, for code servers still alive then:
//!   a return from `main`, `std::process::exit` (the release handler's restart exit), a
//!   panic that unwound out of `main`, a test harness's exit;
//! - otherwise (SIGKILL, an abort, a signal's default action), by the next code server
//!   made in the same parent: before it makes its own directory it removes every
//!   directory there whose lock it can take.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use crate::code::error::CodeServerError;
use crate::code::trust::node_uid;

/// How many names [`Scratch::create`] tries before it gives up (each try fails only if a
/// directory of that name exists, or a sweep took it while it was being made).
const ATTEMPTS: usize = 100;

/// A code server's directory for private library copies, locked for as long as it lives
/// and removed when dropped. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: PathBuf,
    /// The directory, open and locked; closing it (after the directory is removed, or
    /// when the process dies) releases the lock.
    _lock: File,
}

/// The default parent of scratch directories: `$TMPDIR/hotcode-<uid>` (`/tmp/...` without
/// `TMPDIR`).
pub(crate) fn default_parent() -> PathBuf {
    std::env::temp_dir().join(format!("hotcode-{}", node_uid()))
}

static NEXT: AtomicU64 = AtomicU64::new(1);

impl Scratch {
    /// Checks (or makes) `parent`, removes what dead processes left in it, and makes and
    /// locks a fresh `<parent>/<pid>-<n>`.
    pub(crate) fn create(parent: &Path) -> Result<Scratch, CodeServerError> {
        // Absolute, always: `/proc/self/maps` names a mapping by its absolute path, and the
        // unload check compares the copy's path with it.
        let parent = &std::path::absolute(parent).map_err(|e| scratch_error(parent, e))?;
        prepare_parent(parent)?;
        sweep(parent);
        let pid = std::process::id();
        for _ in 0..ATTEMPTS {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = parent.join(format!("{pid}-{n}"));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                // Another process's with our pid, alive in another pid namespace, or a
                // dead one's that the sweep could not remove: not ours to take.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(scratch_error(&dir, e)),
            }
            match lock_dir(&dir) {
                Ok(Some(lock)) => {
                    register(&dir);
                    log::debug!("private library copies in {}", dir.display());
                    return Ok(Scratch { dir, _lock: lock });
                }
                // A sweep took the lock between the mkdir and ours: the directory is the
                // sweep's to remove.
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(scratch_error(&dir, e)),
            }
        }
        Err(scratch_error(
            parent,
            io::Error::other(format!("no free name for process {pid} after {ATTEMPTS} tries")),
        ))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        unregister(&self.dir);
        // The lock (`_lock`, dropped after this) is held until the directory is gone.
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => log::debug!("removed {}", self.dir.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove {}: {e}", self.dir.display()),
        }
    }
}

fn scratch_error(path: &Path, source: io::Error) -> CodeServerError {
    CodeServerError::Scratch { path: path.to_owned(), source }
}

fn refuse(path: &Path, problem: String) -> CodeServerError {
    CodeServerError::UnsafeScratch { path: path.to_owned(), problem }
}

/// Opens a directory without following a symbolic link.
fn open_dir(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

/// Makes `parent` (mode 0700) if it is missing and checks it and the directory above it.
fn prepare_parent(parent: &Path) -> Result<(), CodeServerError> {
    let me = node_uid();
    // Whoever can rename entries of the directory above could swap `parent` for another
    // between our checks and our uses of its name.
    if let Some(above) = parent.parent().filter(|p| !p.as_os_str().is_empty()) {
        let meta = fs::metadata(above).map_err(|e| scratch_error(above, e))?;
        let uid = meta.uid();
        if uid != 0 && uid != me {
            return Err(refuse(above, format!("is owned by uid {uid}, neither uid {me} nor root")));
        }
        let mode = meta.mode();
        if mode & 0o022 != 0 && mode & libc::S_ISVTX == 0 {
            return Err(refuse(
                above,
                format!(
                    "is writable by group or others without the sticky bit (mode {:04o}): they \
                     could replace what it holds",
                    mode & 0o7777
                ),
            ));
        }
    }
    match fs::DirBuilder::new().mode(0o700).create(parent) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(scratch_error(parent, e)),
    }
    // Checked on the opened directory: the name cannot lead elsewhere by then.
    let dir = open_dir(parent).map_err(|e| match e.raw_os_error() {
        // Refused by the flags (a link to a directory gives either); the name's own type
        // only words the message.
        Some(libc::ELOOP | libc::ENOTDIR) => {
            let link = fs::symlink_metadata(parent).is_ok_and(|m| m.file_type().is_symlink());
            refuse(parent, if link { "is a symbolic link" } else { "is not a directory" }.into())
        }
        _ => scratch_error(parent, e),
    })?;
    let meta = dir.metadata().map_err(|e| scratch_error(parent, e))?;
    if meta.uid() != me {
        return Err(refuse(parent, format!("is owned by uid {}, not by uid {me}", meta.uid())));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(
            parent,
            format!("has mode {mode:04o}: group or others have access to it (it must be 0700)"),
        ));
    }
    Ok(())
}

/// Opens `dir` and takes its lock without waiting. `Ok(None)` if another open file holds
/// the lock (its owner is alive), or if the name no longer leads to the directory that was
/// locked (a sweep removed it, and it may have been made again, between the open and the
/// lock).
fn lock_dir(dir: &Path) -> io::Result<Option<File>> {
    let file = open_dir(dir)?;
    // SAFETY: flock(2) on the descriptor `file` owns, open for the whole call; it touches
    // no memory of ours.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
    }
    let locked = file.metadata()?;
    match fs::symlink_metadata(dir) {
        Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => Ok(Some(file)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `name` is a scratch directory's: `<pid>-<n>`.
fn is_scratch_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.split_once('-').is_some_and(|(pid, n)| digits(pid) && digits(n))
}

/// Removes every scratch directory in `parent` whose owner is gone: every one whose lock
/// can be taken. Anything else in `parent` is left alone.
fn sweep(parent: &Path) {
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!("cannot look for stale private copies in {}: {e}", parent.display());
            return;
        }
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_str().is_some_and(is_scratch_name) {
            continue;
        }
        let dir = entry.path();
        match lock_dir(&dir) {
            // Removed while the lock is held: no owner can come back to it.
            Ok(Some(lock)) => {
                match fs::remove_dir_all(&dir) {
                    Ok(()) => log::info!(
                        "removed {}: private library copies of a process that is gone",
                        dir.display()
                    ),
                    Err(e) => log::warn!("cannot remove stale {}: {e}", dir.display()),
                }
                drop(lock);
            }
            Ok(None) => {}
            Err(e) => log::debug!("leaving {} alone: {e}", dir.display()),
        }
    }
}

/// The scratch directories alive in this process, with the pid that made each: what the
/// exit hook removes.
static LIVE: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<(u32, PathBuf)>> {
    // Each critical section is one push, retain or take: a panic cannot leave it half-done.
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn register(dir: &Path) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: atexit(3) only records the address of `remove_at_exit`, a function of
        // this program that lives as long as it does and never unwinds.
        if unsafe { libc::atexit(remove_at_exit) } != 0 {
            log::warn!("cannot register the exit hook that removes private library copies");
        }
    });
    live().push((std::process::id(), dir.to_owned()));
}

fn unregister(dir: &Path) {
    live().retain(|(_, d)| d != dir);
}

/// Run by `exit(3)`: removes the scratch directories of code servers still alive. Only
/// this process's: a child forked from it (which inherits the hook and the list) that
/// exits must not remove its parent's.
extern "C" fn remove_at_exit() {
    // An unwind must not cross into libc's exit.
    let _ = std::panic::catch_unwind(|| {
        let pid = std::process::id();
        // try_lock: a child forked while another thread held the list would wait for ever
        // on a lock nobody in it will let go. Its directories (if any) are then left for
        // the next sweep, which removes them once their locks are free.
        let dirs = match LIVE.try_lock() {
            Ok(mut list) => std::mem::take(&mut *list),
            Err(std::sync::TryLockError::Poisoned(p)) => std::mem::take(&mut *p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        for (owner, dir) in dirs {
            if owner == pid {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A private parent inside a fresh temp dir (which tempfile makes with mode 0700).
    fn parent() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let parent = tmp.path().join("hotcode-test");
        (tmp, parent)
    }

    #[test]
    fn a_scratch_is_a_private_locked_directory_named_by_pid_and_removed_on_drop() {
        let (_tmp, parent) = parent();
        let scratch = Scratch::create(&parent).expect("scratch");
        let dir = scratch.path().to_owned();
        assert_eq!(dir.parent(), Some(parent.as_path()));
        let name = dir.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.starts_with(&format!("{}-", std::process::id())), "{name}");
        for made in [&parent, &dir] {
            let mode = fs::metadata(made).expect("stat").permissions().mode();
            assert_eq!(mode & 0o7777, 0o700, "{}", made.display());
        }
        assert_eq!(lock_dir(&dir).expect("open").map(drop), None, "its lock is held");
        assert!(live().iter().any(|(_, d)| d == &dir), "the exit hook knows it");
        fs::write(dir.join("left.so"), "a copy whose load was interrupted").expect("write");
        drop(scratch);
        assert!(!dir.exists());
        assert!(parent.exists(), "the parent stays for the other code servers");
        assert!(!live().iter().any(|(_, d)| d == &dir));
    }

    #[test]
    fn a_new_scratch_removes_the_directories_of_dead_owners_and_only_those() {
        let (_tmp, parent) = parent();
        let first = Scratch::create(&parent).expect("scratch");
        // A dead process's: nobody holds its lock.
        let dead = parent.join("4000000000-7");
        fs::create_dir(&dead).expect("mkdir");
        fs::write(dead.join("greeter-3.so"), "left behind").expect("write");
        // A live owner in another process looks like this: a directory locked by another
        // open file.
        let alive = parent.join("4000000001-1");
        fs::create_dir(&alive).expect("mkdir");
        let held = lock_dir(&alive).expect("open").expect("lock");
        // Not a scratch directory's name: never touched.
        let other = parent.join("notes");
        fs::create_dir(&other).expect("mkdir");

        let second = Scratch::create(&parent).expect("scratch");
        assert!(!dead.exists(), "the dead owner's directory is removed");
        assert!(alive.exists(), "a locked directory is left alone");
        assert!(other.exists());
        assert!(first.path().exists(), "a live scratch of this very process is left alone");
        assert!(second.path().exists());

        drop(held);
        let third = Scratch::create(&parent).expect("scratch");
        assert!(!alive.exists(), "once its lock is free, it is stale");
        drop((first, second, third));
    }

    #[test]
    fn a_parent_that_is_not_private_is_refused() {
        let (tmp, parent) = parent();
        fs::create_dir(&parent).expect("mkdir");
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = Scratch::create(&parent).expect_err("a 0755 parent");
        assert!(matches!(err, CodeServerError::UnsafeScratch { .. }), "{err}");
        assert!(err.to_string().contains("has mode 0755"), "{err}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&parent, &link).expect("symlink");
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = Scratch::create(&link).expect_err("a symbolic link");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert_eq!(fs::read_dir(&parent).expect("read").count(), 0, "nothing made through it");

        let file = tmp.path().join("file");
        fs::write(&file, "").expect("write");
        let err = Scratch::create(&file).expect_err("a file");
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn a_parent_in_a_directory_others_can_rename_in_is_refused() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = Scratch::create(&shared.join("hotcode-x")).expect_err("no sticky bit");
        assert!(err.to_string().contains("without the sticky bit (mode 0777)"), "{err}");
        assert!(!shared.join("hotcode-x").exists(), "refused before anything is made");
        // As /tmp is: sticky, so others cannot rename what is ours.
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
        drop(Scratch::create(&shared.join("hotcode-x")).expect("a sticky parent is fine"));
    }

    #[test]
    fn a_relative_parent_gives_an_absolute_scratch_directory() {
        // Relative to the test's working directory (the crate's), removed with `tmp`.
        let tmp = tempfile::Builder::new().prefix(".scratch-test-").tempdir_in(".").expect("dir");
        let relative = Path::new(tmp.path().file_name().expect("a name")).join("copies");
        assert!(relative.is_relative());
        let scratch = Scratch::create(&relative).expect("scratch");
        assert!(scratch.path().is_absolute(), "{}", scratch.path().display());
        assert!(scratch.path().starts_with(std::path::absolute(&relative).expect("absolute")));
    }

    #[test]
    fn a_parent_of_another_user_is_refused() {
        if node_uid() != 0 {
            eprintln!("skipped: only root can give a directory to another uid");
            return;
        }
        let (_tmp, parent) = parent();
        fs::create_dir(&parent).expect("mkdir");
        std::os::unix::fs::chown(&parent, Some(4242), None).expect("chown");
        let err = Scratch::create(&parent).expect_err("another uid's");
        assert!(err.to_string().contains("is owned by uid 4242"), "{err}");
    }

    #[test]
    fn scratch_names_are_pid_dash_counter() {
        assert!(is_scratch_name("123-4"));
        for name in ["123", "-4", "123-", "a-1", "1-b", "1-2-3", ".1-2", ""] {
            assert!(!is_scratch_name(name), "{name:?}");
        }
    }
}
