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
//! proof) removes. An embedder that runs a [`ReleaseHandler`](crate::release_handler::ReleaseHandler) on a root must take the
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
//! writes why to `ROOT/run/last-exit` ([`last_exit`](crate::release_handler::last_exit)); [`request`] then reads that record,
//! with the same trust rules as the rest of `ROOT/run`, and returns the reason
//! ([`ControlError::NodeExited`]) if the record is from the node it talked to (its pid, as
//! the kernel gave it) and was written after the request began.
//!
//! The commands are those of `hotcode ctl`: `which-releases`, `status`, `tree` and
//! `applications` (each with an optional `--json` field: one versioned JSON document, see
//! `json.rs`), `whereis NAME`, `call DEST REQUEST [TIMEOUT_MS]` and `cast DEST MESSAGE`
//! (a registered name or `<0.N.0>`, and one term in Erlang syntax), `unpack PATH`
//! (absolute: a release package or a directory), `check-install VSN`, `install VSN
//! [--attempt ID]` (the upgrade attempt a relup with `sync_nodes` needs), `make-permanent
//! VSN`, `reboot-old VSN`, `remove VSN` and `restart` (the host, in place).
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
//! - **queries** (`which-releases`, `status`, `tree`, `applications`, `whereis`, and
//!   `call` and `cast`, which reach a process but not the release) run at once, beside
//!   anything else (a `call` waits for its reply, at most a minute, and at most
//!   `MAX_CONNECTIONS - 2` calls at once, so that status and release operations always
//!   find a connection): they read the release handler's published view of the releases
//!   and the node's own tables, and never wait for a release operation. So `ctl status` answers while an install runs, and
//!   says which operation runs and which wait.
//! - **release operations** (`unpack`, `check-install`, `install`, `make-permanent`,
//!   `reboot-old`, `remove`, `restart`) run one at a time, in the order they arrived: each waits its
//!   turn in a queue, then holds the release handler's lock for its whole run as before.
//!   Once the node is stopping or restarting, an operation still waiting is refused rather
//!   than started.
//!
//! The accepting thread waits in `poll(2)` with a short timeout, so that it notices the stop
//! flag (set by a signal handler) promptly without spinning; a connection thread waiting for
//! a request line looks at it as often. When `serve` returns, every connection thread has
//! finished (an operation that runs is not cut short). After `reboot-old` has been
//! answered, `serve` returns [`ServeExit::Restart`]: the node must restart to run the
//! release that is permanent now. After an operation handed the node to a new host process
//! (an install that restarts the host, or `restart`), it returns [`ServeExit::HandedOver`]
//! once every connection thread has finished, and accepts nothing more: connections wait in
//! the socket's queue for the new process, which listens on the very same socket
//! ([`Control::listener_fd`], [`Control::adopt`]).

mod client;
mod json;
mod lock;
mod server;
mod talk;
mod views;
mod wire;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use client::{PROGRESS_PREFIX, request, request_until, request_with_progress};
pub use lock::RootLock;
pub use server::Control;

/// Where the socket is, relative to the release root.
pub const SOCKET: &str = "run/hotcode.sock";

/// The directory that holds the socket and carries the node's lock, relative to the root.
pub const RUN_DIR: &str = "run";

/// The most connections served at once. One more is answered "busy" and closed, unread.
pub const MAX_CONNECTIONS: usize = 8;

/// How long, in all, the node waits for a client's whole request line after accepting its
/// connection (not per read). [`Control::with_request_deadline`] changes it.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

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
    /// The node did not answer before the request's deadline ([`request_until`]): it is
    /// stopped, hung, or still working; the connection was closed.
    #[error("{}: no answer within {after:.1?}; gave up", socket.display())]
    TimedOut {
        /// The socket.
        socket: PathBuf,
        /// How long was given.
        after: std::time::Duration,
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

pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ControlError + '_ {
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
    /// A new host process with this pid is ready to take the node over (an install that
    /// restarts the host, or `restart`): stop accepting, drain, hand over
    /// ([`crate::release_handler::ReleaseHandler::take_successor`]) and exit.
    HandedOver(u32),
}
