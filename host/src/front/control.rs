//! The control channel of a running node: how `hotcode ctl` reaches `hotcode boot`.
//!
//! A node runs as a long-lived service, and release handling (unpack, install, make
//! permanent, ...) is done *to* it from outside, as OTP does through a remote shell. hotcode
//! has no distribution protocol, so the node listens on a Unix socket inside its release
//! root, `ROOT/run/hotcode.sock` (SPEC §7). A Unix socket, rather than TCP, because the file
//! system then decides who may connect, the peer's uid can be asked of the kernel, and two
//! nodes cannot run on one root without noticing.
//!
//! # Access
//!
//! The socket file is mode `0600` from the moment it has its name: it is bound under a
//! private temporary name, given its mode, then hard-linked to `hotcode.sock` (which fails if
//! the name exists, so two nodes cannot take it in a race) and the temporary name removed.
//! Every accepted connection is also checked with `SO_PEERCRED`: a peer whose uid is not the
//! node's effective uid is answered with an error and closed, so a socket file that someone
//! loosened the mode of still admits only its owner.
//!
//! A socket file left by a node that died (`SIGKILL`, power loss) is removed at the next
//! bind, but only when connecting to it fails: a socket that answers belongs to a live node,
//! and the second node refuses to start.
//!
//! # Protocol
//!
//! One request per connection, all text in UTF-8:
//!
//! 1. The client sends one request line: the command and its arguments separated by TAB
//!    (`install\tB`, `unpack\t/path/with spaces`), ending with a newline. A TAB, rather than
//!    a space, so that paths with spaces need no quoting; fields may hold neither TAB nor
//!    newline.
//! 2. The node answers with any number of text lines, then one final line: `OK`, or
//!    `ERR <code>` where the code is the exit code the client should exit with (`1` for a
//!    refused operation or bad input, `2` for a malformed request). On `ERR`, the lines
//!    before it are the error message. Then the node closes the connection.
//!
//! A client that reads end-of-file before the final line knows that the node went away in
//! the middle of the operation (it was killed, or exited to restart after a failure past the
//! point of no return).
//!
//! The commands are those of `hotcode ctl`: `which-releases`, `status`, `unpack PATH`
//! (absolute), `check-install VSN`, `install VSN`, `make-permanent VSN`, `reboot-old VSN`
//! and `remove VSN`.
//!
//! # Serving
//!
//! [`Control::serve`] handles one connection at a time: release operations are serialised
//! by the release handler anyway, and a queue of clients waiting in the listen backlog is the
//! simplest faithful picture of that. Between connections it waits in `poll(2)` with a short
//! timeout, so that it notices the stop flag (set by a signal handler) promptly without
//! spinning. After `reboot-old` has been answered, `serve` returns [`ServeExit::Restart`]:
//! the node must restart to run the release that is permanent now.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::release::ReleaseStatus;
use crate::release_handler::{Progress, ReleaseError, ReleaseHandler};

/// Where the socket is, relative to the release root.
pub const SOCKET: &str = "run/hotcode.sock";

/// How long `serve` sleeps in `poll(2)` before it looks at the stop flag again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long the node waits for a client to send its request, or to take its answer: a
/// client that stalls must not stall the node's control channel for ever.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest request line taken (a path is the longest field).
const MAX_REQUEST: u64 = 64 * 1024;

/// Exit code of a refused operation or bad input.
const EXIT_REFUSED: i32 = 1;
/// Exit code of a malformed request (usage).
const EXIT_USAGE: i32 = 2;

/// The usage of each command, for the answer to a malformed request.
const USAGE: &[&str] = &[
    "which-releases",
    "status",
    "unpack PATH",
    "check-install VSN",
    "install VSN",
    "make-permanent VSN",
    "reboot-old VSN",
    "remove VSN",
];

/// The socket of the node running on `root`: `ROOT/run/hotcode.sock`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(SOCKET)
}

/// The control channel failed, on either side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A file or socket operation failed. It displays as the path alone: the cause is the
    /// [`source`](std::error::Error::source), which `{:#}` of `anyhow` prints after it.
    #[error("{}", path.display())]
    Io {
        /// The socket or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// No node listens on the root (no socket, or a stale one).
    #[error(
        "no node is running on {root} ({socket}): start one with `hotcode boot {root}`",
        root = root.display(),
        socket = socket.display()
    )]
    NotRunning {
        /// The release root.
        root: PathBuf,
        /// The socket that nobody answers on.
        socket: PathBuf,
    },
    /// Another node already listens on the root.
    #[error(
        "a node is already running on {} ({} answers); stop it first",
        root.display(),
        socket.display()
    )]
    AlreadyRunning {
        /// The release root.
        root: PathBuf,
        /// The socket that answered.
        socket: PathBuf,
    },
    /// Something that is not a socket has the socket's name.
    #[error("{}: exists and is not a socket; remove it if no node uses it", path.display())]
    NotASocket {
        /// The file.
        path: PathBuf,
    },
    /// A request field holds a TAB or a newline, which the protocol cannot carry.
    #[error("request field {field:?} contains a TAB or newline, which cannot be sent")]
    BadField {
        /// The field.
        field: String,
    },
    /// The node broke the protocol: it closed the connection before its final line (it
    /// died or exited during the operation), or sent a final line that is not one.
    #[error("{}: {detail}", socket.display())]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What happened.
        detail: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ControlError + '_ {
    move |source| ControlError::Io { path: path.to_owned(), source }
}

/// Why [`Control::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeExit {
    /// The stop flag was set: shut down and exit.
    Stopped,
    /// `reboot-old` made an old release permanent: shut down and exit so that the service
    /// manager restarts the node on it (with [`crate::release_handler::EXIT_RESTART`]).
    Restart,
}

/// The listening end of a node's control channel. Removes its socket file when dropped.
#[derive(Debug)]
pub struct Control {
    root: PathBuf,
    path: PathBuf,
    listener: UnixListener,
    /// Device and inode of the socket file, so that drop removes only our own file.
    identity: (u64, u64),
}

impl Control {
    /// Creates and listens on `ROOT/run/hotcode.sock` (mode 0600), creating `ROOT/run/`
    /// (mode 0700) if it is missing.
    ///
    /// # Errors
    ///
    /// [`ControlError::AlreadyRunning`] if a node answers on the socket already;
    /// [`ControlError::NotASocket`] if a file of another kind has its name;
    /// [`ControlError::Io`] if the directory or socket cannot be made (a root path too long
    /// for a socket address is one such error).
    pub fn bind(root: &Path) -> Result<Control, ControlError> {
        let path = socket_path(root);
        let dir = path.parent().unwrap_or(root).to_owned();
        if !root.is_dir() {
            return Err(ControlError::Io {
                path: root.to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            });
        }
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ControlError::Io { path: dir, source: e }),
        }
        // The private name includes our pid, so no other live process uses it; one left by a
        // dead process that had our pid is garbage.
        let temp = dir.join(format!(".hotcode.sock.{}", std::process::id()));
        remove_if_present(&temp)?;
        let listener = UnixListener::bind(&temp).map_err(io_error(&temp))?;
        let linked = fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))
            .map_err(io_error(&temp))
            .and_then(|()| link_exclusively(root, &temp, &path));
        let removed = fs::remove_file(&temp).map_err(io_error(&temp));
        linked?;
        removed?;
        let meta = fs::symlink_metadata(&path).map_err(io_error(&path))?;
        listener.set_nonblocking(true).map_err(io_error(&path))?;
        log::info!("control socket {}", path.display());
        Ok(Control { root: root.to_owned(), path, listener, identity: (meta.dev(), meta.ino()) })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests for `handler`, one connection at a time, until `stop` is set
    /// (checked at least every 100 ms while idle) or a `reboot-old` succeeded.
    ///
    /// # Errors
    ///
    /// [`ControlError::Io`] if waiting on or accepting from the socket fails in a way that
    /// is not about one client. A client that misbehaves or goes away is logged and
    /// dropped; it does not end `serve`.
    pub fn serve(
        &self,
        handler: &ReleaseHandler,
        stop: &AtomicBool,
    ) -> Result<ServeExit, ControlError> {
        let own_uid = effective_uid();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(ServeExit::Stopped);
            }
            if !wait_readable(&self.listener, POLL_INTERVAL).map_err(io_error(&self.path))? {
                continue;
            }
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(ControlError::Io { path: self.path.clone(), source: e }),
            };
            match self.connection(handler, stream, own_uid) {
                Ok(true) => return Ok(ServeExit::Restart),
                Ok(false) => {}
                Err(e) => log::warn!("control connection: {e}"),
            }
        }
    }

    /// Handles one connection; true if the node must restart now.
    fn connection(
        &self,
        handler: &ReleaseHandler,
        stream: UnixStream,
        own_uid: u32,
    ) -> io::Result<bool> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let peer = peer_uid(&stream)?;
        // Read the request even from a peer that is refused: closing a Unix socket with
        // unread data resets the connection, and the peer would never see why.
        let request = read_request(&stream)?;
        if peer != own_uid {
            log::warn!("control: refused a connection from uid {peer}");
            let reply = Reply::err(
                EXIT_REFUSED,
                format!("refused: uid {peer} may not control this node (it runs as uid {own_uid})"),
            );
            return reply.send(&stream).map(|()| false);
        }
        let reply = match request {
            Ok(fields) => {
                log::info!("control: {}", fields.join(" "));
                self.dispatch(handler, &fields, &stream)
            }
            Err(message) => Reply::usage(message),
        };
        if let Err(e) = reply.send(&stream) {
            // The operation is done whether or not its client heard of it; after a
            // reboot-old the node must restart all the same.
            log::warn!("control: the client went away before its answer: {e}");
        }
        Ok(reply.restart)
    }

    fn dispatch(&self, handler: &ReleaseHandler, fields: &[String], stream: &UnixStream) -> Reply {
        let request = match Request::parse(fields) {
            Ok(request) => request,
            Err(message) => return Reply::usage(message),
        };
        let result = match request {
            Request::WhichReleases => Ok(which_releases(handler)),
            Request::Status => Ok(status(handler)),
            Request::Unpack(path) => {
                if !Path::new(path).is_absolute() {
                    return Reply::err(
                        EXIT_REFUSED,
                        format!("unpack needs an absolute path, not {path:?}"),
                    );
                }
                handler
                    .unpack(Path::new(path))
                    .map(|vsn| vec![format!("ok: unpacked release {vsn}")])
            }
            Request::CheckInstall(vsn) => handler.check_install(vsn).map(|plan| {
                vec![format!(
                    "ok: {} can be installed ({} from {}, {} instructions from {})",
                    plan.vsn,
                    direction_word(plan.direction),
                    plan.from,
                    plan.entry.instructions.len(),
                    plan.script.display()
                )]
            }),
            Request::Install(vsn) => {
                let mut progress = |p: Progress<'_>| {
                    // Progress lines go out as the install runs; a client that left misses
                    // them, which must not stop the install.
                    let line = format!(
                        "{PROGRESS_PREFIX}install {vsn}: [{}/{}] {}\n",
                        p.step, p.total, p.instruction
                    );
                    let _ = (&*stream).write_all(line.replace('\r', " ").as_bytes());
                };
                handler.install_with_progress(vsn, &mut progress)
            }
            .map(|installed| {
                vec![format!(
                    "ok: installed {vsn} ({} from {}): {}",
                    direction_word(installed.direction),
                    installed.from,
                    installed.descr
                )]
            }),
            Request::MakePermanent(vsn) => {
                handler.make_permanent(vsn).map(|()| vec![format!("ok: {vsn} is permanent")])
            }
            Request::RebootOld(vsn) => handler.reboot_old(vsn).map(|()| {
                vec![format!("ok: {vsn} is permanent again; the node restarts to run it")]
            }),
            Request::Remove(vsn) => {
                handler.remove(vsn).map(|()| vec![format!("ok: removed release {vsn}")])
            }
        };
        match result {
            Ok(lines) => {
                Reply { lines, code: 0, restart: matches!(request, Request::RebootOld(_)) }
            }
            Err(e) => Reply::err(EXIT_REFUSED, error_chain(&e)),
        }
    }
}

/// A request, checked for its command and number of arguments.
#[derive(Debug, Clone, Copy)]
enum Request<'a> {
    WhichReleases,
    Status,
    Unpack(&'a str),
    CheckInstall(&'a str),
    Install(&'a str),
    MakePermanent(&'a str),
    RebootOld(&'a str),
    Remove(&'a str),
}

impl<'a> Request<'a> {
    fn parse(fields: &'a [String]) -> Result<Request<'a>, String> {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        Ok(match fields.as_slice() {
            ["which-releases"] => Request::WhichReleases,
            ["status"] => Request::Status,
            ["unpack", path] => Request::Unpack(path),
            ["check-install", vsn] => Request::CheckInstall(vsn),
            ["install", vsn] => Request::Install(vsn),
            ["make-permanent", vsn] => Request::MakePermanent(vsn),
            ["reboot-old", vsn] => Request::RebootOld(vsn),
            ["remove", vsn] => Request::Remove(vsn),
            [""] | [] => return Err("empty request".to_owned()),
            _ => return Err(format!("bad request {:?}", fields.join(" "))),
        })
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // Remove the name only if it is still our socket: after a stale-socket cleanup by
        // another node it may be someone else's.
        let ours =
            fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours && let Err(e) = fs::remove_file(&self.path) {
            log::warn!("cannot remove {}: {e}", self.path.display());
        }
        log::debug!("control socket of {} closed", self.root.display());
    }
}

/// Sends one request to the node running on `root` and returns the lines it answered and
/// the exit code it asks for (0 for `OK`).
///
/// Waits as long as the operation takes: an install runs its whole script before the node
/// answers.
///
/// # Errors
///
/// [`ControlError::NotRunning`] if no node listens on `root`; [`ControlError::BadField`] if
/// a field cannot be sent; [`ControlError::Protocol`] if the node closed the connection
/// before its final line; [`ControlError::Io`] for other socket errors.
pub fn request(root: &Path, fields: &[String]) -> Result<(Vec<String>, i32), ControlError> {
    request_with_progress(root, fields, &mut |_| {})
}

/// Lines a node sends while an operation runs start with this; they are not part of the
/// answer.
pub const PROGRESS_PREFIX: &str = "# ";

/// [`request`], handing each progress line to `progress` as it arrives.
pub fn request_with_progress(
    root: &Path,
    fields: &[String],
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<String>, i32), ControlError> {
    if let Some(field) = fields.iter().find(|f| f.contains(['\t', '\n', '\r'])) {
        return Err(ControlError::BadField { field: field.clone() });
    }
    let socket = socket_path(root);
    let mut stream = UnixStream::connect(&socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning { root: root.to_owned(), socket: socket.clone() }
        }
        _ => ControlError::Io { path: socket.clone(), source: e },
    })?;
    let mut line = fields.join("\t");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_error(&socket))?;
    stream.shutdown(std::net::Shutdown::Write).map_err(io_error(&socket))?;
    let mut lines = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(io_error(&socket))?;
        match line.strip_prefix(PROGRESS_PREFIX) {
            Some(step) => progress(step),
            None => lines.push(line),
        }
    }
    let protocol = |detail: String| ControlError::Protocol { socket: socket.clone(), detail };
    let Some(last) = lines.pop() else {
        return Err(protocol(
            "the node closed the connection without answering (did it exit or die during the \
             operation?)"
                .to_owned(),
        ));
    };
    let code = if last == "OK" {
        0
    } else if let Some(code) = last.strip_prefix("ERR ") {
        code.parse::<i32>()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| protocol(format!("bad final line {last:?}")))?
    } else {
        lines.push(last);
        return Err(protocol(format!(
            "the node closed the connection before its final line (did it exit or die during \
             the operation?); it had said: {}",
            lines.join(" / ")
        )));
    };
    Ok((lines, code))
}

/// An answer: lines, then `OK` or `ERR code`.
struct Reply {
    lines: Vec<String>,
    code: i32,
    restart: bool,
}

impl Reply {
    fn err(code: i32, message: String) -> Reply {
        Reply { lines: message.lines().map(str::to_owned).collect(), code, restart: false }
    }

    fn usage(message: String) -> Reply {
        let mut reply = Reply::err(EXIT_USAGE, message);
        reply.lines.push(format!("commands: {}", USAGE.join(" | ")));
        reply
    }

    fn send(&self, mut stream: &UnixStream) -> io::Result<()> {
        let mut text = String::new();
        for line in &self.lines {
            // A line of the answer is one line on the wire, whatever a message holds.
            text.push_str(&line.replace(['\n', '\r'], " "));
            text.push('\n');
        }
        if self.code == 0 {
            text.push_str("OK\n");
        } else {
            text.push_str(&format!("ERR {}\n", self.code));
        }
        stream.write_all(text.as_bytes())?;
        stream.flush()
    }
}

/// Reads the request line: `Ok(Err(message))` for a malformed one.
fn read_request(stream: &UnixStream) -> io::Result<Result<Vec<String>, String>> {
    let mut raw = Vec::new();
    BufReader::new(stream.take(MAX_REQUEST + 1)).read_until(b'\n', &mut raw)?;
    if raw.last() != Some(&b'\n') {
        return Ok(Err(if raw.len() as u64 > MAX_REQUEST {
            format!("request longer than {MAX_REQUEST} bytes")
        } else {
            "request line not ended by a newline".to_owned()
        }));
    }
    raw.pop();
    let Ok(line) = String::from_utf8(raw) else {
        return Ok(Err("request is not UTF-8".to_owned()));
    };
    Ok(Ok(line.split('\t').map(str::to_owned).collect()))
}

fn which_releases(handler: &ReleaseHandler) -> Vec<String> {
    handler
        .which_releases()
        .iter()
        .map(|r| {
            let apps: Vec<String> = r.apps.iter().map(|(a, v)| format!("{a}-{v}")).collect();
            format!("{} {} {} {}", r.name, r.vsn, r.status, apps.join(" "))
        })
        .collect()
}

fn status(handler: &ReleaseHandler) -> Vec<String> {
    let node = handler.node();
    let releases = handler.which_releases();
    let current = handler.current();
    let name = releases.iter().find(|r| r.vsn == current).map_or("?", |r| r.name.as_str());
    let permanent = releases.iter().find(|r| r.status == ReleaseStatus::Permanent);
    let mut lines = vec![match permanent {
        Some(p) if p.vsn == current => format!("release: {name} {current} (permanent)"),
        Some(p) => format!("release: {name} {current} (current; permanent is {})", p.vsn),
        None => format!("release: {name} {current} (no permanent release)"),
    }];
    let processes = node.processes();
    let apps = node.which_applications();
    lines.push(format!("applications: {}", apps.len()));
    for app in &apps {
        let top = match app.top {
            Some(pid) => {
                let info = processes.iter().find(|p| p.pid == pid);
                let name = info.map_or("?", |p| p.name.as_deref().unwrap_or(&p.module));
                format!("{name} {pid}")
            }
            None => "- -".to_owned(),
        };
        lines.push(format!("  {} {} {top}", app.name, app.vsn));
    }
    let code = node.code().status();
    lines.push(format!("modules: {}", code.modules.len()));
    let width = code.modules.iter().map(|m| m.name.len()).max().unwrap_or(0);
    let vsn = |v: &Option<crate::code::code_server::VersionInfo>| {
        v.as_ref().map_or("-".to_owned(), |v| v.vsn.clone())
    };
    for m in &code.modules {
        let mut line =
            format!("  {:width$} current {} old {}", m.name, vsn(&m.current), vsn(&m.old));
        if m.staged.is_some() {
            line.push_str(&format!(" staged {}", vsn(&m.staged)));
        }
        if let Some(method) = m.pending_post_purge {
            line.push_str(&format!(" (post-purge {method} pending)"));
        }
        lines.push(line);
    }
    lines.push(format!("processes: {}", processes.len()));
    lines.push(format!("leaked libraries: {}", code.leaked.len()));
    for leak in &code.leaked {
        lines.push(format!(
            "  {} {} {}: {}",
            leak.module,
            leak.vsn,
            leak.copy.display(),
            leak.reason
        ));
    }
    if !code.detached.is_empty() {
        lines.push(format!("detached versions: {}", code.detached.len()));
        for v in &code.detached {
            lines.push(format!("  {} {} (still held)", v.source.display(), v.vsn));
        }
    }
    let abandoned = node.abandoned();
    lines.push(format!("abandoned processes: {}", abandoned.len()));
    for a in &abandoned {
        lines.push(format!("  {} {}", a.pid, a.module));
    }
    lines
}

fn direction_word(direction: crate::release::Direction) -> &'static str {
    match direction {
        crate::release::Direction::Up => "upgrade",
        crate::release::Direction::Down => "downgrade",
    }
}

/// The error and its sources, as `{:#}` of `anyhow` would print them, skipping a source
/// whose text the message already contains.
fn error_chain(error: &ReleaseError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Gives `temp` the name `path`, removing a stale socket at `path` first.
fn link_exclusively(root: &Path, temp: &Path, path: &Path) -> Result<(), ControlError> {
    let mut removed_stale = false;
    loop {
        match fs::hard_link(temp, path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !removed_stale => {
                let meta = fs::symlink_metadata(path).map_err(io_error(path))?;
                if !meta.file_type().is_socket() {
                    return Err(ControlError::NotASocket { path: path.to_owned() });
                }
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError::AlreadyRunning {
                        root: root.to_owned(),
                        socket: path.to_owned(),
                    });
                }
                log::info!("removing stale socket {} (nobody answers on it)", path.display());
                remove_if_present(path)?;
                removed_stale = true;
            }
            Err(e) => return Err(ControlError::Io { path: path.to_owned(), source: e }),
        }
    }
}

fn remove_if_present(path: &Path) -> Result<(), ControlError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ControlError::Io { path: path.to_owned(), source: e }),
    }
}

/// An accept error that is about one connection, not the listener.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    )
}

/// Waits up to `timeout` for a connection to accept; false on timeout or a signal.
fn wait_readable(listener: &UnixListener, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pollfd` is one initialised `pollfd` that lives across the call, matching the
    // count of 1; its fd is the listener's, open for as long as `listener` is borrowed.
    let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        // A signal (SIGTERM for shutdown) interrupts the wait: look at the flag again.
        return if error.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(error) };
    }
    Ok(ready > 0)
}

/// The uid of the process at the other end of `stream`, from the kernel (`SO_PEERCRED`):
/// the credentials it had when it connected, which it cannot forge.
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
        .map_err(|_| io::Error::other("ucred size"))?;
    // SAFETY: the fd is the stream's open socket; `cred` is a writable `ucred` and `len`
    // holds its exact size, so the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
