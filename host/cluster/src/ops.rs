//! Release operations the fleet asks of a node, queued in etcd.
//!
//! Whoever drives a fleet (the `hotcode fleet` command, through a [`Driver`](crate::rollout::Driver))
//! writes an [`Op`] at `/hotcode/ops/<node>/<id>`; the node, which watches its own queue
//! ([`Member::serve_ops`]), runs it and writes the [`OpResult`] at
//! `/hotcode/results/<node>/<id>`. An op whose result exists is never run again, so an op is
//! executed once whatever happens to the watch, and a node that restarts does not repeat
//! what it did before. Neither key is bound to a lease: a paused rollout's history outlives
//! the command that wrote it, and a node's answers outlive the node.
//!
//! This module knows nothing of how an op is run: the node hands [`Member::serve_ops`] a
//! function (the host's runs it through the node's control socket, as `hotcode ctl` does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{GetOptions, SortOrder, SortTarget, WatchOptions};
use serde::{Deserialize, Serialize};

use crate::{ClusterError, Member, PREFIX, check_word};

/// One release operation for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the cluster (a word): the rollout's id and a sequence number.
    pub id: String,
    /// What to do.
    pub kind: OpKind,
}

/// What an [`Op`] asks for: each is one of `hotcode ctl`'s operations, or `rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OpKind {
    /// `ctl unpack PATH`: a package or a root-shaped directory the node can read.
    Unpack {
        /// The package's path, as the node sees it.
        path: String,
    },
    /// `ctl install VSN [--attempt ID]`.
    Install {
        /// The release.
        vsn: String,
        /// The upgrade attempt (for relups with `sync_nodes`).
        attempt: Option<String>,
    },
    /// `ctl make-permanent VSN`.
    MakePermanent {
        /// The release.
        vsn: String,
    },
    /// Back to the node's permanent release: a downgrade by its relup (`ctl install
    /// PERMANENT`); nothing to do if the node runs it already.
    Rollback,
}

impl OpKind {
    /// A short description for logs and status (`install 2`).
    pub fn describe(&self) -> String {
        match self {
            OpKind::Unpack { path } => format!("unpack {path}"),
            OpKind::Install { vsn, attempt: None } => format!("install {vsn}"),
            OpKind::Install { vsn, attempt: Some(a) } => format!("install {vsn} --attempt {a}"),
            OpKind::MakePermanent { vsn } => format!("make-permanent {vsn}"),
            OpKind::Rollback => "rollback".to_owned(),
        }
    }
}

/// What a node answered to an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpResult {
    /// The op's id.
    pub id: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The node's answer (`ok: ...`) or its error, as `hotcode ctl` prints them.
    pub text: String,
}

/// Where `node`'s queue is.
pub fn ops_prefix(node: &str) -> String {
    format!("{PREFIX}ops/{node}/")
}

/// Where `node`'s answers are.
pub fn results_prefix(node: &str) -> String {
    format!("{PREFIX}results/{node}/")
}

/// How often an idle node looks at `stop` while it waits for ops.
const WATCH_SLICE: Duration = Duration::from_millis(500);

impl Member {
    /// Runs the ops queued for this node, in the order they were queued, each once, until
    /// `stop` is set: `run` does the work; its result is written beside the op. The queue
    /// is read, then watched from that read on; each new op (or a closed watch) reads it
    /// again. Returns when `stop` is set (looked at between ops, and every half second
    /// while idle), or with an error if etcd fails.
    pub fn serve_ops(
        &self,
        stop: &AtomicBool,
        mut run: impl FnMut(&Op) -> OpResult,
    ) -> Result<(), ClusterError> {
        let ops = ops_prefix(&self.node);
        let results = results_prefix(&self.node);
        while !stop.load(Ordering::SeqCst) {
            let (pending, revision) = self.pending_ops(&ops, &results)?;
            for (key, op) in pending {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let result = match op {
                    Ok(op) => {
                        log::info!(
                            "node {}: fleet op {}: {}",
                            self.node,
                            op.id,
                            op.kind.describe()
                        );
                        run(&op)
                    }
                    Err(why) => OpResult { id: key.clone(), ok: false, text: why },
                };
                let text = serde_json::to_string(&result).unwrap_or_default();
                let mut client = self.client.clone();
                let at = format!("{results}{key}");
                self.rt.block_on(async {
                    client
                        .put(at, text, None)
                        .await
                        .map(drop)
                        .map_err(self.etcd("writing an op's result"))
                })?;
            }
            // Wait for the next op from just after what was read, on one watch, looking at
            // `stop` every slice.
            let mut client = self.client.clone();
            self.rt.block_on(async {
                let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
                let (mut watcher, mut stream) = client
                    .watch(ops.clone(), Some(options))
                    .await
                    .map_err(self.etcd("watching the op queue"))?;
                let outcome = loop {
                    if stop.load(Ordering::SeqCst) {
                        break Ok(());
                    }
                    match tokio::time::timeout(WATCH_SLICE, stream.message()).await {
                        Err(_) => {}
                        Ok(Ok(Some(response))) if response.events().is_empty() => {}
                        Ok(Ok(_)) => break Ok(()),
                        Ok(Err(e)) => break Err(self.etcd("watching the op queue")(e)),
                    }
                };
                let _ = watcher.cancel().await;
                outcome
            })?;
        }
        Ok(())
    }

    /// The ops without a result, oldest first (a key that is no op gets an error result),
    /// and the revision they were read at.
    #[allow(clippy::type_complexity)]
    fn pending_ops(
        &self,
        ops: &str,
        results: &str,
    ) -> Result<(Vec<(String, Result<Op, String>)>, i64), ClusterError> {
        let mut client = self.client.clone();
        self.rt.block_on(async {
            let options =
                GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
            let queued = client
                .get(ops.to_owned(), Some(options))
                .await
                .map_err(self.etcd("reading the op queue"))?;
            let revision = queued.header().map_or(0, |h| h.revision());
            let done = client
                .get(
                    results.to_owned(),
                    Some(GetOptions::new().with_prefix().with_keys_only().with_revision(revision)),
                )
                .await
                .map_err(self.etcd("reading the op results"))?;
            let answered: std::collections::BTreeSet<&str> = done
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok()?.strip_prefix(results))
                .collect();
            let pending = queued
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = kv.key_str().ok()?.strip_prefix(ops)?.to_owned();
                    if answered.contains(key.as_str()) {
                        return None;
                    }
                    let op = match serde_json::from_slice::<Op>(kv.value()) {
                        Ok(op) if op.id == key => Ok(op),
                        Ok(op) => Err(format!("op {key}: its id says {}", op.id)),
                        Err(e) => Err(format!("op {key}: not an op: {e}")),
                    };
                    Some((key, op))
                })
                .collect();
            Ok((pending, revision))
        })
    }
}

/// Checks an op id: one key segment.
pub(crate) fn check_op_id(id: &str) -> Result<(), ClusterError> {
    check_word("op id", id)
}
