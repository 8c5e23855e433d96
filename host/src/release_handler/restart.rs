//! Restarting the host under a running service (SPEC §11): OTP's `restart_new_emulator` and
//! `restart_emulator`, and `hotcode ctl ROOT restart`.
//!
//! OTP restarts the emulator and drops every connection and every process's state. hotcode
//! hands the node over from the old process to a new one instead, so that clients see no
//! refused connection and opted-in gen_servers keep their state.
//!
//! # Descriptors
//!
//! The old process starts the new host binary with its open descriptors in the systemd
//! socket-activation convention (`sd_listen_fds(3)`): descriptors `3 ..` in order, with
//! `LISTEN_FDS` (how many), `LISTEN_PID` (the new process's pid, written in the child
//! between `fork` and `execve`) and `LISTEN_FDNAMES` (their names, `:`-separated). A node
//! that systemd starts with sockets it made reads them the same way ([`Inherited`]). The
//! names are [`FD_LOCK`] (the root's lock, below), [`FD_CONTROL`] (the control socket),
//! [`FD_HANDOVER`] (the channel between the two processes) and whatever the fronts name
//! their own listeners (`hotcode-tcp` for the service example's). Listening sockets are
//! the very same sockets, never closed: a client that connects at any moment of the
//! handover is queued by the kernel until one of the two processes accepts it, so nobody
//! is refused.
//!
//! # The handover
//!
//! Over [`FD_HANDOVER`], a stream socket pair, the two processes exchange terms, each
//! framed by a 4-byte big-endian length:
//!
//! 1. old → new: `{hello, OldPid, BootVsn, Continue}`: which release to boot, and
//!    `undefined` or the release whose install the new node continues (the rest of a
//!    script that began with `restart_new_emulator`);
//! 2. new → old: `{ready, Pid}` once it has booted (and run that rest of the script), or
//!    `{failed, Reason}` before it exits. The new node serves nothing yet;
//! 3. the old node stops accepting, finishes the requests it has read (with a deadline),
//!    suspends and exports the opted-in processes' states, and sends `{go, States}`;
//! 4. new → old: `serving`, once it has given the states to its processes and accepts
//!    connections. The old process exits.
//!
//! So at no moment do two processes serve one root: the old one serves until step 3, the
//! new one from step 4. The old process waits for `ready` at most the restart's ready
//! timeout; if the new process exits first, says `failed`, or overruns, it is killed and
//! reaped, the old node keeps serving, and the install fails naming why
//! ([`RestartError`]).
//!
//! # The root's lock
//!
//! The root's lock is an `flock(2)` on `ROOT/run` (the front's `RootLock`), held by an open
//! file description. The old process hands the new one a duplicate of its descriptor, so
//! both hold the *same* lock: it stays held for as long as either process lives, and is
//! released only when both are gone. Hence, whatever dies when:
//!
//! - the new process dies before `ready` (or is killed for overrunning): the old one still
//!   holds the lock and serves; nothing on disk changed;
//! - the old process dies during the handover: the new one holds the lock; it sees the
//!   channel close and serves alone (the states it did not receive start fresh);
//! - the new process dies after `go`, before `make_permanent`: the old one has exited, the
//!   lock is free, and the next `hotcode boot` boots the permanent release (RELEASES never
//!   says `current`) with that release's own host binary.
//!
//! No third process can take the root in between, and there is never a moment when no
//! process holds the lock while one serves.
//!
//! # State handover
//!
//! An application opts in per module with the parameter [`HANDOVER_ENV`] in its `.app`
//! (`{env, [{hotcode_handover, [svc_handler]}]}`). At step 3 the old node suspends every
//! gen_server running an opted-in module (so no request can change a state after it was
//! exported) and exports its state as a term, by the version that made it. The new node
//! started those processes fresh with `init`; each gets its predecessor's state through
//! its current version's `code_change(OldVsn, State, [])`, matched by module and by the
//! order of the supervision trees. A process that fails to adopt the state keeps the
//! fresh one (logged). Processes that do not opt in restart fresh, as in OTP.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plugin_api::Term;

/// The name of the root's lock among the handed descriptors (a directory, `ROOT/run`).
pub const FD_LOCK: &str = "hotcode-lock";
/// The name of the control socket among the handed descriptors.
pub const FD_CONTROL: &str = "hotcode-control";
/// The name of the channel between the old and the new process.
pub const FD_HANDOVER: &str = "hotcode-handover";

/// The `.app` parameter that lists the modules whose gen_servers hand their state to their
/// successor across a host restart: `{env, [{hotcode_handover, [Module]}]}`.
pub const HANDOVER_ENV: &str = "hotcode_handover";

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The largest frame read from the channel: a state export of a big process fits, a
/// garbage length does not make the node allocate gigabytes.
const MAX_FRAME: usize = 256 << 20;

/// How long the old process waits for the new one's `serving` after `go`.
pub const SERVING_TIMEOUT: Duration = Duration::from_secs(30);

/// Restarting the host failed. The old node keeps serving; nothing on disk changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestartError {
    /// The node was not given a way to restart its host (an embedder that did not call
    /// `ReleaseHandler::set_host_restart`).
    #[error(
        "this node cannot restart its host: no host restart is configured (hotcode boot \
         configures one)"
    )]
    NotConfigured,
    /// The host binary is missing, untrusted, or not the one the release recorded.
    #[error("{}: {problem}", binary.display())]
    Binary {
        /// The binary.
        binary: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The new process could not be started.
    #[error("cannot start the new host {}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The new process exited (or said it failed) before it was ready.
    #[error(
        "the new host (pid {pid}, {}) {status} before it was ready{}",
        binary.display(),
        reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
    )]
    Exited {
        /// Its pid.
        pid: u32,
        /// Its binary.
        binary: PathBuf,
        /// How it ended (`exited with code 1`, `was killed by signal 9`).
        status: String,
        /// Why, as it said over the channel, if it did.
        reason: Option<String>,
    },
    /// The new process did not report ready in time; it was killed.
    #[error(
        "the new host (pid {pid}, {}) was not ready within {} ms; it was killed",
        binary.display(),
        after.as_millis()
    )]
    NotReady {
        /// Its pid.
        pid: u32,
        /// Its binary.
        binary: PathBuf,
        /// The ready timeout.
        after: Duration,
    },
    /// The channel between the two processes broke the protocol or failed.
    #[error("the host handover channel: {detail}")]
    Protocol {
        /// What happened.
        detail: String,
    },
    /// The descriptors this process was started with (`LISTEN_FDS`) are not usable.
    #[error("inherited descriptors (LISTEN_FDS): {0}")]
    Inherited(String),
}

fn protocol(detail: impl Into<String>) -> RestartError {
    RestartError::Protocol { detail: detail.into() }
}

/// How a front lets the release handler restart the host: what to run, with which
/// arguments, and which descriptors to hand over. `hotcode boot` gives its own.
pub struct HostRestart {
    /// The running binary: the one restarted when the release names this very host version
    /// and the root holds no binary of its own for it (`ctl restart` after the binary at
    /// that path was replaced runs the new file).
    pub exe: PathBuf,
    /// The new process's arguments after `argv[0]` (`hotcode boot` passes its own).
    pub args: Vec<OsString>,
    /// The descriptors to hand over, by name (the root's lock under [`FD_LOCK`], the
    /// control socket under [`FD_CONTROL`], the fronts' listeners). Each restart hands
    /// duplicates; these stay open in this process.
    pub fds: Vec<(String, OwnedFd)>,
    /// How long the new process has to report ready.
    pub ready_timeout: Duration,
}

impl std::fmt::Debug for HostRestart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRestart")
            .field("exe", &self.exe)
            .field("args", &self.args)
            .field("fds", &self.fds.iter().map(|(n, fd)| (n, fd.as_raw_fd())).collect::<Vec<_>>())
            .field("ready_timeout", &self.ready_timeout)
            .finish()
    }
}

/// What the new node is asked to do: boot `boot`, then continue the install of `continue_install`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The old process's pid.
    pub old_pid: u32,
    /// The release the new node boots (the old node's current release).
    pub boot: String,
    /// The release whose install the new node continues after booting: the rest of a
    /// script that began with `restart_new_emulator`.
    pub continue_install: Option<String>,
}

impl Hello {
    fn to_term(&self) -> Term {
        Term::tuple([
            Term::atom("hello"),
            Term::Int(i64::from(self.old_pid)),
            Term::Str(self.boot.clone()),
            self.continue_install.clone().map_or_else(|| Term::atom("undefined"), Term::Str),
        ])
    }

    fn from_term(term: &Term) -> Result<Hello, RestartError> {
        let bad = || protocol(format!("expected {{hello, OldPid, BootVsn, Continue}}, got {term}"));
        let Some([tag, pid, boot, cont]) = term.as_tuple() else { return Err(bad()) };
        if !tag.is_atom("hello") {
            return Err(bad());
        }
        let old_pid = pid.as_int().and_then(|p| u32::try_from(p).ok()).ok_or_else(bad)?;
        let boot = boot.as_str().ok_or_else(bad)?.to_owned();
        let continue_install = match cont {
            c if c.is_atom("undefined") => None,
            c => Some(c.as_str().ok_or_else(bad)?.to_owned()),
        };
        Ok(Hello { old_pid, boot, continue_install })
    }
}

/// The states handed from the old node to the new: per module, in the order of the
/// supervision trees, the vsn that made each state and the state as that vsn exported it.
pub type HandedStates = Vec<(String, Vec<(String, Term)>)>;

fn states_to_term(states: &HandedStates) -> Term {
    Term::list(states.iter().map(|(module, list)| {
        Term::tuple([
            Term::atom(module.clone()),
            Term::list(
                list.iter()
                    .map(|(vsn, state)| Term::tuple([Term::Str(vsn.clone()), state.clone()])),
            ),
        ])
    }))
}

fn states_from_term(term: &Term) -> Result<HandedStates, RestartError> {
    let bad = || protocol("expected [{Module, [{Vsn, State}]}] in go");
    let mut states = Vec::new();
    for item in term.as_list().ok_or_else(bad)? {
        let Some([module, list]) = item.as_tuple() else { return Err(bad()) };
        let module = module.as_atom().ok_or_else(bad)?.to_owned();
        let mut each = Vec::new();
        for one in list.as_list().ok_or_else(bad)? {
            let Some([vsn, state]) = one.as_tuple() else { return Err(bad()) };
            each.push((vsn.as_str().ok_or_else(bad)?.to_owned(), state.clone()));
        }
        states.push((module, each));
    }
    Ok(states)
}

/// Writes one framed term.
fn write_frame(mut stream: &UnixStream, term: &Term) -> io::Result<()> {
    let bytes = term.encode();
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&bytes);
    stream.write_all(&frame)?;
    stream.flush()
}

/// What reading a frame found.
enum Frame {
    Term(Term),
    /// The other end closed the channel (it exited, most likely).
    Closed,
    /// Nothing whole arrived by the deadline.
    TimedOut,
}

/// Reads one framed term, waiting at most until `deadline`.
fn read_frame(mut stream: &UnixStream, deadline: Instant) -> Result<Frame, RestartError> {
    let mut read_exact = |buf: &mut [u8]| -> Result<Option<bool>, RestartError> {
        let mut at = 0;
        while at < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Some(false));
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| protocol(format!("cannot set a read timeout: {e}")))?;
            match stream.read(&mut buf[at..]) {
                Ok(0) => return Ok(None),
                Ok(n) => at += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // A peer that died with data unread resets the connection: it is gone.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(protocol(format!("read: {e}"))),
            }
        }
        Ok(Some(true))
    };
    let mut len = [0u8; 4];
    match read_exact(&mut len)? {
        None => return Ok(Frame::Closed),
        Some(false) => return Ok(Frame::TimedOut),
        Some(true) => {}
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(protocol(format!("a frame of {len} bytes, more than {MAX_FRAME}")));
    }
    let mut bytes = vec![0u8; len];
    match read_exact(&mut bytes)? {
        None => return Ok(Frame::Closed),
        Some(false) => return Ok(Frame::TimedOut),
        Some(true) => {}
    }
    Term::decode(&bytes).map(Frame::Term).map_err(|e| protocol(format!("a bad frame: {e}")))
}

/// A new host process that reported ready: the old node's side of the rest of the
/// handover. Dropping it without [`Successor::go`] kills the new process (the old one
/// serves on).
#[derive(Debug)]
pub struct Successor {
    child: Child,
}

impl Successor {
    /// The new process's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid_u32()
    }

    /// The binary it runs.
    pub fn binary(&self) -> &Path {
        &self.child.binary
    }

    /// Step 3 and 4 of the handover: sends `states` and `go`, then waits (at most
    /// `timeout`) for the new node to say it serves. Call it once this node accepts
    /// nothing more and has finished what it read. On an error the new process may or may
    /// not serve: this process must exit so that the service manager decides (a new
    /// process that serves holds the root's lock; one that died left it free).
    pub fn go(mut self, states: &HandedStates, timeout: Duration) -> Result<u32, RestartError> {
        let pid = self.pid();
        let go = Term::tuple([Term::atom("go"), states_to_term(states)]);
        write_frame(&self.child.channel, &go).map_err(|e| protocol(format!("sending go: {e}")))?;
        let answer = read_frame(&self.child.channel, Instant::now() + timeout)?;
        // From here the new process lives on its own: never kill it.
        self.child.detach();
        match answer {
            Frame::Term(t) if t.is_atom("serving") => Ok(pid),
            Frame::Term(t) => Err(protocol(format!("expected serving, got {t}"))),
            Frame::Closed => Err(protocol(format!("the new host (pid {pid}) closed the channel"))),
            Frame::TimedOut => Err(protocol(format!(
                "the new host (pid {pid}) did not say it serves within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// The old process, as the new node sees it: the other end of the handover.
#[derive(Debug)]
pub struct Predecessor {
    channel: UnixStream,
    /// What the old node asked for.
    pub hello: Hello,
}

impl Predecessor {
    /// Step 2: tells the old node that this one is ready (booted, and the install it
    /// continues done), and serves nothing until [`Predecessor::wait_go`].
    pub fn ready(&self) -> Result<(), RestartError> {
        let pid = std::process::id();
        write_frame(&self.channel, &Term::tuple([Term::atom("ready"), Term::Int(pid.into())]))
            .map_err(|e| protocol(format!("sending ready: {e}")))
    }

    /// Tells the old node why this one cannot take over; the caller then exits.
    pub fn failed(&self, reason: &str) {
        let failed = Term::tuple([Term::atom("failed"), Term::Str(reason.to_owned())]);
        if let Err(e) = write_frame(&self.channel, &failed) {
            log::warn!("cannot tell the old node why this one failed: {e}");
        }
    }

    /// Step 3, the new side: waits for `go` and the states. `Ok(None)` when the old
    /// process is gone without sending it (it died: this node takes over alone). After
    /// `timeout` the old process is killed if it is still this one's parent, so that two
    /// processes never serve; then `Ok(None)`.
    pub fn wait_go(&self, timeout: Duration) -> Result<Option<HandedStates>, RestartError> {
        match read_frame(&self.channel, Instant::now() + timeout)? {
            Frame::Term(t) => match t.as_tuple() {
                Some([tag, states]) if tag.is_atom("go") => Ok(Some(states_from_term(states)?)),
                _ => Err(protocol(format!("expected {{go, States}}, got {t}"))),
            },
            Frame::Closed => Ok(None),
            Frame::TimedOut => {
                let old = self.hello.old_pid;
                // SAFETY: getppid(2) has no preconditions and touches no memory.
                let parent = unsafe { libc::getppid() };
                if u32::try_from(parent).ok() == Some(old) {
                    log::error!(
                        "the old node (pid {old}) sent no go within {} ms; killing it",
                        timeout.as_millis()
                    );
                    // SAFETY: kill(2) touches no memory. `parent` is our parent's pid, which
                    // cannot be reused while it is our parent (we would be reparented first).
                    unsafe { libc::kill(parent, libc::SIGKILL) };
                }
                Ok(None)
            }
        }
    }

    /// Step 4: tells the old node that this one serves; the old one exits.
    pub fn serving(self) {
        if let Err(e) = write_frame(&self.channel, &Term::atom("serving")) {
            log::warn!("cannot tell the old node that this one serves: {e}");
        }
    }
}

/// The descriptors this process was started with, by name: systemd's socket activation
/// (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), from systemd or from the node this one
/// replaces. Read once per process ([`Inherited::from_env`]).
#[derive(Debug, Default)]
pub struct Inherited {
    fds: Vec<(String, OwnedFd)>,
}

impl Inherited {
    /// Takes the descriptors `3 .. 3 + LISTEN_FDS` if `LISTEN_PID` is this process's pid
    /// (else none: the variables were meant for another process), marking each
    /// close-on-exec. Only the first call in a process takes them; later calls find none.
    /// The variables stay set (changing the environment of a running program is not
    /// thread-safe); children this node starts get their own.
    ///
    /// # Errors
    ///
    /// [`RestartError::Inherited`] if the variables are malformed or a descriptor they
    /// name is not open.
    pub fn from_env() -> Result<Inherited, RestartError> {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        let bad = |what: String| RestartError::Inherited(what);
        let Some(pid) = std::env::var_os("LISTEN_PID") else { return Ok(Inherited::default()) };
        let pid = pid.to_str().and_then(|p| p.parse::<u32>().ok());
        if pid != Some(std::process::id()) {
            return Ok(Inherited::default());
        }
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(Inherited::default());
        }
        let count = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<RawFd>().ok())
            .filter(|n| (0..=1024).contains(n))
            .ok_or_else(|| bad("LISTEN_FDS is not a number of descriptors".into()))?;
        let names: Vec<String> = match std::env::var("LISTEN_FDNAMES") {
            Ok(names) => names.split(':').map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        };
        let mut fds = Vec::new();
        for i in 0..count {
            let raw = LISTEN_FDS_START + i;
            // SAFETY: fcntl(2) F_GETFD on a descriptor number only reads its flags.
            let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
            if flags < 0 {
                return Err(bad(format!("descriptor {raw} is not open")));
            }
            // SAFETY: as above; F_SETFD sets the close-on-exec flag of that descriptor.
            if unsafe { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
                return Err(bad(format!("descriptor {raw}: {}", io::Error::last_os_error())));
            }
            // SAFETY: the descriptor is open (checked above) and was given to this process
            // by its parent under the LISTEN_FDS protocol for this very pid; `TAKEN` makes
            // sure it is wrapped (and so owned and closed) once only.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let index = usize::try_from(i).unwrap_or(usize::MAX);
            let name = names.get(index).cloned().unwrap_or_else(|| "unknown".to_owned());
            fds.push((name, fd));
        }
        Ok(Inherited { fds })
    }

    /// The descriptor named `name`, if one was inherited (the first of that name).
    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        let at = self.fds.iter().position(|(n, _)| n == name)?;
        Some(self.fds.remove(at).1)
    }

    /// The old process this one replaces, if it was started by one: takes [`FD_HANDOVER`]
    /// and reads the old node's `hello` (at most `timeout`).
    pub fn predecessor(&mut self, timeout: Duration) -> Result<Option<Predecessor>, RestartError> {
        let Some(fd) = self.take(FD_HANDOVER) else { return Ok(None) };
        let channel = UnixStream::from(fd);
        match read_frame(&channel, Instant::now() + timeout)? {
            Frame::Term(t) => Ok(Some(Predecessor { hello: Hello::from_term(&t)?, channel })),
            Frame::Closed => Err(protocol("the old node closed the channel before its hello")),
            Frame::TimedOut => Err(protocol("no hello from the old node")),
        }
    }

    /// The names of the descriptors not taken yet.
    pub fn names(&self) -> Vec<&str> {
        self.fds.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Whether this process was started by a node it is to replace: its `LISTEN_*` variables
/// are its own and name a [`FD_HANDOVER`] descriptor. Reads only the environment, so it
/// can be asked before [`Inherited::from_env`] takes the descriptors.
pub fn started_by_predecessor() -> bool {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    ours && std::env::var("LISTEN_FDNAMES").is_ok_and(|n| n.split(':').any(|n| n == FD_HANDOVER))
}

/// A started new host process, killed and reaped when dropped unless detached.
#[derive(Debug)]
struct Child {
    pid: libc::pid_t,
    /// A descriptor that becomes readable when the process exits (`pidfd_open(2)`), if the
    /// kernel has them.
    pidfd: Option<OwnedFd>,
    channel: UnixStream,
    binary: PathBuf,
    detached: bool,
}

impl Child {
    fn pid_u32(&self) -> u32 {
        u32::try_from(self.pid).unwrap_or(0)
    }

    fn detach(&mut self) {
        self.detached = true;
    }

    /// Kills (SIGKILL) and reaps the process; returns how it ended.
    fn kill(&mut self) -> String {
        // SAFETY: kill(2) touches no memory; the pid is our unreaped child's, so it cannot
        // have been reused by another process.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.reap()
    }

    /// Waits for the (exiting) process and describes how it ended.
    fn reap(&mut self) -> String {
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: waitpid(2) on our own child; `status` is a valid out-pointer.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc == self.pid {
                self.detached = true;
                return describe_status(status);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                self.detached = true;
                return format!("ended (waitpid: {e})");
            }
        }
    }

    /// Waits at most `timeout` for the process to exit on its own; how it ended, if it did.
    fn wait_exit(&mut self, timeout: Duration) -> Option<String> {
        let Some(pidfd) = &self.pidfd else { return None };
        let mut poll = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one initialised pollfd that lives across the call, count 1; its fd is the
        // pidfd this struct owns.
        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
        (ready > 0).then(|| self.reap())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.detached {
            let how = self.kill();
            log::info!("the new host (pid {}) was stopped: {how}", self.pid);
        }
    }
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended with wait status {status}")
    }
}

/// Starts `binary` as the new host, hands it `fds` and the channel, says `hello`, and
/// waits at most `ready_timeout` for it to report ready. On any failure the new process
/// is killed and reaped, and the error says why (its exit status and its own reason).
pub(crate) fn start_successor(
    binary: &Path,
    args: &[OsString],
    fds: &[(String, OwnedFd)],
    hello: &Hello,
    ready_timeout: Duration,
) -> Result<Successor, RestartError> {
    let spawn_error = |source: io::Error| RestartError::Spawn { binary: binary.to_owned(), source };
    let (ours, theirs) = UnixStream::pair().map_err(spawn_error)?;
    let mut handed: Vec<(String, OwnedFd)> = Vec::with_capacity(fds.len() + 1);
    for (name, fd) in fds {
        handed.push((name.clone(), fd.try_clone().map_err(spawn_error)?));
    }
    handed.push((FD_HANDOVER.to_owned(), OwnedFd::from(theirs)));
    let pid = spawn_with_fds(binary, args, &handed).map_err(spawn_error)?;
    drop(handed);
    let pidfd = pidfd_open(pid);
    let mut child = Child { pid, pidfd, channel: ours, binary: binary.to_owned(), detached: false };
    log::info!("started the new host {} (pid {pid})", binary.display());
    let deadline = Instant::now() + ready_timeout;
    if let Err(e) = write_frame(&child.channel, &hello.to_term()) {
        // It closed its end already: it is exiting.
        let status = child.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| child.kill());
        return Err(RestartError::Exited {
            pid: child.pid_u32(),
            binary: binary.to_owned(),
            status,
            reason: Some(format!("the channel closed ({e})")),
        });
    }
    let exited = |child: &mut Child, reason: Option<String>| {
        // It closed the channel or said it failed: it exits by itself, or is made to.
        let status = child.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| child.kill());
        RestartError::Exited { pid: child.pid_u32(), binary: binary.to_owned(), status, reason }
    };
    match read_frame(&child.channel, deadline) {
        Ok(Frame::Term(t)) => match t.as_tuple() {
            Some([tag, pid]) if tag.is_atom("ready") && pid.as_int() == Some(child.pid.into()) => {
                log::info!("the new host (pid {}) is ready", child.pid);
                super::fault_point("restart: the new host is ready");
                Ok(Successor { child })
            }
            Some([tag, reason]) if tag.is_atom("failed") => {
                let reason = reason.as_str().map_or_else(|| reason.to_string(), str::to_owned);
                Err(exited(&mut child, Some(reason)))
            }
            _ => {
                let status = child.kill();
                Err(protocol(format!(
                    "the new host (pid {}) said {t} instead of {{ready, Pid}}; it {status}",
                    child.pid
                )))
            }
        },
        Ok(Frame::Closed) => Err(exited(&mut child, None)),
        Ok(Frame::TimedOut) => {
            let how = child.kill();
            log::warn!("the new host (pid {}) overran its ready timeout: {how}", child.pid);
            Err(RestartError::NotReady {
                pid: child.pid_u32(),
                binary: binary.to_owned(),
                after: ready_timeout,
            })
        }
        Err(e) => {
            child.kill();
            Err(e)
        }
    }
}

/// A process descriptor for `pid` (`pidfd_open(2)`), or `None` on a kernel without them.
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: the pidfd_open system call takes a pid and flags, no memory.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let raw = RawFd::try_from(raw).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel returned a new descriptor (close-on-exec) that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The environment of the new process: ours without any `LISTEN_*` (meant for us), with
/// `LISTEN_FDS` and `LISTEN_FDNAMES` for `names`. `LISTEN_PID` is added by the child. The
/// crash tests' hook is this process's own: the new one gets
/// [`super::FAULT_ENV_NEW_HOST`]'s value as its [`super::FAULT_ENV`], if it is set.
fn child_env(names: &[&str]) -> Vec<CString> {
    // Meant for this process: the descriptors it was given, and the crash tests' hook.
    let own = |k: &OsString| {
        matches!(k.to_str(), Some("LISTEN_PID" | "LISTEN_FDS" | "LISTEN_FDNAMES"))
            || k.to_str() == Some(super::FAULT_ENV)
            || k.to_str() == Some(super::FAULT_ENV_NEW_HOST)
    };
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !own(k))
        .filter_map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    if let Some(at) = std::env::var_os(super::FAULT_ENV_NEW_HOST) {
        let mut entry = format!("{}=", super::FAULT_ENV).into_bytes();
        entry.extend_from_slice(at.as_bytes());
        env.extend(CString::new(entry));
    }
    env.extend(CString::new(format!("LISTEN_FDS={}", names.len())));
    env.extend(CString::new(format!("LISTEN_FDNAMES={}", names.join(":"))));
    env
}

trait IntoVec {
    fn into_vec(self) -> Vec<u8>;
}

impl IntoVec for OsString {
    fn into_vec(self) -> Vec<u8> {
        std::os::unix::ffi::OsStringExt::into_vec(self)
    }
}

fn c_string(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains a NUL byte"))
    })
}

/// Starts `binary` with `args`, its descriptors `3 ..` being `fds` in order, named in
/// `LISTEN_FDNAMES`, and `LISTEN_PID` its own pid (systemd's convention). Everything the
/// child needs is built before `fork`; between `fork` and `execve` the child calls only
/// async-signal-safe functions and writes only its own copy of memory prepared for it.
fn spawn_with_fds(
    binary: &Path,
    args: &[OsString],
    fds: &[(String, OwnedFd)],
) -> io::Result<libc::pid_t> {
    let count = RawFd::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"))?;
    let path = c_string(binary.as_os_str().as_bytes(), "the binary's path")?;
    let mut argv: Vec<CString> = vec![path.clone()];
    for arg in args {
        argv.push(c_string(arg.as_bytes(), "an argument")?);
    }
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    if names.iter().any(|n| n.contains(':') || n.contains('\0')) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a descriptor name holds ':'"));
    }
    let env = child_env(&names);
    // `LISTEN_PID=` and room for any pid's digits and the NUL, filled in by the child.
    let mut listen_pid: Vec<u8> = b"LISTEN_PID=".to_vec();
    let digits_at = listen_pid.len();
    listen_pid.resize(digits_at + 24, 0);
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(listen_pid.as_ptr().cast());
    env_ptrs.push(std::ptr::null());
    // Every source above the last target, so that no dup2 in the child overwrites a source
    // it has yet to use. These copies are close-on-exec: only the targets survive exec.
    let mut high: Vec<OwnedFd> = Vec::with_capacity(fds.len());
    for (_, fd) in fds {
        // SAFETY: fcntl(2) F_DUPFD_CLOEXEC duplicates a descriptor `fd` owns (open for the
        // call) to the lowest free number at or above the given one; no memory is passed.
        let raw =
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, LISTEN_FDS_START + count) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        high.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    let high_raw: Vec<RawFd> = high.iter().map(AsRawFd::as_raw_fd).collect();
    let pid_digits: *mut u8 = listen_pid.as_mut_ptr().wrapping_add(digits_at);
    // SAFETY: fork(2) has no memory preconditions. In the child (a copy of this process with
    // one thread) only async-signal-safe calls are made before execve or _exit, as POSIX
    // requires after fork in a multi-threaded program: see `exec_child`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the child of fork; every pointer was made valid above and lives in
        // this copy of the memory; see `exec_child`'s contract.
        unsafe { exec_child(&path, &argv_ptrs, &env_ptrs, &high_raw, pid_digits) }
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(high);
    // Keep what the child's pointers pointed into alive until the fork is done.
    drop((argv, env, listen_pid));
    Ok(pid)
}

/// The child's side of [`spawn_with_fds`]: moves each `high[i]` to descriptor `3 + i`,
/// writes its pid into `LISTEN_PID`, resets the signal mask and SIGPIPE, and execs.
/// Never returns: if execve fails, the child exits 127.
///
/// # Safety
///
/// Must be called only in the child of `fork`, with `argv` and `env` NUL-terminated arrays
/// of pointers to NUL-terminated strings, and `pid_digits` pointing at (at least) 21
/// writable bytes inside the `LISTEN_PID=` entry of `env`. It calls only async-signal-safe
/// functions (dup2, close_range, getpid, sigprocmask, signal, execve, _exit) and allocates
/// nothing.
unsafe fn exec_child(
    path: &CString,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    high: &[RawFd],
    pid_digits: *mut u8,
) -> ! {
    for (i, fd) in high.iter().enumerate() {
        let target = LISTEN_FDS_START + i as RawFd;
        // SAFETY: dup2(2) on descriptors of this process; the target loses close-on-exec.
        if unsafe { libc::dup2(*fd, target) } < 0 {
            // SAFETY: _exit(2) is async-signal-safe and ends the child at once.
            unsafe { libc::_exit(126) };
        }
    }
    // Every other descriptor goes: one that a plugin or a C library opened without
    // O_CLOEXEC must not leak into the new host. The sources of the dup2s above are among
    // them, and are done with.
    let first = u32::try_from(LISTEN_FDS_START as usize + high.len()).unwrap_or(u32::MAX);
    // SAFETY: close_range(2) is a plain system call (async-signal-safe) that only closes
    // descriptors of this process from `first` up; an old kernel without it answers ENOSYS,
    // and then O_CLOEXEC alone applies.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    // SAFETY: getpid(2) is async-signal-safe and touches no memory.
    let mut pid = u64::try_from(unsafe { libc::getpid() }).unwrap_or(0);
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    for i in 0..n {
        // SAFETY: `pid_digits` points at 21 or more writable bytes (the caller's contract);
        // `n` is at most 20, and the NUL goes at index `n`.
        unsafe { *pid_digits.add(i) = digits[n - 1 - i] };
    }
    // SAFETY: as above, index `n` <= 20.
    unsafe { *pid_digits.add(n) = 0 };
    // SAFETY: sigset_t is plain data; sigemptyset and sigprocmask only write and read it,
    // and both are async-signal-safe.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // Rust programs ignore SIGPIPE; an ignored signal stays ignored across execve, which
        // the new program may not expect (std's Command resets it the same way).
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SAFETY: NUL-terminated arrays of NUL-terminated strings (the caller's contract).
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), env.as_ptr()) };
    // SAFETY: _exit(2) is async-signal-safe and ends the child at once.
    unsafe { libc::_exit(127) }
}

/// Tells the service manager `state` (`sd_notify(3)`: `READY=1`, `MAINPID=N`) if it
/// asked to be told (`NOTIFY_SOCKET` is set); a node outside systemd ignores it.
pub fn sd_notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = (|| -> io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = socket.as_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), Path::new(OsStr::from_bytes(bytes)))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        log::warn!("sd_notify {state:?} to {}: {e}", socket.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_states_read_back() {
        let hello = Hello { old_pid: 42, boot: "A".into(), continue_install: Some("B".into()) };
        assert_eq!(Hello::from_term(&hello.to_term()).expect("hello"), hello);
        let plain = Hello { continue_install: None, ..hello };
        assert_eq!(Hello::from_term(&plain.to_term()).expect("hello"), plain);
        let states: HandedStates =
            vec![("svc_handler".into(), vec![("1".into(), Term::list([Term::Int(3)]))])];
        assert_eq!(states_from_term(&states_to_term(&states)).expect("states"), states);
        assert!(Hello::from_term(&Term::atom("hello")).is_err());
    }

    #[test]
    fn frames_cross_a_socket_and_a_closed_end_is_seen() {
        let (a, b) = UnixStream::pair().expect("pair");
        let term = Term::tuple([Term::atom("ready"), Term::Int(7)]);
        write_frame(&a, &term).expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(read_frame(&b, deadline), Ok(Frame::Term(t)) if t == term));
        drop(a);
        assert!(matches!(read_frame(&b, deadline), Ok(Frame::Closed)));
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (_a, b) = UnixStream::pair().expect("pair");
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(matches!(read_frame(&b, deadline), Ok(Frame::TimedOut)));
    }

    #[test]
    fn a_huge_length_is_refused_without_allocating_it() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        a.write_all(&u32::MAX.to_be_bytes()).expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(read_frame(&b, deadline), Err(RestartError::Protocol { .. })));
    }
}
