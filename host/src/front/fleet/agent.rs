//! A node's side of a fleet: a thread that runs the ops the fleet queued for this node.
//!
//! Each op is one of `hotcode ctl`'s requests (`unpack`, `install`, `make-permanent`), sent
//! to the node's own control socket with [`control::request`], so it takes the same path
//! and the same turn as an operator's `ctl` would (one release operation at a time), and
//! its answer or error text is what `ctl` would print. `rollback` is two requests:
//! `which-releases --json`, then `install PERMANENT` (a downgrade by the relup) if the node
//! runs another release. A node whose relup has no way back says so in the op's answer:
//! restarting it boots its permanent release, since an installed release is never
//! permanent before its wave passed the gate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use hotcode_cluster::ops::{Op, OpKind, OpResult};

use crate::front::cluster::EtcdCluster;
use crate::front::control::{self, Control, ControlError, RootLock};
use crate::release_handler::ReleaseHandler;

/// The thread serving a node's op queue; stopped and joined on drop.
pub struct Agent {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    /// Starts serving `cluster`'s op queue for the node whose control socket is under
    /// `root` (the socket may not serve yet: requests wait for it).
    pub fn start(cluster: Arc<EtcdCluster>, root: PathBuf) -> std::io::Result<Agent> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("fleet-agent".into()).spawn(move || {
            // etcd unreachable for a while is not the end: the node keeps serving, and
            // the queue is read again from the start (answered ops are skipped).
            while !flag.load(Ordering::SeqCst) {
                match cluster.member().serve_ops(&flag, |op| run(&root, op)) {
                    Ok(()) => break,
                    Err(e) => {
                        log::warn!("fleet agent: {e}; reading the op queue again in 1 s");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
        })?;
        Ok(Agent { stop, thread: Some(thread) })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs one op on the node at `root`.
pub fn run(root: &Path, op: &Op) -> OpResult {
    let outcome = match &op.kind {
        OpKind::Unpack { path } => ctl(root, &["unpack", path]),
        OpKind::Install { vsn, attempt: None } => ctl(root, &["install", vsn]),
        OpKind::Install { vsn, attempt: Some(a) } => ctl(root, &["install", vsn, "--attempt", a]),
        OpKind::MakePermanent { vsn } => ctl(root, &["make-permanent", vsn]),
        OpKind::Rollback => rollback(root),
        other => Err(format!("this node does not know the op {}", other.describe())),
    };
    let (ok, text) = match outcome {
        Ok(text) => (true, text),
        Err(text) => (false, text),
    };
    if !ok {
        log::warn!("fleet op {} ({}) failed: {text}", op.id, op.kind.describe());
    }
    OpResult { id: op.id.clone(), ok, text }
}

/// One control request; its answer lines, or its error.
fn ctl(root: &Path, fields: &[&str]) -> Result<String, String> {
    let fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    match control::request(root, &fields) {
        Ok((lines, 0)) => Ok(lines.join("\n")),
        Ok((lines, code)) => Err(format!("{} (exit {code})", lines.join("\n"))),
        Err(e) => Err(e.to_string()),
    }
}

/// Back to the permanent release.
fn rollback(root: &Path) -> Result<String, String> {
    let text = ctl(root, &["which-releases", "--json"])?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("which-releases --json: {e}"))?;
    let releases = doc["releases"].as_array().cloned().unwrap_or_default();
    let with = |status: &str| {
        releases
            .iter()
            .find(|r| r["status"] == status)
            .and_then(|r| r["vsn"].as_str())
            .map(str::to_owned)
    };
    let Some(permanent) = with("permanent") else {
        return Err("the node has no permanent release".to_owned());
    };
    let Some(current) = with("current") else {
        return Ok(format!("ok: already on its permanent release {permanent}"));
    };
    ctl(root, &["install", &permanent])
        .map(|answer| format!("ok: from {current} back to {permanent}: {answer}"))
        .map_err(|e| {
            format!(
                "from {current} back to {permanent}: {e}; restart the node to run its permanent \
                 release {permanent}"
            )
        })
}

/// A node of this process served as `hotcode boot --cluster` serves one: the root's lock,
/// the control socket served on a thread of its own, and the op queue served by an
/// [`Agent`]. For the demo, the benchmarks and embedders that run nodes in-process.
/// Dropping it stops the agent, then the socket.
pub struct Served {
    agent: Option<Agent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _lock: RootLock,
}

/// Serves `handler`'s node (which joined `cluster`) to the fleet; see [`Served`].
///
/// # Errors
///
/// The root's lock is held by another node, or the socket cannot be made.
pub fn serve_in_process(
    handler: Arc<ReleaseHandler>,
    cluster: Arc<EtcdCluster>,
) -> Result<Served, ControlError> {
    let root = handler.root().to_owned();
    cluster.set_root(&root);
    let lock = RootLock::acquire(&root)?;
    let control = Control::bind(&lock)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            if let Err(e) = control.serve(&handler, &flag) {
                log::error!("control socket: {e}");
            }
        })
        .map_err(|e| ControlError::Io { path: root.clone(), source: e })?;
    let agent = Agent::start(cluster, root.clone())
        .map_err(|e| ControlError::Io { path: root, source: e })?;
    Ok(Served { agent: Some(agent), stop, thread: Some(thread), _lock: lock })
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.agent.take());
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
