//! Trust on disk, the way `sshd`'s StrictModes decides it.
//!
//! Whoever can write a library file, an integrity record or a directory above them decides
//! what code the node runs. So a path is trusted only if every file and directory on the
//! way to it is owned by the node's effective uid or by root, and none is writable by group
//! or others. Symbolic links are not followed below a release root: a link is refused
//! rather than trusted for what it points at today.
//!
//! Files are opened with [`open_regular`]: only regular files (never a FIFO, device or
//! directory, which could block a reader for ever or hand it endless bytes), opened without
//! blocking, and checked on the open descriptor, so the check and the read see one file.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a path is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {why}", path.display())]
pub struct Untrusted {
    /// The file or directory that failed the rule.
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

/// The effective uid of this process: the owner whose files it trusts, besides root's.
pub fn node_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Checks one file or directory's owner and mode (its metadata, not following links).
pub fn check_meta(path: &Path, meta: &Metadata) -> Result<(), Untrusted> {
    let fail = |why: String| Err(Untrusted { path: path.to_owned(), why });
    let uid = meta.uid();
    if uid != 0 && uid != node_uid() {
        return fail(format!(
            "is owned by uid {uid}, neither this node's uid ({}) nor root: refusing to trust it",
            node_uid()
        ));
    }
    let mode = meta.mode();
    if meta.file_type().is_symlink() {
        return fail("is a symbolic link: links are not followed below a release root".into());
    }
    if mode & 0o022 != 0 {
        let by = if mode & 0o002 != 0 { "others" } else { "group" };
        return fail(format!(
            "is writable by {by} (mode {:o}): refusing to trust what others can change",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Checks `path` and every directory between `root` and it, `root` included: each must be
/// owned by this node's uid or root, writable by nobody else, and not a symbolic link.
/// `path` must lie under `root` (lexically: it is built from checked names).
pub fn check_under(root: &Path, path: &Path) -> Result<(), Untrusted> {
    let relative = path.strip_prefix(root).map_err(|_| Untrusted {
        path: path.to_owned(),
        why: format!("is not under the release root {}", root.display()),
    })?;
    // The root itself may be reached through links (a deployment's `current` symlink);
    // what is below it may not.
    let meta = std::fs::metadata(root).map_err(|e| io_untrusted(root, e))?;
    check_meta(root, &meta)?;
    let mut at = root.to_path_buf();
    for component in relative.components() {
        let Component::Normal(part) = component else {
            return Err(Untrusted {
                path: path.to_owned(),
                why: "is not a plain path below the release root".into(),
            });
        };
        at.push(part);
        let meta = std::fs::symlink_metadata(&at).map_err(|e| io_untrusted(&at, e))?;
        check_meta(&at, &meta)?;
    }
    Ok(())
}

/// Checks a file and the directory holding it (for libraries loaded outside a release
/// root, such as a watched build directory).
pub fn check_file_and_dir(path: &Path) -> Result<(), Untrusted> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    for target in [path, dir] {
        let meta = std::fs::metadata(target).map_err(|e| io_untrusted(target, e))?;
        check_meta(target, &meta)?;
    }
    Ok(())
}

fn io_untrusted(path: &Path, e: io::Error) -> Untrusted {
    Untrusted { path: path.to_owned(), why: format!("cannot be examined: {e}") }
}

/// Opens `path` for reading if it is a regular file, without blocking on a FIFO or a
/// device: the type is checked on the open descriptor, so what is read is what was checked.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory is never read)",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writable_by_others_or_group_is_refused_and_links_below_the_root_too() {
        let root = tempfile::tempdir().expect("temp dir");
        let root = root.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = root.join("lib");
        std::fs::create_dir(&dir).expect("mkdir");
        let file = dir.join("m.so");
        std::fs::write(&file, b"x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(check_under(root, &file), Ok(()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        let error = check_under(root, &file).expect_err("group-writable dir");
        assert_eq!(error.path, dir);
        assert!(error.why.contains("writable by group"), "{error}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let link = root.join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let error = check_under(root, &link.join("m.so")).expect_err("link");
        assert!(error.why.contains("symbolic link"), "{error}");
        assert!(check_under(root, Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn only_regular_files_are_opened() {
        assert!(open_regular(Path::new("/dev/zero")).is_err());
        assert!(open_regular(Path::new("/")).is_err());
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK this open would wait for a writer for ever.
        let error = open_regular(&fifo).expect_err("fifo");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
