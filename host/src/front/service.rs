//! A TCP front end for a gen_server: the host side of the service example.
//!
//! The service's request handling is a plugin (a gen_server), so it can be upgraded while
//! connections stay open. This front end owns the sockets and a fixed pool of threads: each
//! request line a client sends becomes one `call` of the handler process (a `Str` term), and
//! the reply term's text goes back as one line. When the handler is being upgraded its
//! process is suspended and calls simply wait; when it was restarted the front end finds
//! the new process the way release handling does (by module) and retries once.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel;
use plugin_api::Term;

use crate::runtime::node::NodeRef;
use crate::runtime::process::{Pid, ProcessError};

/// How long one request may wait for the handler (including a suspension).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A running front end. Dropping it stops accepting and closes the pool.
pub struct LineServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
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
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (tx, rx) = channel::unbounded::<TcpStream>();
        let mut threads = Vec::new();
        for n in 0..pool.max(1) {
            let (rx, node, stop, stats, module) =
                (rx.clone(), node.clone(), stop.clone(), stats.clone(), module.to_owned());
            threads.push(std::thread::Builder::new().name(format!("svc-pool-{n}")).spawn(
                move || {
                    let mut handler: Option<Pid> = None;
                    while !stop.load(Ordering::Relaxed) {
                        match rx.recv_timeout(Duration::from_millis(50)) {
                            Ok(conn) => serve(&node, &module, &mut handler, conn, &stop, &stats),
                            Err(channel::RecvTimeoutError::Timeout) => {}
                            Err(channel::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                },
            )?);
        }
        let (accept_stop, accept_stats) = (stop.clone(), stats.clone());
        threads.push(std::thread::Builder::new().name("svc-accept".into()).spawn(move || {
            // Blocking accept; `Drop` wakes it with a connection of its own after setting
            // the stop flag.
            for conn in listener.incoming() {
                if accept_stop.load(Ordering::Relaxed) {
                    break;
                }
                match conn {
                    Ok(conn) => {
                        accept_stats.connections.fetch_add(1, Ordering::Relaxed);
                        if tx.send(conn).is_err() {
                            break;
                        }
                    }
                    Err(e) => log::warn!("accept: {e}"),
                }
            }
        })?);
        log::info!("service listening on {addr} ({pool} pool threads, handler {module})");
        Ok(LineServer { addr, stop, stats, threads })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept; if this fails the acceptor was gone already.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Serves one connection until it closes (or the server stops).
fn serve(
    node: &NodeRef,
    module: &str,
    handler: &mut Option<Pid>,
    conn: TcpStream,
    stop: &AtomicBool,
    stats: &Stats,
) {
    // A read timeout lets the thread notice a stop while a client is idle.
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
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
        let request = line.trim_end().to_owned();
        line.clear();
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
        if writer.write_all(format!("{reply}\n").as_bytes()).is_err() {
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
    /// The slowest answer, in microseconds (it includes any suspension of the handler).
    pub max_latency_us: u64,
}

/// Client threads that hammer a [`LineServer`] with `INCR` and check every reply.
///
/// Each client owns one key, so it knows the exact value each answer must carry: the
/// previous value plus one, whichever version answered. Stops on [`LoadGen::finish`].
pub struct LoadGen {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<LoadReport>>,
    /// Correct answers so far by handler version, `[v1, v2]`, over all clients.
    answered: Arc<[AtomicU64; 2]>,
}

impl LoadGen {
    /// Starts `clients` client threads against `addr`; keys are `<prefix>-<n>`.
    pub fn start(addr: SocketAddr, clients: usize, prefix: &str) -> std::io::Result<LoadGen> {
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
                    .spawn(move || client(conn, &key, &stop, &answered))?,
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
            total
                .problems
                .extend(r.problems.into_iter().take(5usize.saturating_sub(total.problems.len())));
        }
        total
    }
}

fn client(conn: TcpStream, key: &str, stop: &AtomicBool, answered: &[AtomicU64; 2]) -> LoadReport {
    let mut report = LoadReport::default();
    let fail = |report: &mut LoadReport, what: String| {
        report.failed += 1;
        if report.problems.len() < 5 {
            report.problems.push(what);
        }
    };
    let Ok(mut writer) = conn.try_clone() else {
        fail(&mut report, "cannot clone the connection".into());
        return report;
    };
    let mut reader = BufReader::new(conn);
    let mut expected = 1i64;
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = std::time::Instant::now();
        if writer.write_all(format!("INCR {key}\n").as_bytes()).is_err() {
            fail(&mut report, "write failed".into());
            break;
        }
        line.clear();
        if reader.read_line(&mut line).map_or(true, |n| n == 0) {
            fail(&mut report, "connection closed".into());
            break;
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
