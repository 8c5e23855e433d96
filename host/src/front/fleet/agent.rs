//! A node's side of a fleet: a thread that runs the ops the fleet queued for this node.
//!
//! Each op is one of `hotcode ctl`'s requests (`unpack`, `install`, `make-permanent`), sent
//! to the node's own control socket with [`control::request`], so it takes the same path
//! and the same turn as an operator's `ctl` would (one release operation at a time), and
//! its answer or error text is what `ctl` would print. `rollback` is two requests:
//! `which-releases --json`, then `install PERMANENT` (a downgrade by the relup) if the node
//! runs another release. If that downgrade fails (no relup leads back, say), a booted node
//! answers the op, then restarts to its permanent release (the agent's [`Reboot`]: `hotcode
//! boot` exits 3, for its service manager to start it again, which boots the permanent
//! release since an installed release is never permanent before its wave passed the
//! gate); a node that cannot restart itself says so in the op's answer.

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

/// How a node restarts to its permanent release when a rollback cannot downgrade it: called
/// once, after the op's answer was written, with the reason to record.
pub type Reboot = Box<dyn Fn(&str) + Send>;

impl Agent {
    /// Starts serving `cluster`'s op queue for the node whose control socket is under
    /// `root` (the socket may not serve yet: requests wait for it). `reboot`, if given, is
    /// how a rollback that cannot downgrade the node restarts it instead.
    pub fn start(
        cluster: Arc<EtcdCluster>,
        root: PathBuf,
        reboot: Option<Reboot>,
    ) -> std::io::Result<Agent> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("fleet-agent".into()).spawn(move || {
            let mut rebooting: Option<String> = None;
            // etcd unreachable for a while is not the end: the node keeps serving, and
            // the queue is read again from the start (answered ops are skipped).
            while !flag.load(Ordering::SeqCst) {
                let served = cluster.member().serve_ops(&flag, |op| {
                    let (result, reboot_for) = run_op(&root, op, reboot.is_some());
                    if let Some(why) = reboot_for {
                        // No further op: the node restarts once this answer is written.
                        rebooting = Some(why);
                        flag.store(true, Ordering::SeqCst);
                    }
                    result
                });
                match served {
                    Ok(()) => break,
                    Err(e) => {
                        log::warn!("fleet agent: {e}; reading the op queue again in 1 s");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
            if let (Some(why), Some(reboot)) = (rebooting, &reboot) {
                reboot(&why);
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

/// Runs one op on the node at `root` (a rollback that cannot downgrade answers an error).
pub fn run(root: &Path, op: &Op) -> OpResult {
    run_op(root, op, false).0
}

/// Runs one op; with `can_reboot`, a rollback that cannot downgrade answers ok and asks
/// for a restart (the reason is returned).
fn run_op(root: &Path, op: &Op, can_reboot: bool) -> (OpResult, Option<String>) {
    let mut reboot_for = None;
    let outcome = match &op.kind {
        OpKind::Unpack { path } => ctl(root, &["unpack", path]),
        // A rollout run again after an abort finds the release current already.
        OpKind::Install { vsn, .. } if current(root).as_deref() == Some(vsn.as_str()) => {
            Ok(format!("ok: release {vsn} is installed (current) already"))
        }
        OpKind::Install { vsn, attempt: None } => ctl(root, &["install", vsn]),
        OpKind::Install { vsn, attempt: Some(a) } => ctl(root, &["install", vsn, "--attempt", a]),
        OpKind::MakePermanent { vsn } => ctl(root, &["make-permanent", vsn]),
        OpKind::Rollback => match rollback(root) {
            Err(Failed::Downgrade { permanent, why }) if can_reboot => {
                let text =
                    format!("ok: {why}; the node restarts on its permanent release {permanent}");
                reboot_for = Some(format!(
                    "fleet rollback: {why}; the node exits with 3 so that its service manager \
                     restarts it on its permanent release {permanent}"
                ));
                Ok(text)
            }
            Err(Failed::Downgrade { permanent, why }) => {
                Err(format!("{why}; restart the node to run its permanent release {permanent}"))
            }
            Err(Failed::Other(why)) => Err(why),
            Ok(text) => Ok(text),
        },
        other => Err(format!("this node does not know the op {}", other.describe())),
    };
    let (ok, text) = match outcome {
        Ok(text) => (true, text),
        Err(text) => (false, text),
    };
    if !ok {
        log::warn!("fleet op {} ({}) failed: {text}", op.id, op.kind.describe());
    }
    (OpResult { id: op.id.clone(), ok, text }, reboot_for)
}

/// Why a rollback failed.
enum Failed {
    /// The downgrade by the relup failed; the node still runs the release it had.
    Downgrade { permanent: String, why: String },
    /// Anything else (the node did not answer, has no permanent release).
    Other(String),
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

/// The node's current (installed, not permanent) release, if it has one and says so.
fn current(root: &Path) -> Option<String> {
    let text = ctl(root, &["which-releases", "--json"]).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    doc["releases"]
        .as_array()?
        .iter()
        .find(|r| r["status"] == "current")
        .and_then(|r| r["vsn"].as_str())
        .map(str::to_owned)
}

/// Back to the permanent release.
fn rollback(root: &Path) -> Result<String, Failed> {
    let text = ctl(root, &["which-releases", "--json"]).map_err(Failed::Other)?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failed::Other(format!("which-releases --json: {e}")))?;
    let releases = doc["releases"].as_array().cloned().unwrap_or_default();
    let with = |status: &str| {
        releases
            .iter()
            .find(|r| r["status"] == status)
            .and_then(|r| r["vsn"].as_str())
            .map(str::to_owned)
    };
    let Some(permanent) = with("permanent") else {
        return Err(Failed::Other("the node has no permanent release".to_owned()));
    };
    let Some(current) = with("current") else {
        return Ok(format!("ok: already on its permanent release {permanent}"));
    };
    ctl(root, &["install", &permanent])
        .map(|answer| format!("ok: from {current} back to {permanent}: {answer}"))
        .map_err(|e| Failed::Downgrade {
            why: format!("no downgrade from {current} back to {permanent}: {e}"),
            permanent,
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
    // A node of this process cannot restart itself: a rollback it cannot downgrade says so.
    let agent = Agent::start(cluster, root.clone(), None)
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
