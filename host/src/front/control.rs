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
//! Who may talk to a node, and whom a client believes, rests on three checks:
//!
//! - **`ROOT/run/` is private.** [`RootLock::acquire`] creates it with mode `0700`; one that
//!   exists already must be a real directory (not a symbolic link, checked on the opened
//!   descriptor), owned by the node's effective uid, with no access for group or others,
//!   or the node refuses to start ([`ControlError::UnsafeRunDir`]). Nobody else can then
//!   move the socket away and bind their own in its place.
//! - **The socket file is `0600` from its creation.** The mode is set on the socket's
//!   descriptor before `bind(2)` (Linux creates the file with the mode of the socket, less
//!   the umask), so there is no window in which it has another mode and no `chmod` by name.
//! - **Both ends ask the kernel who the other is (`SO_PEERCRED`).** The node reads the
//!   client's uid *before any byte of the request*: a peer whose uid is not the node's
//!   effective uid gets a one-line refusal and is closed at once, so a socket file whose
//!   mode someone loosened still admits only its owner. The client ([`request`]) refuses to
//!   believe a node whose uid is neither its own effective uid nor root
//!   ([`ControlError::ForeignPeer`]), and checks `ROOT/run/` before it connects: a real
//!   directory, owned by itself or root, that nobody else may write in. (The client does not
//!   insist on `0700`: the owner may open the directory for reading to let the node refuse
//!   other users itself, and what makes an answer believable is the node's uid.)
//!
//! # One node per root
//!
//! A node holds an exclusive `flock(2)` on the `ROOT/run/` directory for its whole life
//! ([`RootLock`]), taken before anything else reads or writes the root: before the release
//! handler reads RELEASES, and before the socket is touched. A second node on the same root
//! fails at once ([`ControlError::AlreadyRunning`]). The kernel drops the lock when the
//! holder dies, however it dies, so a node killed with `SIGKILL` leaves nothing to clean up
//! but its socket file, which only the lock holder ([`Control::bind`] takes the lock as
//! proof) removes. An embedder that runs a [`ReleaseHandler`] on a root must take the
//! [`RootLock`] first too, and keep it for as long as the handler lives.
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
//! The whole request line must arrive within [`REQUEST_DEADLINE`] of the connection being
//! accepted (an overall deadline, not one per read): a client that trickles one byte at a
//! time cannot hold one of the node's [`MAX_CONNECTIONS`] connections for longer than that.
//!
//! A client that reads end-of-file before the final line knows that the node went away in
//! the middle of the operation: it was killed, or it exited on purpose (to restart after a
//! failure past the point of no return, or on SIGTERM). A node that exits on purpose first
//! writes why to `ROOT/run/last-exit` ([`last_exit`]); [`request`] then reads that record,
//! with the same trust rules as the rest of `ROOT/run`, and returns the reason
//! ([`ControlError::NodeExited`]) if the record is from the node it talked to (its pid, as
//! the kernel gave it) and was written after the request began.
//!
//! The commands are those of `hotcode ctl`: `which-releases`, `status`, `unpack PATH`
//! (absolute: a release package or a directory), `check-install VSN`, `install VSN`, `make-permanent VSN`, `reboot-old VSN`
//! and `remove VSN`.
//!
//! # Serving
//!
//! [`Control::serve`] accepts connections on one thread and serves each on a thread of its
//! own, at most [`MAX_CONNECTIONS`] at once: one more is answered `ERR 1` with a reason
//! ("busy") without a byte of it being read, and closed. The peer's uid is checked on the
//! accepting thread, before anything else.
//!
//! Requests come in two kinds:
//!
//! - **read-only** (`which-releases`, `status`) run at once, beside anything else: they read
//!   the release handler's published view of the releases and the node's own tables, and
//!   never wait for a release operation. So `ctl status` answers while an install runs, and
//!   says which operation runs and which wait.
//! - **release operations** (`unpack`, `check-install`, `install`, `make-permanent`,
//!   `reboot-old`, `remove`) run one at a time, in the order they arrived: each waits its
//!   turn in a queue, then holds the release handler's lock for its whole run as before.
//!   Once the node is stopping or restarting, an operation still waiting is refused rather
//!   than started.
//!
//! The accepting thread waits in `poll(2)` with a short timeout, so that it notices the stop
//! flag (set by a signal handler) promptly without spinning; a connection thread waiting for
//! a request line looks at it as often. When `serve` returns, every connection thread has
//! finished (an operation that runs is not cut short). After `reboot-old` has been
//! answered, `serve` returns [`ServeExit::Restart`]: the node must restart to run the
//! release that is permanent now.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{self, Scope};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::code::trust::node_uid;
use crate::release::ReleaseStatus;
use crate::release_handler::last_exit::{self, Ending};
use crate::release_handler::{Progress, ReleaseError, ReleaseHandler};

/// Where the socket is, relative to the release root.
pub const SOCKET: &str = "run/hotcode.sock";

/// The directory that holds the socket and carries the node's lock, relative to the root.
pub const RUN_DIR: &str = "run";

/// How long `serve` sleeps in `poll(2)`, and a connection in a read, before it looks at the
/// stop flag again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The most connections served at once. One more is answered "busy" and closed, unread.
pub const MAX_CONNECTIONS: usize = 8;

/// How long, in all, the node waits for a client's whole request line after accepting its
/// connection (not per read). [`Control::with_request_deadline`] changes it.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How long one write of an answer may block on a client that does not read it: a client
/// that stalls must not stall the node's control channel for ever.
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
    /// Another node runs on the root: it holds the root's lock.
    #[error(
        "a node is already running on {root} (another process holds the lock on {lock}); \
         stop it first",
        root = root.display(),
        lock = lock.display()
    )]
    AlreadyRunning {
        /// The release root.
        root: PathBuf,
        /// The locked directory, `ROOT/run`.
        lock: PathBuf,
    },
    /// `ROOT/run/` cannot be trusted to hold the socket: someone other than its owner could
    /// replace the socket in it, or it is not this user's directory.
    #[error("{}: {problem}; refusing it as the control socket's directory", path.display())]
    UnsafeRunDir {
        /// The directory, `ROOT/run`.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The process listening on the socket runs as another user: not the node, or not one
    /// to believe.
    #[error(
        "{}: the process listening on it runs as uid {uid}, neither this user (uid {own}) nor \
         root; not believing its answer",
        socket.display()
    )]
    ForeignPeer {
        /// The socket.
        socket: PathBuf,
        /// The uid of the process listening on it (`SO_PEERCRED`).
        uid: u32,
        /// This process's effective uid.
        own: u32,
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
    /// died or exited during the operation without recording why), or sent a final line
    /// that is not one.
    #[error("{}: {detail}", socket.display())]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What happened.
        detail: String,
    },
    /// The node exited before its final line, and recorded why in `ROOT/run/last-exit`
    /// after the request began.
    #[error(
        "the node (pid {pid}) exited with code {code} before it answered; it recorded why in \
         {}:\n{reason}",
        record.display()
    )]
    NodeExited {
        /// The record, `ROOT/run/last-exit`.
        record: PathBuf,
        /// The node's pid.
        pid: u32,
        /// The code it exited with.
        code: i32,
        /// Why, as it wrote it (text, control characters escaped).
        reason: String,
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

/// The one node allowed on a release root: an exclusive `flock(2)` on `ROOT/run/`, held
/// until dropped (or until the process dies).
///
/// Take it before anything reads or writes the root (before [`ReleaseHandler::boot`] reads
/// RELEASES) and keep it for as long as the node runs: `hotcode boot` does, and so must an
/// embedder that runs a [`ReleaseHandler`] on a root, or two nodes could write one RELEASES.
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
        // SAFETY: flock(2) on the descriptor `file` owns, open for the whole call; it
        // touches no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                ControlError::AlreadyRunning { root: root.to_owned(), lock: dir }
            } else {
                ControlError::Io { path: dir, source: e }
            });
        }
        Ok(RootLock { root: root.to_owned(), dir, _fd: OwnedFd::from(file) })
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

fn unsafe_run_dir(path: &Path, problem: String) -> ControlError {
    ControlError::UnsafeRunDir { path: path.to_owned(), problem }
}

/// The listening end of a node's control channel. Removes its socket file when dropped.
#[derive(Debug)]
pub struct Control {
    root: PathBuf,
    path: PathBuf,
    listener: UnixListener,
    /// Device and inode of the socket file, so that drop removes only our own file.
    identity: (u64, u64),
    /// How long a client has for its whole request line.
    deadline: Duration,
}

impl Control {
    /// Creates and listens on `ROOT/run/hotcode.sock` (mode 0600 from its creation) for the
    /// root that `lock` holds, removing a socket file left by a node that is gone (none
    /// can be alive: the lock says so). Keep `lock` for as long as the `Control` lives.
    ///
    /// # Errors
    ///
    /// [`ControlError::NotASocket`] if a file of another kind has the socket's name;
    /// [`ControlError::Io`] if the socket cannot be made (a root path too long for a socket
    /// address is one such error).
    pub fn bind(lock: &RootLock) -> Result<Control, ControlError> {
        let root = lock.root();
        let path = socket_path(root);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                log::info!(
                    "removing stale socket {} (this node holds the root's lock)",
                    path.display()
                );
                remove_if_present(&path)?;
            }
            Ok(_) => return Err(ControlError::NotASocket { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ControlError::Io { path, source: e }),
        }
        let listener = bind_private(&path).map_err(io_error(&path))?;
        let meta = fs::symlink_metadata(&path).map_err(io_error(&path))?;
        listener.set_nonblocking(true).map_err(io_error(&path))?;
        log::info!("control socket {}", path.display());
        Ok(Control {
            root: root.to_owned(),
            path,
            listener,
            identity: (meta.dev(), meta.ino()),
            deadline: REQUEST_DEADLINE,
        })
    }

    /// Gives each client `deadline` in all, instead of [`REQUEST_DEADLINE`], to send its
    /// request line (tests use a short one).
    pub fn with_request_deadline(mut self, deadline: Duration) -> Control {
        self.deadline = deadline;
        self
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests for `handler` until `stop` is set (checked at least every 100 ms)
    /// or a `reboot-old` succeeded: at most [`MAX_CONNECTIONS`] connections at once, each on
    /// a thread of its own; read-only requests at once, release operations one at a time
    /// in arrival order (see the [module docs](self)). Returns once every connection thread
    /// has finished.
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
        let serving = Serving {
            handler,
            stop,
            own_uid: node_uid(),
            restart: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            turn: Condvar::new(),
        };
        thread::scope(|scope| {
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(ServeExit::Stopped);
                }
                if serving.restart.load(Ordering::SeqCst) {
                    return Ok(ServeExit::Restart);
                }
                if !wait_readable(&self.listener, POLL_INTERVAL).map_err(io_error(&self.path))? {
                    continue;
                }
                let stream = match self.listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => return Err(ControlError::Io { path: self.path.clone(), source: e }),
                };
                if let Err(e) = self.admit(scope, &serving, stream) {
                    log::warn!("control connection: {e}");
                }
            }
        })
    }

    /// Checks a new connection's peer and the number of connections, then serves it on a
    /// thread of its own. A refused peer gets its answer from this thread, unread.
    fn admit<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        serving: &'env Serving<'env>,
        stream: UnixStream,
    ) -> io::Result<()> {
        let deadline = Instant::now() + self.deadline;
        // Who it is, before a single byte of what it wants: a refused peer costs the node
        // one short answer and nothing else.
        let peer = peer_cred(&stream)?.uid;
        let own_uid = serving.own_uid;
        if peer != own_uid {
            log::warn!("control: refused a connection from uid {peer}");
            return refuse(
                &stream,
                format!("refused: uid {peer} may not control this node (it runs as uid {own_uid})"),
            );
        }
        if serving.active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            log::warn!("control: refused a connection: {MAX_CONNECTIONS} are being served");
            return refuse(
                &stream,
                format!(
                    "busy: the node is serving {MAX_CONNECTIONS} connections already, the most \
                     it takes at once; try again when one has finished (`status` lists the \
                     release operations running and waiting)"
                ),
            );
        }
        // Kept to answer on if no thread can be started for the connection.
        let spare = stream.try_clone()?;
        serving.active.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new().name("hotcode-control".to_owned()).spawn_scoped(
            scope,
            move || {
                let slot = Slot(&serving.active);
                if let Err(e) = self.connection(serving, &stream, deadline) {
                    log::warn!("control connection: {e}");
                }
                // The slot is free before the client sees its connection close, so a client
                // that read its answer to the end may connect again at once.
                drop(slot);
                drop(stream);
            },
        );
        if let Err(e) = spawned {
            serving.active.fetch_sub(1, Ordering::SeqCst);
            log::error!("control: cannot start a thread for a connection: {e}");
            return refuse(&spare, format!("busy: the node cannot start a thread for it: {e}"));
        }
        Ok(())
    }

    /// Serves one connection whose peer was admitted: reads its request by `deadline`,
    /// runs it, answers.
    fn connection(
        &self,
        serving: &Serving<'_>,
        stream: &UnixStream,
        deadline: Instant,
    ) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let request = match read_request(stream, deadline, &|| serving.ending()) {
            Ok(request) => request,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let message =
                    format!("no complete request line within {} ms", self.deadline.as_millis());
                let _ = Reply::err(EXIT_USAGE, message.clone()).send(stream);
                return Err(io::Error::new(io::ErrorKind::TimedOut, message));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                let message = "the node is stopping; the request was not read".to_owned();
                let _ = Reply::err(EXIT_REFUSED, message.clone()).send(stream);
                return Err(io::Error::new(io::ErrorKind::Interrupted, message));
            }
            Err(e) => return Err(e),
        };
        let reply = match request {
            Ok(fields) => {
                log::info!("control: {}", fields.join(" "));
                self.dispatch(serving, &fields, stream)
            }
            Err(message) => Reply::usage(message),
        };
        if let Err(e) = reply.send(stream) {
            // The operation is done whether or not its client heard of it; after a
            // reboot-old the node must restart all the same.
            log::warn!("control: the client went away before its answer: {e}");
        }
        Ok(())
    }

    fn dispatch(&self, serving: &Serving<'_>, fields: &[String], stream: &UnixStream) -> Reply {
        let handler = serving.handler;
        let request = match Request::parse(fields) {
            Ok(request) => request,
            Err(message) => return Reply::usage(message),
        };
        match request {
            // Read-only: at once, whatever runs.
            Request::WhichReleases => Reply::ok(which_releases(handler)),
            Request::Status => Reply::ok(status(handler, &serving.queue())),
            // Release operations: one at a time, in arrival order.
            _ => {
                let op = || {
                    let reply = operate(handler, request, stream);
                    // Within the turn: once reboot-old made another release permanent, no
                    // operation waiting behind it may start on this node.
                    if reply.restart {
                        serving.restart.store(true, Ordering::SeqCst);
                    }
                    reply
                };
                match serving.in_turn(fields.join(" "), op) {
                    Ok(reply) => reply,
                    Err(message) => Reply::err(EXIT_REFUSED, message),
                }
            }
        }
    }
}

/// Runs release operation `request` (the caller holds the turn) and makes its answer.
/// Read-only requests are answered by `dispatch` and never come here; they would be
/// answered the same way if they did.
fn operate(handler: &ReleaseHandler, request: Request<'_>, stream: &UnixStream) -> Reply {
    let result = match request {
        Request::WhichReleases => Ok(which_releases(handler)),
        Request::Status => Ok(status(handler, &Queue::default())),
        Request::Unpack(path) => {
            if !Path::new(path).is_absolute() {
                return Reply::err(
                    EXIT_REFUSED,
                    format!("unpack needs an absolute path, not {path:?}"),
                );
            }
            handler.unpack(Path::new(path)).map(|vsn| vec![format!("ok: unpacked release {vsn}")])
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
        Request::RebootOld(vsn) => handler
            .reboot_old(vsn)
            .map(|()| vec![format!("ok: {vsn} is permanent again; the node restarts to run it")]),
        Request::Remove(vsn) => {
            handler.remove(vsn).map(|()| vec![format!("ok: removed release {vsn}")])
        }
    };
    match result {
        Ok(lines) => Reply { lines, code: 0, restart: matches!(request, Request::RebootOld(_)) },
        Err(e) => Reply::err(EXIT_REFUSED, error_chain(&e)),
    }
}

/// What the connections of one [`Control::serve`] share.
struct Serving<'a> {
    handler: &'a ReleaseHandler,
    stop: &'a AtomicBool,
    own_uid: u32,
    /// Set once a `reboot-old` succeeded (before the next operation's turn): the node
    /// restarts, and starts no more operations.
    restart: AtomicBool,
    /// Connections being served now.
    active: AtomicUsize,
    /// The release operations running and waiting.
    queue: Mutex<Queue>,
    /// Signalled whenever an operation ends or gives up its place.
    turn: Condvar,
}

/// The release operations of one `serve`: the one running, and those waiting, in arrival
/// order.
#[derive(Debug, Default, Clone)]
struct Queue {
    /// The request, and since when it runs.
    running: Option<(String, Instant)>,
    /// Tickets and requests, first come first.
    waiting: VecDeque<(u64, String)>,
    /// The next ticket.
    next: u64,
}

impl Serving<'_> {
    /// Whether the node is stopping or restarting.
    fn ending(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.restart.load(Ordering::SeqCst)
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        // Every change to the queue is complete before the lock is let go.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the queue, for `status`.
    fn queue(&self) -> Queue {
        self.lock_queue().clone()
    }

    /// Waits until every operation that arrived before it has finished, then runs `op` as
    /// the one running operation, described by `what`. `Err` with a reason, and `op` not
    /// run, if the node started stopping or restarting meanwhile.
    fn in_turn<T>(&self, what: String, op: impl FnOnce() -> T) -> Result<T, String> {
        let mut queue = self.lock_queue();
        let ticket = queue.next;
        queue.next += 1;
        queue.waiting.push_back((ticket, what.clone()));
        while queue.running.is_some() || queue.waiting.front().map(|(t, _)| *t) != Some(ticket) {
            queue = self.turn.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
        queue.waiting.pop_front();
        if self.ending() {
            // The next in line must find out too.
            self.turn.notify_all();
            return Err(format!("the node is stopping; {what} was not started"));
        }
        if !queue.waiting.is_empty() {
            log::info!("control: {what} starts; {} operation(s) wait for it", queue.waiting.len());
        }
        queue.running = Some((what, Instant::now()));
        drop(queue);
        // Whatever happens in `op`, even a panic, the next in line gets its turn.
        let _done = Done(self);
        Ok(op())
    }
}

/// Ends the running operation of a [`Serving`] when dropped.
struct Done<'a, 'b>(&'a Serving<'b>);

impl Drop for Done<'_, '_> {
    fn drop(&mut self) {
        self.0.lock_queue().running = None;
        self.0.turn.notify_all();
    }
}

/// One connection's place among the [`MAX_CONNECTIONS`], given back when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers `message` as a refusal (`ERR 1`) without reading the request and without
/// blocking: the refusal fits in the empty socket buffer, and a peer that does not read it
/// must not hold the node.
fn refuse(stream: &UnixStream, message: String) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let sent = Reply::err(EXIT_REFUSED, message).send(stream);
    discard_pending(stream);
    sent
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
/// [`ControlError::NotRunning`] if no node listens on `root`; [`ControlError::UnsafeRunDir`]
/// if `ROOT/run` is a symbolic link, not a directory, owned by a user other than this one
/// or root, or writable by group or others; [`ControlError::ForeignPeer`] if the process
/// listening on the socket runs as a uid other than this process's effective uid or root
/// (nothing is sent to it); [`ControlError::BadField`] if a field cannot be sent;
/// [`ControlError::NodeExited`] if the node closed the connection before its final line and
/// recorded why in `ROOT/run/last-exit` (after the request began, under the pid the kernel
/// gave for it); [`ControlError::Protocol`] if it closed the connection before its final
/// line otherwise, or sent a bad final line; [`ControlError::Io`] for other socket errors.
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
    let not_running = || ControlError::NotRunning { root: root.to_owned(), socket: socket.clone() };
    // An exit record older than this is not about this request.
    let began = SystemTime::now();
    if !check_run_dir(&root.join(RUN_DIR))? {
        return Err(not_running());
    }
    let mut stream = UnixStream::connect(&socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => not_running(),
        _ => ControlError::Io { path: socket.clone(), source: e },
    })?;
    // Before a byte is sent or believed: is it the node, or someone who took its place?
    let own = node_uid();
    let peer = peer_cred(&stream).map_err(io_error(&socket))?;
    let uid = peer.uid;
    if uid != own && uid != 0 {
        return Err(ControlError::ForeignPeer { socket, uid, own });
    }
    let mut line = fields.join("\t");
    line.push('\n');
    // A node that refuses us answers and closes without reading the request, so writing
    // it may fail: the answer, already on its way, says why.
    let sent =
        stream.write_all(line.as_bytes()).and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    if let Err(e) = sent
        && !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
    {
        return Err(ControlError::Io { path: socket, source: e });
    }
    let mut lines = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = match line {
            Ok(line) => line,
            // After a refusal, the node closed with our request unread, which resets the
            // connection once its answer has been read: the answer is complete. Without
            // one, the node went away before it took the connection: said below.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(ControlError::Io { path: socket, source: e }),
        };
        match line.strip_prefix(PROGRESS_PREFIX) {
            Some(step) => progress(step),
            None => lines.push(line),
        }
    }
    let protocol = |detail: String| ControlError::Protocol { socket: socket.clone(), detail };
    let Some(last) = lines.pop() else {
        return Err(went_away(root, &socket, peer.pid, began, "without answering".to_owned()));
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
        let said = format!("before its final line, having said: {}", lines.join(" / "));
        return Err(went_away(root, &socket, peer.pid, began, said));
    };
    Ok((lines, code))
}

/// The error for a node (pid `pid`) that closed the connection `how` ("without
/// answering"): its reason from `ROOT/run/last-exit` if it wrote one after the request
/// began (`began`), else what is known.
fn went_away(root: &Path, socket: &Path, pid: u32, began: SystemTime, how: String) -> ControlError {
    let file = last_exit::path(root);
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    // Read with the same trust as the socket: ROOT/run checked again, then the file itself.
    let record = check_run_dir(&root.join(RUN_DIR))
        .map_err(|e| e.to_string())
        .and_then(|_| last_exit::read(root).map_err(|e| e.to_string()));
    let why = match record {
        Ok(Some(r)) if r.pid == pid => match r.ending {
            // Written before the exit closed our connection, so after we connected.
            Ending::Exited(code) if ms(r.at) >= ms(began) => {
                return ControlError::NodeExited { record: file, pid, code, reason: r.reason };
            }
            Ending::Exited(_) => format!(
                "{} holds an exit of pid {pid} from before this request ({})",
                file.display(),
                r.age()
            ),
            Ending::Running => format!(
                "it recorded no exit in {}: it was killed (SIGKILL?) or crashed",
                file.display()
            ),
        },
        Ok(Some(r)) => format!(
            "{} is about pid {}, not this node: it was killed (SIGKILL?) or crashed",
            file.display(),
            r.pid
        ),
        Ok(None) => format!("there is no {}: it was killed (SIGKILL?) or crashed", file.display()),
        Err(e) => format!("its exit record was not read: {e}"),
    };
    ControlError::Protocol {
        socket: socket.to_owned(),
        detail: format!("the node (pid {pid}) closed the connection {how}; {why}"),
    }
}

/// An answer: lines, then `OK` or `ERR code`.
struct Reply {
    lines: Vec<String>,
    code: i32,
    restart: bool,
}

impl Reply {
    fn ok(lines: Vec<String>) -> Reply {
        Reply { lines, code: 0, restart: false }
    }

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

/// Reads the request line by `deadline`, however the client paces its bytes:
/// `Ok(Err(message))` for a malformed one, an error of kind `TimedOut` past the deadline,
/// one of kind `Interrupted` once `stopping()` says so (asked at least every
/// [`POLL_INTERVAL`]).
fn read_request(
    mut stream: &UnixStream,
    deadline: Instant,
    stopping: &dyn Fn() -> bool,
) -> io::Result<Result<Vec<String>, String>> {
    let limit = usize::try_from(MAX_REQUEST + 1).unwrap_or(usize::MAX);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request deadline passed"));
        }
        if stopping() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "the node is stopping"));
        }
        // The time left in all, not a fresh timeout for each read; in slices, to look at
        // the stop flag between them.
        stream.set_read_timeout(Some(remaining.min(POLL_INTERVAL)))?;
        let want = buf.len().min(limit - raw.len());
        let n = match stream.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let start = raw.len();
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw[start..].iter().position(|&b| b == b'\n') {
            raw.truncate(start + end + 1);
            break;
        }
        if n == 0 || raw.len() >= limit {
            break;
        }
    }
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

/// Reads and drops what a refused peer has sent so far, without waiting for more: closing
/// a Unix socket with unread data resets the connection, and the peer's read after the
/// refusal would fail with that reset instead of ending cleanly.
fn discard_pending(mut stream: &UnixStream) {
    let mut buf = [0u8; 4096];
    let mut left = MAX_REQUEST;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
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

/// The `status` answer; `queue` is the release operations running and waiting, listed
/// after the release line when there are any.
fn status(handler: &ReleaseHandler, queue: &Queue) -> Vec<String> {
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
    if let Some((what, since)) = &queue.running {
        lines.push(format!(
            "operation: {what} (running for {:.1} s)",
            since.elapsed().as_secs_f64()
        ));
    }
    for (_, what) in &queue.waiting {
        lines.push(format!("  waiting: {what}"));
    }
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

/// Whether `ROOT/run` (at `dir`) exists and may be trusted to hold the socket of a node
/// this user may believe: a real directory, owned by this user or root, that nobody else
/// may write in. False if it does not exist.
fn check_run_dir(dir: &Path) -> Result<bool, ControlError> {
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

/// A listening socket at `path` whose file has mode 0600 from the moment it exists: the
/// mode is set on the socket before `bind(2)`, which on Linux creates the file with the
/// socket's mode (less the umask). Fails if `path` exists.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un { sun_family: 0, sun_path: [0; 108] };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX)
        .map_err(|_| io::Error::other("AF_UNIX does not fit sa_family_t"))?;
    // One byte is left for the terminating NUL.
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "path too long for a socket address (at most {} bytes)",
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = libc::c_char::from_ne_bytes([*from]);
    }
    let len = libc::socklen_t::try_from(
        std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1,
    )
    .map_err(|_| io::Error::other("socket address length"))?;
    // SAFETY: socket(2) takes no pointers; the descriptor it returns is checked below and
    // owned by `fd` from then on.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns or will close.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: fchmod(2) on the socket `fd` owns; no memory is passed.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `addr` is an initialised `sockaddr_un` that lives across the call, and `len`
    // covers its family, the path and its NUL, within the struct.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on the bound socket `fd` owns; no memory is passed.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixListener::from(fd))
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

/// Who is at the other end of a Unix stream, as the kernel recorded it.
#[derive(Debug, Clone, Copy)]
struct PeerCred {
    uid: u32,
    pid: u32,
}

/// The uid and pid of the process at the other end of `stream`, from the kernel
/// (`SO_PEERCRED`): the credentials it had when it connected (or, for a listening node,
/// when it listened), which it cannot forge.
fn peer_cred(stream: &UnixStream) -> io::Result<PeerCred> {
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
    let pid = u32::try_from(cred.pid).map_err(|_| io::Error::other("negative peer pid"))?;
    Ok(PeerCred { uid: cred.uid, pid })
}
