//! One node per root: the lock on `ROOT/run/`, and the checks that make that directory
//! trusted to hold the socket (see the [module docs](super)).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::code::trust::node_uid;

use super::*;

/// The one node allowed on a release root: an exclusive `flock(2)` on `ROOT/run/`, held
/// until dropped (or until the process dies).
///
/// Take it before anything reads or writes the root (before [`ReleaseHandler::boot`](crate::release_handler::ReleaseHandler::boot) reads
/// RELEASES) and keep it for as long as the node runs: `hotcode boot` does, and so must an
/// embedder that runs a [`ReleaseHandler`](crate::release_handler::ReleaseHandler) on a root, or two nodes could write one RELEASES.
/// [`Control::bind`] asks for it, so only the holder ever removes a stale socket.
#[derive(Debug)]
pub struct RootLock {
    root: PathBuf,
    dir: PathBuf,
    /// The checked, locked `ROOT/run/`; closing it releases the lock.
    _fd: OwnedFd,
}

impl RootLock {
    /// Creates `ROOT/run/` (mode 0700) if it is missing, checks it, and locks it.
    ///
    /// An existing `ROOT/run/` must be a real directory (not a symbolic link) owned by this
    /// process's effective uid, with no access for group or others (`mode & 0o077 == 0`).
    /// The checks are made on the opened directory (`fstat`), and the lock is taken on it.
    ///
    /// # Errors
    ///
    /// [`ControlError::AlreadyRunning`] if another process holds the lock (a node runs on
    /// the root); [`ControlError::UnsafeRunDir`] if `ROOT/run` is a symbolic link, not a
    /// directory, another user's, or open to group or others; [`ControlError::Io`] if the
    /// root is not a directory or `ROOT/run` cannot be made, opened or locked.
    pub fn acquire(root: &Path) -> Result<RootLock, ControlError> {
        if !root.is_dir() {
            return Err(ControlError::Io {
                path: root.to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            });
        }
        let dir = root.join(RUN_DIR);
        let file = open_checked(&dir)?;
        lock_exclusive(&file, root, &dir)?;
        Ok(RootLock { root: root.to_owned(), dir, _fd: OwnedFd::from(file) })
    }

    /// Takes over the lock a node this one replaces holds (a host restart: see
    /// [`crate::release_handler::restart`]): `fd` must be a descriptor of `ROOT/run` itself
    /// (the same device and inode as the directory that [`RootLock::acquire`]'s checks
    /// pass), and `flock` on it must succeed, which it does when the open file description
    /// it shares with the old node holds the lock (or when nobody holds it). From then on
    /// the lock stays held for as long as this process or the old one keeps that
    /// description open.
    ///
    /// # Errors
    ///
    /// As [`RootLock::acquire`], and [`ControlError::UnsafeRunDir`] if `fd` is not
    /// `ROOT/run`.
    pub fn adopt(root: &Path, fd: OwnedFd) -> Result<RootLock, ControlError> {
        let dir = root.join(RUN_DIR);
        let checked = open_checked(&dir)?;
        let meta = checked.metadata().map_err(io_error(&dir))?;
        let handed = fs::File::from(fd);
        let handed_meta = handed.metadata().map_err(io_error(&dir))?;
        if (handed_meta.dev(), handed_meta.ino()) != (meta.dev(), meta.ino()) {
            return Err(unsafe_run_dir(
                &dir,
                "the handed lock descriptor is not this root's run directory".to_owned(),
            ));
        }
        lock_exclusive(&handed, root, &dir)?;
        Ok(RootLock { root: root.to_owned(), dir, _fd: OwnedFd::from(handed) })
    }

    /// A duplicate of the locked descriptor, to hand to a new host process: it shares the
    /// open file description, and so the lock (see [`RootLock::adopt`]).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self._fd.try_clone()
    }

    /// The release root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The locked directory, `ROOT/run`.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// `ROOT/run` (at `dir`), made (mode 0700) if missing, opened as a real directory and
/// checked: owned by this user, no access for group or others.
fn open_checked(dir: &Path) -> Result<fs::File, ControlError> {
    let dir = dir.to_owned();
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ControlError::Io { path: dir, source: e }),
    }
    // O_NOFOLLOW | O_DIRECTORY: the descriptor is the real directory or nothing, and
    // every later check and change goes through it, never through the name again.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&dir)
        .map_err(|e| match e.raw_os_error() {
            // Refused by the flags; the name's own type only words the message.
            Some(libc::ELOOP | libc::ENOTDIR) => {
                let link = fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink());
                let problem = if link { "is a symbolic link" } else { "is not a directory" };
                unsafe_run_dir(&dir, problem.to_owned())
            }
            _ => ControlError::Io { path: dir.clone(), source: e },
        })?;
    let meta = file.metadata().map_err(io_error(&dir))?;
    let own = node_uid();
    if meta.uid() != own {
        return Err(unsafe_run_dir(
            &dir,
            format!("is owned by uid {}, but this node runs as uid {own}", meta.uid()),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unsafe_run_dir(
            &dir,
            format!("has mode {mode:04o}: group or others have access to it (it must be 0700)"),
        ));
    }
    Ok(file)
}

/// Takes the exclusive lock on the opened `ROOT/run`, without waiting.
fn lock_exclusive(file: &fs::File, root: &Path, dir: &Path) -> Result<(), ControlError> {
    // SAFETY: flock(2) on the descriptor `file` owns, open for the whole call; it
    // touches no memory of ours.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            ControlError::AlreadyRunning { root: root.to_owned(), lock: dir.to_owned() }
        } else {
            ControlError::Io { path: dir.to_owned(), source: e }
        });
    }
    Ok(())
}

pub(super) fn unsafe_run_dir(path: &Path, problem: String) -> ControlError {
    ControlError::UnsafeRunDir { path: path.to_owned(), problem }
}

/// Whether `ROOT/run` (at `dir`) exists and may be trusted to hold the socket of a node
/// this user may believe: a real directory, owned by this user or root, that nobody else
/// may write in. False if it does not exist.
pub(super) fn check_run_dir(dir: &Path) -> Result<bool, ControlError> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ControlError::Io { path: dir.to_owned(), source: e }),
    };
    let own = node_uid();
    let mode = meta.mode() & 0o7777;
    let problem = if meta.file_type().is_symlink() {
        "is a symbolic link".to_owned()
    } else if !meta.is_dir() {
        "is not a directory".to_owned()
    } else if meta.uid() != own && meta.uid() != 0 {
        format!("is owned by uid {}, neither this user (uid {own}) nor root", meta.uid())
    } else if mode & 0o022 != 0 {
        format!("has mode {mode:04o}: group or others may write in it")
    } else {
        return Ok(true);
    };
    Err(unsafe_run_dir(dir, problem))
}
