//! Release operations the fleet asks of a node, queued in etcd.
//!
//! Whoever drives a fleet (the `hotcode fleet` command, through a [`Driver`](crate::rollout::Driver))
//! writes an [`Op`] at `/hotcode/ops/<node>/<id>`; the node, which watches its own queue
//! ([`Member::serve_ops`]), runs it and writes the [`OpResult`] at
//! `/hotcode/results/<node>/<id>`. An op whose result exists is never run again, so a node
//! that restarts does not repeat what it answered before. An op is run *at least once*,
//! not exactly once: the node runs it, then writes its result, so a node that dies between
//! the two runs it again when it comes back (the release operations are made to be run
//! again: an unpacked release is unpacked, an installed one installed).
//!
//! An op belongs to a rollout (its id is `<rollout>-<n>`): before running one, the node
//! reads the rollout's record ([`state_key`](crate::rollout::state_key)) and runs the op
//! only if that rollout is the current one and is running, or the op is a rollback;
//! otherwise it answers that the op is stale and runs nothing. So a node that was away
//! while its rollout failed, paused or was aborted does not act on it when it comes back.
//! The driver also withdraws the ops nobody answered when a rollout stops
//! ([`Driver::withdraw`](crate::rollout::Driver::withdraw)).
//!
//! Neither key is bound to a lease: a paused rollout's history outlives the command that
//! wrote it, and a node's answers outlive the node.
//!
//! This module knows nothing of how an op is run: the node hands [`Member::serve_ops`] a
//! function (the host's runs it through the node's control socket, as `hotcode ctl` does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{GetOptions, SortOrder, SortTarget, WatchOptions};
use serde::{Deserialize, Serialize};

use crate::rollout::{Phase, parse_state, read_state};
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

/// The start of the answer to an op whose rollout is not running any more.
pub const STALE: &str = "stale:";

/// How often an idle node looks at `stop` while it waits for ops.
const WATCH_SLICE: Duration = Duration::from_millis(500);

impl Member {
    /// Runs the ops queued for this node, in the order they were queued, each once (at
    /// least once if the node dies before writing the result), until `stop` is set: `run`
    /// does the work; its result is written beside the op. An op of a rollout that is not
    /// the current one, or not running (except a rollback), is answered [`STALE`] and not
    /// run. The queue
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
                    Ok(op) => match self.stale(&op)? {
                        Some(why) => {
                            log::warn!("node {}: fleet op {}: {why}", self.node, op.id);
                            OpResult {
                                id: op.id.clone(),
                                ok: false,
                                text: format!("{STALE} {why}"),
                            }
                        }
                        None => {
                            log::info!(
                                "node {}: fleet op {}: {}",
                                self.node,
                                op.id,
                                op.kind.describe()
                            );
                            run(&op)
                        }
                    },
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

    /// Why `op` must not run (its rollout is not the current one, or not running and the
    /// op is no rollback), or `None` if it may.
    fn stale(&self, op: &Op) -> Result<Option<String>, ClusterError> {
        let raw = self
            .rt
            .block_on(read_state(self.client.clone()))
            .map_err(self.etcd("reading the rollout"))?;
        let state = match parse_state(raw, &self.endpoints) {
            Ok(state) => state,
            Err(e) => return Ok(Some(format!("op {} not run: {e}", op.id))),
        };
        let Some(state) = state else {
            return Ok(Some(format!("op {}: no rollout is recorded", op.id)));
        };
        let ours = op.id.strip_prefix(state.id.as_str()).is_some_and(|rest| rest.starts_with('-'));
        Ok(if !ours {
            Some(format!("op {}: not of the current rollout {}", op.id, state.id))
        } else if state.phase != Phase::Running && op.kind != OpKind::Rollback {
            Some(format!("op {}: rollout {} is {}", op.id, state.id, state.phase.word()))
        } else {
            None
        })
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
