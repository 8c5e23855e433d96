//! The node's side: binding the socket, admitting peers, serving each connection on a
//! thread of its own, running release operations one at a time (see the
//! [module docs](super)).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use crate::code::trust::node_uid;
use crate::release_handler::{InstallOptions, Progress, ReleaseError, ReleaseHandler};

use super::client::*;
use super::lock::*;
use super::views::*;
use super::wire::*;
use super::*;

/// How long `serve` sleeps in `poll(2)`, and a connection in a read, before it looks at the
/// stop flag again.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long one write of an answer may block on a client that does not read it: a client
/// that stalls must not stall the node's control channel for ever.
pub(super) const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Whether dropping this removes the socket file: not once the socket was handed to a
    /// new host process, nor for a socket the service manager made.
    remove_file: bool,
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
            remove_file: true,
        })
    }

    /// Serves on a listening socket this process was handed (by the node it replaces, or
    /// by the service manager: `LISTEN_FDS`), instead of binding one. The socket must be a
    /// listening Unix stream socket bound to `ROOT/run/hotcode.sock` of the root `lock`
    /// holds, and the file there a socket of this user that nobody else may use.
    /// `remove_file`: whether dropping the `Control` removes the socket file (yes for one
    /// handed over by an old node; no for one the service manager owns).
    ///
    /// # Errors
    ///
    /// [`ControlError::UnsafeRunDir`] naming what does not match; [`ControlError::Io`] if
    /// the socket cannot be inspected.
    pub fn adopt(lock: &RootLock, fd: OwnedFd, remove_file: bool) -> Result<Control, ControlError> {
        let root = lock.root();
        let path = socket_path(root);
        let refuse = |problem: String| ControlError::UnsafeRunDir { path: path.clone(), problem };
        let int_opt = |name: libc::c_int| -> Result<libc::c_int, ControlError> {
            let mut value: libc::c_int = 0;
            let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
                .map_err(|_| refuse("socket option size".into()))?;
            // SAFETY: getsockopt(2) on the descriptor `fd` owns, writing at most `len` bytes
            // into `value`, an int that lives across the call.
            let rc = unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    name,
                    (&raw mut value).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                return Err(ControlError::Io {
                    path: path.clone(),
                    source: io::Error::last_os_error(),
                });
            }
            Ok(value)
        };
        if int_opt(libc::SO_DOMAIN)? != libc::AF_UNIX
            || int_opt(libc::SO_TYPE)? != libc::SOCK_STREAM
            || int_opt(libc::SO_ACCEPTCONN)? != 1
        {
            return Err(refuse(
                "the inherited control socket is not a listening Unix stream socket".into(),
            ));
        }
        let listener = UnixListener::from(fd);
        let bound = listener.local_addr().map_err(io_error(&path))?;
        if bound.as_pathname() != Some(path.as_path()) {
            return Err(refuse(format!(
                "the inherited control socket is bound to {:?}, not to this root's socket",
                bound.as_pathname()
            )));
        }
        let meta = fs::symlink_metadata(&path).map_err(io_error(&path))?;
        let own = node_uid();
        if !meta.file_type().is_socket() || meta.uid() != own || meta.mode() & 0o077 != 0 {
            return Err(refuse(format!(
                "the socket file must be a socket of uid {own} with mode 0600 (it has uid {}, \
                 mode {:04o})",
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        listener.set_nonblocking(true).map_err(io_error(&path))?;
        log::info!("control socket {} (inherited)", path.display());
        Ok(Control {
            root: root.to_owned(),
            path,
            listener,
            identity: (meta.dev(), meta.ino()),
            deadline: REQUEST_DEADLINE,
            remove_file,
        })
    }

    /// A duplicate of the listening socket, to hand to a new host process: the same
    /// socket, so that no client is refused while the node changes process.
    pub fn listener_fd(&self) -> io::Result<OwnedFd> {
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Whether dropping this removes the socket file: not while another process serves,
    /// or may serve, on it (the old node of a restart until it has handed over; the new
    /// one once it has taken over).
    pub fn remove_socket_file_on_drop(&mut self, remove: bool) {
        self.remove_file = remove;
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
    /// in arrival order (see the [module docs](super)). Returns once every connection thread
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
            handover: Mutex::new(None),
            active: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
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
                if let Some(pid) = serving.handed_over() {
                    // Nothing more is accepted: the new process takes what queues up. The
                    // scope joins the connection threads (the operation's own answer is
                    // sent) before `serve` returns.
                    return Ok(ServeExit::HandedOver(pid));
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
            // A call may wait for its reply as long as its timeout: it never takes the
            // last connections, which stay for status and release operations.
            Request::Query(query @ Query::Call { .. }) => {
                if serving.calls.fetch_add(1, Ordering::SeqCst) >= MAX_CALLS {
                    serving.calls.fetch_sub(1, Ordering::SeqCst);
                    return Reply::err(
                        EXIT_REFUSED,
                        format!(
                            "busy: {MAX_CALLS} calls are waiting for replies already, the most at \
                             once; the other connections stay for status and release operations"
                        ),
                    );
                }
                let reply = answer(handler, query, &serving.queue());
                serving.calls.fetch_sub(1, Ordering::SeqCst);
                reply
            }
            Request::Query(query) => answer(handler, query, &serving.queue()),
            // Release operations: one at a time, in arrival order.
            _ => {
                let op = || {
                    let reply = operate(handler, request, stream);
                    // Within the turn: once reboot-old made another release permanent, no
                    // operation waiting behind it may start on this node.
                    if reply.restart {
                        serving.restart.store(true, Ordering::SeqCst);
                    }
                    if let Some(pid) = reply.handover {
                        *serving.handover.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
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
pub(super) fn operate(
    handler: &ReleaseHandler,
    request: Request<'_>,
    stream: &UnixStream,
) -> Reply {
    let result = match request {
        Request::Query(query) => return answer(handler, query, &Queue::default()),
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
                "ok: {} can be installed ({} from {}, {} instructions from {}): {}",
                plan.vsn,
                direction_word(plan.direction),
                plan.from,
                plan.entry.instructions.len(),
                plan.script.display(),
                plan.result_term()
            )]
        }),
        Request::Install(vsn, attempt) => {
            let mut progress = |p: Progress<'_>| {
                // Progress lines go out as the install runs; a client that left misses
                // them, which must not stop the install.
                let line = format!(
                    "{PROGRESS_PREFIX}install {vsn}: [{}/{}] {}\n",
                    p.step, p.total, p.instruction
                );
                let _ = (&*stream).write_all(line.replace('\r', " ").as_bytes());
            };
            let options = InstallOptions { attempt: attempt.map(str::to_owned) };
            match handler.install_with(vsn, &options, &mut progress) {
                Ok(installed) => return installed_reply(vsn, &installed),
                Err(e) => Err(e),
            }
        }
        Request::MakePermanent(vsn) => {
            handler.make_permanent(vsn).map(|()| vec![format!("ok: {vsn} is permanent")])
        }
        Request::RebootOld(vsn) => handler
            .reboot_old(vsn)
            .map(|()| vec![format!("ok: {vsn} is permanent again; the node restarts to run it")]),
        Request::Remove(vsn) => {
            handler.remove(vsn).map(|()| vec![format!("ok: removed release {vsn}")])
        }
        Request::Restart => match handler.restart_host() {
            Ok(pid) => {
                let mut reply = Reply::ok(vec![format!(
                    "ok: restarted: the new host (pid {pid}) serves release {}",
                    handler.current()
                )]);
                reply.handover = Some(pid);
                return reply;
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(lines) => Reply {
            lines,
            code: 0,
            restart: matches!(request, Request::RebootOld(_)),
            handover: None,
        },
        Err(e) => Reply::err(EXIT_REFUSED, error_chain(&e)),
    }
}

/// The most `call`s served at once: the other connections of [`MAX_CONNECTIONS`] stay for
/// `status` and release operations however long calls wait.
pub(super) const MAX_CALLS: usize = MAX_CONNECTIONS - 2;

/// The answer to a successful install: OTP's result, and the new host's pid when the
/// script restarted the host (`{continue_after_restart, OldVsn, Descr}` when the new host
/// runs the rest of the script).
fn installed_reply(vsn: &str, installed: &crate::release_handler::Installed) -> Reply {
    let mut reply = if installed.continue_after_restart {
        Reply::ok(vec![format!(
            "ok: {{continue_after_restart,\"{}\",{}}}: the new host (pid {}) booted release {} \
             and ran the rest of the script: {vsn} is current",
            installed.from,
            installed.descr,
            installed.restarted.unwrap_or(0),
            installed.from
        )])
    } else {
        let mut lines = vec![format!(
            "ok: installed {vsn} ({} from {}): {}",
            direction_word(installed.direction),
            installed.from,
            installed.to_term()
        )];
        if let Some(pid) = installed.restarted {
            lines.push(format!("ok: the host restarted (restart_emulator): new pid {pid}"));
        }
        Reply::ok(lines)
    };
    reply.handover = installed.restarted;
    reply
}

/// What the connections of one [`Control::serve`] share.
pub(super) struct Serving<'a> {
    handler: &'a ReleaseHandler,
    stop: &'a AtomicBool,
    own_uid: u32,
    /// Set once a `reboot-old` succeeded (before the next operation's turn): the node
    /// restarts, and starts no more operations.
    restart: AtomicBool,
    /// Set once a new host process took the node over (its pid): no more operations.
    handover: Mutex<Option<u32>>,
    /// Connections being served now.
    active: AtomicUsize,
    /// `call`s waiting for their replies now (at most [`MAX_CALLS`]).
    calls: AtomicUsize,
    /// The release operations running and waiting.
    queue: Mutex<Queue>,
    /// Signalled whenever an operation ends or gives up its place.
    turn: Condvar,
}

/// The release operations of one `serve`: the one running, and those waiting, in arrival
/// order.
#[derive(Debug, Default, Clone)]
pub(super) struct Queue {
    /// The request, and since when it runs.
    pub(super) running: Option<(String, Instant)>,
    /// Tickets and requests, first come first.
    pub(super) waiting: VecDeque<(u64, String)>,
    /// The next ticket.
    next: u64,
}

impl Serving<'_> {
    /// Whether the node is stopping or restarting.
    fn ending(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.restart.load(Ordering::SeqCst)
            || self.handed_over().is_some()
    }

    /// The new host process's pid, once one took the node over.
    fn handed_over(&self) -> Option<u32> {
        *self.handover.lock().unwrap_or_else(|p| p.into_inner())
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
pub(super) struct Done<'a, 'b>(&'a Serving<'b>);

impl Drop for Done<'_, '_> {
    fn drop(&mut self) {
        self.0.lock_queue().running = None;
        self.0.turn.notify_all();
    }
}

/// One connection's place among the [`MAX_CONNECTIONS`], given back when dropped.
pub(super) struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers `message` as a refusal (`ERR 1`) without reading the request and without
/// blocking: the refusal fits in the empty socket buffer, and a peer that does not read it
/// must not hold the node.
pub(super) fn refuse(stream: &UnixStream, message: String) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let sent = Reply::err(EXIT_REFUSED, message).send(stream);
    discard_pending(stream);
    sent
}

impl Drop for Control {
    fn drop(&mut self) {
        // Remove the name only if it is still our socket: after a stale-socket cleanup by
        // another node it may be someone else's.
        let ours = self.remove_file
            && fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours && let Err(e) = fs::remove_file(&self.path) {
            log::warn!("cannot remove {}: {e}", self.path.display());
        }
        log::debug!("control socket of {} closed", self.root.display());
    }
}

pub(super) fn direction_word(direction: crate::release::Direction) -> &'static str {
    match direction {
        crate::release::Direction::Up => "upgrade",
        crate::release::Direction::Down => "downgrade",
    }
}

/// The error and its sources, as `{:#}` of `anyhow` would print them, skipping a source
/// whose text the message already contains.
pub(super) fn error_chain(error: &ReleaseError) -> String {
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

/// A listening socket at `path` whose file has mode 0600 from the moment it exists: the
/// mode is set on the socket before `bind(2)`, which on Linux creates the file with the
/// socket's mode (less the umask). Fails if `path` exists.
pub(super) fn bind_private(path: &Path) -> io::Result<UnixListener> {
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

pub(super) fn remove_if_present(path: &Path) -> Result<(), ControlError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ControlError::Io { path: path.to_owned(), source: e }),
    }
}

/// An accept error that is about one connection, not the listener.
pub(super) fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    )
}

/// Waits up to `timeout` for a connection to accept; false on timeout or a signal.
pub(super) fn wait_readable(listener: &UnixListener, timeout: Duration) -> io::Result<bool> {
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
