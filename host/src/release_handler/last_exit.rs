//! `ROOT/run/last-exit`: why the node on a root last exited, in a file that outlives it.
//!
//! A node that exits on purpose (after an error past the point of no return with
//! [`ErrorAction::Restart`](super::ErrorAction::Restart), after `reboot-old`, on SIGTERM, or
//! because its boot failed) says why in its log, which its client never sees: `hotcode ctl`
//! only sees the connection close. So the node also writes the reason here, before it exits
//! and before its sockets close, and the client reads it when the node hangs up without an
//! answer. The next `hotcode boot` on the root logs it too.
//!
//! # Format
//!
//! UTF-8 text, at most [`MAX_LEN`] bytes. The first line is three fields separated by one
//! space:
//!
//! ```text
//! <unix time in milliseconds> <pid> <exit code, or "running">
//! <the reason: any number of lines>
//! ```
//!
//! For example:
//!
//! ```text
//! 1763719200123 4242 3
//! install of B failed after the point of no return: ...; exiting with 3 ...
//! ```
//!
//! A node writes a `running` record as soon as it holds the root's lock, so that a node that
//! dies without writing one (killed by SIGKILL, or crashed) leaves a record that says so
//! rather than the reason of an older exit.
//!
//! # Trust
//!
//! The file lives in `ROOT/run`, the node's own `0700` directory (checked by the front's
//! `RootLock` before the node writes anything there). It is written atomically (a temporary
//! file of mode `0600` in the same directory, flushed, then renamed over the old one), so a
//! reader sees a whole record or the previous one. A reader ([`read`]) opens it without
//! following a link, believes it only if it is a regular file owned by this process's
//! effective uid or root and writable by nobody else (as `code/trust.rs` decides for every
//! file of a root), refuses one longer than [`MAX_LEN`], and hands back the reason as text
//! with control characters escaped: something to print, never a path or a command.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::code::trust;

/// The record's place, relative to the release root.
pub const LAST_EXIT: &str = "run/last-exit";

/// The longest record read or written, in bytes.
pub const MAX_LEN: usize = 64 * 1024;

/// `ROOT/run/last-exit`.
pub fn path(root: &Path) -> PathBuf {
    root.join(LAST_EXIT)
}

/// How the node that wrote a record ended, as far as it could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It was running when it wrote the record: if it is gone, it died without saying why.
    Running,
    /// It exited with this code.
    Exited(i32),
}

/// One record of `ROOT/run/last-exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRecord {
    /// When it was written.
    pub at: SystemTime,
    /// The pid of the node that wrote it.
    pub pid: u32,
    /// Whether it exited, and with which code.
    pub ending: Ending,
    /// Why, as text to print (control characters other than newline and tab escaped).
    pub reason: String,
}

impl ExitRecord {
    /// A record of this process exiting with `code` now, for `reason`.
    pub fn exit_now(code: i32, reason: impl Into<String>) -> ExitRecord {
        ExitRecord {
            at: SystemTime::now(),
            pid: std::process::id(),
            ending: Ending::Exited(code),
            reason: reason.into(),
        }
    }

    /// The record a node writes when it starts: it runs, and has not said why it exits.
    pub fn running_now() -> ExitRecord {
        ExitRecord {
            at: SystemTime::now(),
            pid: std::process::id(),
            ending: Ending::Running,
            reason: "the node was running and recorded no exit (a node killed by SIGKILL, or one \
                     that crashed, cannot record one)"
                .to_owned(),
        }
    }

    /// The record as the file holds it; a reason too long for [`MAX_LEN`] is cut, and says so.
    pub fn render(&self) -> String {
        let ms = self.at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
        let ending = match self.ending {
            Ending::Running => "running".to_owned(),
            Ending::Exited(code) => code.to_string(),
        };
        let mut text = format!("{ms} {} {ending}\n", self.pid);
        const CUT: &str = " [cut]";
        let room = MAX_LEN - text.len() - CUT.len() - 1;
        let reason = self.reason.trim_end_matches('\n');
        if reason.len() > room {
            let mut end = room;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            text.push_str(&reason[..end]);
            text.push_str(CUT);
        } else {
            text.push_str(reason);
        }
        text.push('\n');
        text
    }

    /// Reads a record from the text of `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<ExitRecord, LastExitError> {
        let bad = |why: String| LastExitError::Malformed { path: path.to_owned(), why };
        let (first, reason) = text.split_once('\n').unwrap_or((text, ""));
        let fields: Vec<&str> = first.split(' ').collect();
        let [ms, pid, ending] = fields.as_slice() else {
            return Err(bad(format!(
                "the first line {:?} is not `<unix ms> <pid> <exit code | running>`",
                escape(first)
            )));
        };
        let ms: u64 =
            ms.parse().map_err(|_| bad(format!("{:?} is not a time in ms", escape(ms))))?;
        let pid: u32 = pid.parse().map_err(|_| bad(format!("{:?} is not a pid", escape(pid))))?;
        let ending = match *ending {
            "running" => Ending::Running,
            code => Ending::Exited(
                code.parse().map_err(|_| bad(format!("{:?} is not an exit code", escape(code))))?,
            ),
        };
        Ok(ExitRecord {
            at: UNIX_EPOCH + Duration::from_millis(ms),
            pid,
            ending,
            reason: escape(reason.trim_end_matches('\n')),
        })
    }

    /// How long ago it was written, for people: `"3.2 s ago"`, `"4 h ago"`.
    pub fn age(&self) -> String {
        match SystemTime::now().duration_since(self.at) {
            Ok(d) if d < Duration::from_secs(60) => format!("{:.1} s ago", d.as_secs_f64()),
            Ok(d) if d < Duration::from_secs(3600) => format!("{} min ago", d.as_secs() / 60),
            Ok(d) if d < Duration::from_secs(48 * 3600) => format!("{} h ago", d.as_secs() / 3600),
            Ok(d) => format!("{} days ago", d.as_secs() / 86_400),
            // Written "in the future": the clock was set back since.
            Err(_) => "at a time after now".to_owned(),
        }
    }
}

/// `ROOT/run/last-exit` could not be believed or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LastExitError {
    /// Reading or writing it failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// It is not a file this process believes: a link, not a regular file, another user's,
    /// or writable by others.
    #[error("{0}")]
    Untrusted(#[from] trust::Untrusted),
    /// It is longer than [`MAX_LEN`].
    #[error("{}: longer than {MAX_LEN} bytes; not read", path.display())]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// It does not hold a record.
    #[error("{}: {why}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Writes `record` to `ROOT/run/last-exit` atomically, mode 0600. `ROOT/run` must exist:
/// it is the node's own directory, made and checked when the node locked the root.
///
/// # Errors
///
/// [`LastExitError::Io`] naming the file if the temporary file cannot be made, written,
/// flushed or renamed.
pub fn write(root: &Path, record: &ExitRecord) -> Result<(), LastExitError> {
    let path = path(root);
    let io_error = |source: io::Error| LastExitError::Io { path: path.clone(), source };
    let dir = path.parent().unwrap_or(root);
    // Mode 0600 from its creation (tempfile makes it so), set again in case of a strange
    // umask: the reason may quote the node's errors, which are nobody else's business.
    let mut temp = tempfile::Builder::new()
        .prefix(".last-exit.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_error)?;
    temp.as_file().set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_error)?;
    temp.write_all(record.render().as_bytes()).map_err(io_error)?;
    temp.as_file().sync_all().map_err(io_error)?;
    temp.persist(&path).map_err(|e| io_error(e.error))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error)
}

/// [`write()`]s an exit record of this process (`code`, `reason`), logging rather than
/// returning a failure: a node on its way out has nobody else to tell.
pub fn record_exit(root: &Path, code: i32, reason: &str) {
    if let Err(e) = write(root, &ExitRecord::exit_now(code, reason)) {
        log::warn!("cannot record why the node exits: {e}");
    }
}

/// Reads `ROOT/run/last-exit`: `Ok(None)` if there is none.
///
/// # Errors
///
/// [`LastExitError::Untrusted`] if it is a symbolic link, not owned by this process's
/// effective uid or root, or writable by group or others (a FIFO or device is
/// [`LastExitError::Io`]: never read); [`LastExitError::TooLong`] beyond [`MAX_LEN`];
/// [`LastExitError::Malformed`] if its first line is not a record's.
pub fn read(root: &Path) -> Result<Option<ExitRecord>, LastExitError> {
    let path = path(root);
    let io_error = |source: io::Error| LastExitError::Io { path: path.clone(), source };
    // No link is followed, and the checks are made on what was opened.
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(LastExitError::Untrusted(trust::Untrusted {
                path,
                why: "is a symbolic link: not followed".to_owned(),
            }));
        }
        Err(e) => return Err(io_error(e)),
    };
    let meta = file.metadata().map_err(io_error)?;
    if !meta.file_type().is_file() {
        return Err(io_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory is never read)",
        )));
    }
    trust::check_meta(&path, &meta)?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_LEN).unwrap_or(u64::MAX) + 1;
    file.take(limit).read_to_end(&mut bytes).map_err(io_error)?;
    if bytes.len() > MAX_LEN {
        return Err(LastExitError::TooLong { path });
    }
    ExitRecord::parse(&path, &String::from_utf8_lossy(&bytes)).map(Some)
}

/// `text` with every control character but newline and tab escaped (`\u{1b}`), so that
/// printing it cannot move a terminal's cursor or change its colours.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("run")).expect("run dir");
        let record = ExitRecord::exit_now(3, "install of B failed\nafter the point of no return");
        write(dir.path(), &record).expect("write");
        let back = read(dir.path()).expect("read").expect("a record");
        // Milliseconds survive, not nanoseconds.
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
        assert_eq!(ms(back.at), ms(record.at));
        assert_eq!((back.pid, back.ending), (std::process::id(), Ending::Exited(3)));
        assert_eq!(back.reason, record.reason);
        let meta = fs::metadata(path(dir.path())).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path().join("run"))
            .expect("run dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["last-exit"], "no temporary file is left");
        assert_eq!(read(&dir.path().join("nowhere")).expect("no record"), None);
    }

    #[test]
    fn escapes_are_escaped_and_the_first_line_is_checked() {
        let path = Path::new("/r/run/last-exit");
        let record =
            ExitRecord::parse(path, "1 2 running\n\x1b[31mred\x07\ttab\nline\n").expect("parse");
        assert_eq!(record.ending, Ending::Running);
        assert_eq!(record.reason, "\\u{1b}[31mred\\u{7}\ttab\nline");
        for bad in ["", "1 2", "x 2 3\n", "1 -2 3\n", "1 2 three\n", "1  2 3\n", "1 2 3 4\n"] {
            let e = ExitRecord::parse(path, bad).expect_err(bad);
            assert!(e.to_string().starts_with("/r/run/last-exit: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_long_reason_is_cut_to_fit_and_a_long_file_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("run")).expect("run dir");
        write(dir.path(), &ExitRecord::exit_now(1, "é".repeat(MAX_LEN))).expect("write");
        let text = fs::read_to_string(path(dir.path())).expect("read");
        assert!(text.len() <= MAX_LEN && text.ends_with(" [cut]\n"), "{}", text.len());
        assert!(read(dir.path()).expect("read").is_some());
        fs::write(path(dir.path()), "1 2 3\n".to_owned() + &"x".repeat(MAX_LEN)).expect("write");
        assert!(matches!(read(dir.path()), Err(LastExitError::TooLong { .. })));
    }

    #[test]
    fn a_link_or_a_file_others_may_write_is_not_believed() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("run")).expect("run dir");
        let target = dir.path().join("elsewhere");
        fs::write(&target, "1 2 3\nforged\n").expect("write");
        std::os::unix::fs::symlink(&target, path(dir.path())).expect("symlink");
        let e = read(dir.path()).expect_err("a link");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        fs::remove_file(path(dir.path())).expect("unlink");
        fs::write(path(dir.path()), "1 2 3\nforged\n").expect("write");
        fs::set_permissions(path(dir.path()), fs::Permissions::from_mode(0o622)).expect("chmod");
        let e = read(dir.path()).expect_err("writable by others");
        assert!(e.to_string().contains("writable by"), "{e}");
    }
}
