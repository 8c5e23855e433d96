//! A TCP front end for a gen_server: the host side of the service example.
//!
//! The service's request handling is a plugin (a gen_server), so it can be upgraded while
//! connections stay open. This front end owns the sockets and a fixed pool of threads: each
//! request line a client sends becomes one `call` of the handler process (a `Str` term), and
//! the reply term's text goes back as one line. When the handler is being upgraded its
//! process is suspended and calls simply wait; when it was restarted the front end finds
//! the new process the way release handling does (by module) and retries once.
//!
//! # Handing the service to a new host process
//!
//! When the host restarts (SPEC §11), the listening socket goes to the new process
//! ([`LineServer::listener_fd`], [`LineServer::from_listener`]) and this one
//! [drains](LineServer::drain): it stops accepting (connections wait in the socket's
//! queue), answers every request line it has read, and closes each connection between two
//! requests by shutting down its sending side first, so the answer before it always
//! arrives. A line read after that is dropped unanswered, and a client that sees its
//! connection end without an answer knows its request was not applied: [`LoadGen`]
//! reconnects and sends it again. The new process starts paused (`accepting = false`) and
//! [resumes](LineServer::resume_accepting) once the old one has finished.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel;
use plugin_api::Term;

use crate::runtime::node::NodeRef;
use crate::runtime::process::{Pid, ProcessError};

/// How long one request may wait for the handler (including a suspension).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an idle thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Counters of a running front end.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered by the handler.
    pub answered: AtomicU64,
    /// Requests that got an `ERR unavailable` because no handler answered.
    pub failed: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

/// What [`LineServer::drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Connections open when the drain began.
    pub connections: usize,
    /// Connections still open at the deadline, closed at once.
    pub forced: usize,
    /// How long it took.
    pub took: Duration,
}

/// One open connection, as the drain sees it.
struct Conn {
    stream: TcpStream,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// A request line was read and its answer is not written yet.
    busy: bool,
    /// The sending side is shut down: nothing more is answered on it.
    write_shut: bool,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the acceptor, the pool and the drain share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    draining: AtomicBool,
    /// Whether the acceptor accepts; held around each accept, so that once [`LineServer::drain`]
    /// has set it false and taken the lock, no accept is under way.
    accepting: Mutex<bool>,
    /// Signalled when `accepting` changes.
    accept_changed: Condvar,
    /// The open connections.
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Signalled when a connection closes.
    closed: Condvar,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, Vec<Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accepting(&self) -> MutexGuard<'_, bool> {
        self.accepting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running front end. Dropping it stops accepting and closes the pool.
pub struct LineServer {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
}

impl LineServer {
    /// Listens on `bind` (e.g. `127.0.0.1:0` for an ephemeral port) and serves each request
    /// line with a call to the process running `module`, from `pool` threads.
    pub fn start(
        node: NodeRef,
        bind: &str,
        module: &str,
        pool: usize,
    ) -> std::io::Result<LineServer> {
        LineServer::from_listener(node, TcpListener::bind(bind)?, module, pool, true)
    }

    /// Serves on `listener`, a listening socket this process was handed (by the node it
    /// replaces, or by the service manager). With `accepting` false, connections wait in
    /// the socket's queue until [`LineServer::resume_accepting`].
    pub fn from_listener(
        node: NodeRef,
        listener: TcpListener,
        module: &str,
        pool: usize,
        accepting: bool,
    ) -> std::io::Result<LineServer> {
        // Accepting in turns with the poll below: another process may share the socket and
        // take the connection first.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = Arc::new(listener);
        let shared = Arc::new(Shared { accepting: Mutex::new(accepting), ..Shared::default() });
        let stats = Arc::new(Stats::default());
        let (tx, rx) = channel::unbounded::<Arc<Conn>>();
        let mut threads = Vec::new();
        for n in 0..pool.max(1) {
            let (rx, node, shared, stats, module) =
                (rx.clone(), node.clone(), shared.clone(), stats.clone(), module.to_owned());
            threads.push(std::thread::Builder::new().name(format!("svc-pool-{n}")).spawn(
                move || {
                    let mut handler: Option<Pid> = None;
                    while !shared.stop.load(Ordering::Relaxed) {
                        match rx.recv_timeout(POLL) {
                            Ok(conn) => {
                                serve(&node, &module, &mut handler, &conn, &shared, &stats);
                                let mut conns = shared.conns();
                                conns.retain(|c| !Arc::ptr_eq(c, &conn));
                                drop(conns);
                                shared.closed.notify_all();
                            }
                            Err(channel::RecvTimeoutError::Timeout) => {}
                            Err(channel::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                },
            )?);
        }
        let (accept_shared, accept_stats, accept_listener) =
            (shared.clone(), stats.clone(), listener.clone());
        threads.push(std::thread::Builder::new().name("svc-accept".into()).spawn(move || {
            accept_loop(&accept_listener, &accept_shared, &accept_stats, &tx);
        })?);
        log::info!(
            "service listening on {addr} ({pool} pool threads, handler {module}{})",
            if accepting { "" } else { ", paused" }
        );
        Ok(LineServer { addr, listener, shared, stats, threads })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A duplicate of the listening socket, to hand to a new host process: the same
    /// socket, so that no client is refused while the service changes process.
    pub fn listener_fd(&self) -> std::io::Result<OwnedFd> {
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Starts (or starts again) accepting connections.
    pub fn resume_accepting(&self) {
        self.shared.draining.store(false, Ordering::SeqCst);
        *self.shared.accepting() = true;
        self.shared.accept_changed.notify_all();
        log::info!("service on {} accepts connections", self.addr);
    }

    /// Stops accepting (new connections wait in the socket's queue), then closes every open
    /// connection once the request it is serving has been answered (idle ones at once),
    /// shutting down the sending side first so that the last answer arrives; waits for
    /// them at most until `deadline` from now, then closes what is left. A request line
    /// read after its connection was shut down is not served: its client sees the
    /// connection end without an answer.
    pub fn drain(&self, deadline: Duration) -> Drained {
        let started = Instant::now();
        *self.shared.accepting() = false;
        self.shared.draining.store(true, Ordering::SeqCst);
        let mut conns = self.shared.conns();
        let connections = conns.len();
        for conn in conns.iter() {
            let mut state = conn.lock();
            if !state.busy && !state.write_shut {
                let _ = conn.stream.shutdown(Shutdown::Write);
                state.write_shut = true;
            }
        }
        let end = started + deadline;
        while !conns.is_empty() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            conns =
                self.shared.closed.wait_timeout(conns, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        let forced = conns.len();
        for conn in conns.iter() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        drop(conns);
        let took = started.elapsed();
        log::info!(
            "service on {}: drained {connections} connection(s) in {took:?} ({forced} closed at the deadline)",
            self.addr
        );
        Drained { connections, forced, took }
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.accept_changed.notify_all();
        for conn in self.shared.conns().iter() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts connections while accepting is on, handing each to the pool.
fn accept_loop(
    listener: &TcpListener,
    shared: &Shared,
    stats: &Stats,
    tx: &channel::Sender<Arc<Conn>>,
) {
    while !shared.stop.load(Ordering::Relaxed) {
        {
            let mut accepting = shared.accepting();
            while !*accepting && !shared.stop.load(Ordering::Relaxed) {
                accepting = shared
                    .accept_changed
                    .wait_timeout(accepting, POLL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        if !wait_readable(listener, POLL) {
            continue;
        }
        let accepting = shared.accepting();
        if !*accepting {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let conn = Arc::new(Conn { stream, state: Mutex::default() });
                shared.conns().push(conn.clone());
                drop(accepting);
                if tx.send(conn).is_err() {
                    break;
                }
            }
            // Another process sharing the socket took it, or the client gave up.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => log::warn!("accept: {e}"),
        }
    }
}

/// Waits up to `timeout` for a connection to accept; false on timeout or a signal.
fn wait_readable(listener: &TcpListener, timeout: Duration) -> bool {
    let mut pollfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one initialised `pollfd` that lives across the call, matching the count of 1;
    // its fd is the listener's, open for as long as `listener` is borrowed.
    unsafe { libc::poll(&mut pollfd, 1, ms) > 0 }
}

/// Serves one connection until it closes (or the server stops).
fn serve(
    node: &NodeRef,
    module: &str,
    handler: &mut Option<Pid>,
    conn: &Conn,
    shared: &Shared,
    stats: &Stats,
) {
    let stream = &conn.stream;
    // A read timeout lets the thread notice a stop while a client is idle.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_nodelay(true);
    let (Ok(mut writer), Ok(reader)) = (stream.try_clone(), stream.try_clone()) else { return };
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        }
        if !line.ends_with('\n') {
            // The connection ended in the middle of a line: nothing to answer.
            return;
        }
        let request = line.trim_end().to_owned();
        line.clear();
        {
            let mut state = conn.lock();
            if state.write_shut {
                // Drained: this request is not served; its client sees the connection end
                // without an answer, reads that as "not applied", and sends it elsewhere.
                continue;
            }
            state.busy = true;
        }
        let reply = match ask(node, module, handler, &request) {
            Some(reply) => {
                stats.answered.fetch_add(1, Ordering::Relaxed);
                reply
            }
            None => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                "ERR unavailable".to_owned()
            }
        };
        let written = writer.write_all(format!("{reply}\n").as_bytes());
        let mut state = conn.lock();
        state.busy = false;
        if shared.draining.load(Ordering::SeqCst) && !state.write_shut {
            // The answer is queued before the end of the stream: it arrives.
            let _ = stream.shutdown(Shutdown::Write);
            state.write_shut = true;
        }
        drop(state);
        if written.is_err() {
            return;
        }
    }
}

/// One request: call the handler, finding it again once if it was restarted.
fn ask(node: &NodeRef, module: &str, handler: &mut Option<Pid>, request: &str) -> Option<String> {
    for _ in 0..2 {
        let pid = match *handler {
            Some(pid) => pid,
            None => *node.processes_running(module).first()?,
        };
        *handler = Some(pid);
        match node.call(pid, Term::Str(request.to_owned()), CALL_TIMEOUT) {
            Ok(Term::Str(reply)) => return Some(reply),
            Ok(other) => return Some(format!("ERR {other}")),
            Err(ProcessError::NoProc { .. } | ProcessError::Exited { .. }) => *handler = None,
            Err(e) => {
                log::warn!("service: {e}");
                return None;
            }
        }
    }
    None
}

/// What a [`LoadGen`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests sent and answered correctly.
    pub requests: u64,
    /// Requests that failed: no answer, a malformed answer, an error, or a counter that
    /// did not move by exactly one (an update lost or applied twice).
    pub failed: u64,
    /// Correct answers by handler version: `[v1, v2]`.
    pub by_version: [u64; 2],
    /// The first few failures, for the report.
    pub problems: Vec<String>,
    /// The slowest answer, in microseconds, from the request's first send to its answer
    /// (it includes any suspension of the handler, and any reconnection).
    pub max_latency_us: u64,
    /// Connection attempts the server refused (`ECONNREFUSED`).
    pub refused: u64,
    /// Times a client's connection ended before the answer to its request and it sent the
    /// request again on a new connection (a drain at a host restart ends connections so).
    pub reconnects: u64,
}

/// How long a client keeps trying to reach the server before its request counts as failed.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// Client threads that hammer a [`LineServer`] with `INCR` and check every reply.
///
/// Each client owns one key, so it knows the exact value each answer must carry: the
/// previous value plus one, whichever version answered. A connection that ends before
/// the answer is opened again and the request sent again: the server never reads a line
/// it does not answer (see the [module docs](self)), so that request was not applied.
/// Stops on [`LoadGen::finish`].
pub struct LoadGen {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<LoadReport>>,
    /// Correct answers so far by handler version, `[v1, v2]`, over all clients.
    answered: Arc<[AtomicU64; 2]>,
}

impl LoadGen {
    /// Starts `clients` client threads against `addr`; keys are `<prefix>-<n>`.
    pub fn start(addr: SocketAddr, clients: usize, prefix: &str) -> std::io::Result<LoadGen> {
        LoadGen::start_from(addr, clients, prefix, 1)
    }

    /// [`LoadGen::start`], for keys whose counters stand at `first - 1` already (a server
    /// that kept them across a restart of the load generator).
    pub fn start_from(
        addr: SocketAddr,
        clients: usize,
        prefix: &str,
        first: i64,
    ) -> std::io::Result<LoadGen> {
        let stop = Arc::new(AtomicBool::new(false));
        let answered: Arc<[AtomicU64; 2]> = Arc::default();
        let mut handles = Vec::new();
        for n in 0..clients {
            let conn = TcpStream::connect(addr)?;
            conn.set_nodelay(true)?;
            let (stop, answered, key) = (stop.clone(), answered.clone(), format!("{prefix}-{n}"));
            handles.push(
                std::thread::Builder::new()
                    .name(format!("client-{n}"))
                    .spawn(move || client(addr, conn, &key, first, &stop, &answered))?,
            );
        }
        Ok(LoadGen { stop, clients: handles, answered })
    }

    /// Correct answers so far, over all clients.
    pub fn answered(&self) -> u64 {
        self.answered_by_version().iter().sum()
    }

    /// Correct answers so far by handler version, `[v1, v2]`, over all clients: lets a
    /// caller wait until the clients have been answered by the version it installed.
    pub fn answered_by_version(&self) -> [u64; 2] {
        [0, 1].map(|i| self.answered[i].load(Ordering::Relaxed))
    }

    /// Stops the clients and adds up what they saw.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for c in self.clients {
            let r = c.join().unwrap_or_else(|_| LoadReport {
                failed: 1,
                problems: vec!["a client thread panicked".into()],
                ..LoadReport::default()
            });
            total.requests += r.requests;
            total.failed += r.failed;
            total.by_version[0] += r.by_version[0];
            total.by_version[1] += r.by_version[1];
            total.max_latency_us = total.max_latency_us.max(r.max_latency_us);
            total.refused += r.refused;
            total.reconnects += r.reconnects;
            total
                .problems
                .extend(r.problems.into_iter().take(5usize.saturating_sub(total.problems.len())));
        }
        total
    }
}

/// One client's connection: a reader and a writer on one socket.
struct Link {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Link {
    fn new(conn: TcpStream) -> std::io::Result<Link> {
        let writer = conn.try_clone()?;
        Ok(Link { reader: BufReader::new(conn), writer })
    }
}

/// Connects to `addr` until it works, `stop` is set, or the deadline passes; counts the
/// refusals.
fn reconnect(addr: SocketAddr, stop: &AtomicBool, report: &mut LoadReport) -> Result<Link, String> {
    let deadline = Instant::now() + RECONNECT_DEADLINE;
    loop {
        match TcpStream::connect(addr) {
            Ok(conn) => {
                let _ = conn.set_nodelay(true);
                return Link::new(conn).map_err(|e| format!("cannot clone the connection: {e}"));
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    report.refused += 1;
                }
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    return Err(format!("cannot connect to {addr}: {e}"));
                }
                // Not a synchronisation: a pause between attempts to reach a server that
                // refused, so that a client does not spin on it.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn client(
    addr: SocketAddr,
    conn: TcpStream,
    key: &str,
    first: i64,
    stop: &AtomicBool,
    answered: &[AtomicU64; 2],
) -> LoadReport {
    let mut report = LoadReport::default();
    let fail = |report: &mut LoadReport, what: String| {
        report.failed += 1;
        if report.problems.len() < 5 {
            report.problems.push(what);
        }
    };
    let mut link = match Link::new(conn) {
        Ok(link) => Some(link),
        Err(e) => {
            fail(&mut report, format!("cannot clone the connection: {e}"));
            return report;
        }
    };
    let mut expected = first;
    let mut line = String::new();
    let request = format!("INCR {key}\n");
    'requests: while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        // Until this request is answered: a connection that ends first is opened again.
        loop {
            let current = match link.as_mut() {
                Some(current) => current,
                None => match reconnect(addr, stop, &mut report) {
                    Ok(new) => link.insert(new),
                    Err(why) => {
                        if !stop.load(Ordering::Relaxed) {
                            fail(&mut report, format!("{key}: {why}"));
                        }
                        break 'requests;
                    }
                },
            };
            line.clear();
            let answered_here = current.writer.write_all(request.as_bytes()).is_ok()
                && current.reader.read_line(&mut line).is_ok_and(|n| n > 0)
                && line.ends_with('\n');
            if answered_here {
                break;
            }
            report.reconnects += 1;
            link = None;
        }
        let latency = sent.elapsed().as_micros() as u64;
        report.max_latency_us = report.max_latency_us.max(latency);
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["OK", value, vsn @ ("v1" | "v2")] if value.parse::<i64>() == Ok(expected) => {
                let by = usize::from(*vsn == "v2");
                report.requests += 1;
                report.by_version[by] += 1;
                answered[by].fetch_add(1, Ordering::Relaxed);
                expected += 1;
            }
            ["OK", value, _] if value.parse::<i64>().is_ok() => {
                fail(&mut report, format!("{key}: expected {expected}, got {}", line.trim_end()));
                expected = value.parse::<i64>().unwrap_or(expected) + 1;
            }
            _ => fail(&mut report, format!("{key}: bad reply {:?}", line.trim_end())),
        }
    }
    report
}
