//! A rollout's coordination state in etcd: the one-at-a-time lock, the rollout's record,
//! and the ops sent to nodes with their answers awaited.
//!
//! - `/hotcode/rollout/lock`: held by the command driving a rollout, under that command's
//!   own lease (it is no node). A second driver is refused while the lock is held; a
//!   driver that dies releases it when its lease runs out.
//! - `/hotcode/rollout/state`: the [`RolloutState`] (JSON), written only while holding the
//!   lock, kept after the driver exits so that `fleet status` shows it and `promote`,
//!   `abort` and `rollback` find a paused rollout.
//!
//! What the waves, the health gate and the failure policy are is the host's business (its
//! `front/fleet` module); this module stores a plan it does not read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::ops::{Op, OpResult, check_op_id, ops_prefix, results_prefix};
use crate::{
    ClusterError, NodeStatus, PREFIX, REQUEST_TIMEOUT, keep_alive, list_members, node_key,
};

/// The lock's key.
pub fn lock_key() -> String {
    format!("{PREFIX}rollout/lock")
}

/// The rollout record's key.
pub fn state_key() -> String {
    format!("{PREFIX}rollout/state")
}

/// The lease TTL of a driver: how long a crashed `fleet install` keeps the lock.
pub const DRIVER_TTL: Duration = Duration::from_secs(10);

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A driver is working through the waves.
    Running,
    /// Stopped after a failure, waiting for `promote`, `abort` or `rollback`.
    Paused,
    /// Every wave passed: every node reached is permanent on the release.
    Done,
    /// Failed and the upgraded nodes went back to their permanent release.
    RolledBack,
    /// Given up as it stood (`fleet abort`): nodes not yet permanent keep running what
    /// they run, and boot their permanent release at their next start.
    Aborted,
}

impl Phase {
    /// Whether the rollout is over (a new one may start).
    pub fn finished(self) -> bool {
        !matches!(self, Phase::Running | Phase::Paused)
    }

    /// The word `fleet status` prints.
    pub fn word(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Done => "done",
            Phase::RolledBack => "rolled-back",
            Phase::Aborted => "aborted",
        }
    }
}

/// A rollout as recorded in etcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The rollout's id (a word; its ops' ids begin with it).
    pub id: String,
    /// The release rolled out.
    pub vsn: String,
    /// Where it is.
    pub phase: Phase,
    /// The nodes of each wave, the canary first.
    pub waves: Vec<Vec<String>>,
    /// The wave being worked on (or where it stopped).
    pub wave: usize,
    /// Each node's place (`waiting`, `upgrading`, `checking`, `permanent`, `failed`,
    /// `rolled-back`, `not-started`, ...), by name.
    pub places: BTreeMap<String, String>,
    /// Failures counted against the threshold so far.
    pub failures: u32,
    /// Why it stopped, if it failed.
    pub reason: Option<String>,
    /// The driver's plan (the host's JSON: health gate, wave size, policy).
    pub plan: serde_json::Value,
    /// The next op's sequence number.
    pub next_op: u64,
}

/// Why waiting for an op's answer ended without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoAnswer {
    /// The node left the cluster (its lease ran out) before answering.
    NodeDown,
    /// The deadline passed.
    Deadline,
}

/// The command driving a rollout: its lease, the lock under it, and the means to send
/// ops and read answers. Dropping it releases the lock (its lease is revoked).
pub struct Driver {
    rt: Runtime,
    client: Client,
    endpoints: String,
    lease: i64,
    revision: i64,
    keepalive: Option<JoinHandle<()>>,
}

impl Driver {
    /// Connects to etcd at `endpoints` and takes the rollout lock as `holder` (a
    /// description for whoever is refused). [`ClusterError::Locked`] if another driver
    /// holds it.
    pub fn lock(endpoints: &[String], holder: &str) -> Result<Driver, ClusterError> {
        let joined = endpoints.join(",");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hotcode-fleet")
            .enable_all()
            .build()
            .map_err(|source| ClusterError::Runtime { node: "(fleet)".to_owned(), source })?;
        let etcd = |what: &'static str| {
            let endpoints = joined.clone();
            move |source| ClusterError::Etcd { node: "(fleet)".to_owned(), endpoints, what, source }
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(REQUEST_TIMEOUT);
        let ttl = i64::try_from(DRIVER_TTL.as_secs()).unwrap_or(10);
        let (client, lease, revision) = rt.block_on(async {
            let mut client =
                Client::connect(endpoints, Some(options)).await.map_err(etcd("connecting"))?;
            let lease = client.lease_grant(ttl, None).await.map_err(etcd("granting a lease"))?.id();
            let key = lock_key();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    holder,
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key, None)]);
            let taken = client.txn(txn).await.map_err(etcd("taking the rollout lock"))?;
            if !taken.succeeded() {
                let _ = client.lease_revoke(lease).await;
                let holder = taken
                    .op_responses()
                    .into_iter()
                    .find_map(|r| match r {
                        etcd_client::TxnOpResponse::Get(g) => {
                            g.kvs().first().and_then(|kv| kv.value_str().ok().map(str::to_owned))
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| "?".to_owned());
                return Err(ClusterError::Locked { holder, endpoints: joined.clone() });
            }
            let revision = taken.header().map_or(0, |h| h.revision());
            Ok((client, lease, revision))
        })?;
        let keepalive = rt.spawn(keep_alive(client.clone(), lease, DRIVER_TTL, "(fleet)".into()));
        Ok(Driver { rt, client, endpoints: joined, lease, revision, keepalive: Some(keepalive) })
    }

    /// The etcd revision at which this driver took the lock: it grows with every write
    /// to the cluster, so no two lockings share it (a rollout's id is made of it).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    fn etcd(&self, what: &'static str) -> impl FnOnce(etcd_client::Error) -> ClusterError + '_ {
        move |source| ClusterError::Etcd {
            node: "(fleet)".to_owned(),
            endpoints: self.endpoints.clone(),
            what,
            source,
        }
    }

    /// The live nodes and what each published.
    pub fn members(&self) -> Result<Vec<NodeStatus>, ClusterError> {
        self.rt.block_on(list_members(self.client.clone())).map_err(self.etcd("listing the nodes"))
    }

    /// The rollout recorded, if any.
    /// [`ClusterError::BadRecord`] if the record is there but unreadable.
    pub fn state(&self) -> Result<Option<RolloutState>, ClusterError> {
        let raw = self
            .rt
            .block_on(read_state(self.client.clone()))
            .map_err(self.etcd("reading the rollout"))?;
        parse_state(raw, &self.endpoints)
    }

    /// Records `state`, if this driver still holds the lock ([`ClusterError::Locked`] if
    /// it lost it: its lease ran out).
    pub fn put_state(&self, state: &RolloutState) -> Result<(), ClusterError> {
        let text = serde_json::to_string(state).unwrap_or_default();
        self.put_under_lock(state_key(), text, "writing the rollout")
    }

    /// Queues `op` for `node`, if this driver still holds the lock
    /// ([`ClusterError::Locked`] if it lost it: nothing is queued).
    pub fn submit(&self, node: &str, op: &Op) -> Result<(), ClusterError> {
        check_op_id(&op.id)?;
        crate::check_word("node name", node)?;
        let text = serde_json::to_string(op).unwrap_or_default();
        self.put_under_lock(format!("{}{}", ops_prefix(node), op.id), text, "queueing an op")
    }

    /// Puts `value` at `key` in one transaction that holds only while the lock key is still
    /// under this driver's lease ([`ClusterError::Locked`] if it is not: nothing written).
    fn put_under_lock(
        &self,
        key: String,
        value: String,
        doing: &'static str,
    ) -> Result<(), ClusterError> {
        let mut client = self.client.clone();
        let done = self.rt.block_on(async {
            let txn = Txn::new()
                .when([Compare::lease(lock_key(), CompareOp::Equal, self.lease)])
                .and_then([TxnOp::put(key, value, None)]);
            client.txn(txn).await.map_err(self.etcd(doing))
        })?;
        if done.succeeded() {
            Ok(())
        } else {
            Err(ClusterError::Locked {
                holder: "(lost: the lease ran out)".into(),
                endpoints: self.endpoints.clone(),
            })
        }
    }

    /// The ops of rollout `rollout` (ids `<rollout>-<n>`) that no node answered yet, as
    /// `(node, op id)`.
    pub fn unanswered(&self, rollout: &str) -> Result<Vec<(String, String)>, ClusterError> {
        let client = self.client.clone();
        let ops = format!("{PREFIX}ops/");
        let results = format!("{PREFIX}results/");
        let mine = format!("{rollout}-");
        self.rt.block_on(async {
            let keys = |prefix: String| {
                let mut client = client.clone();
                async move {
                    let answer = client
                        .get(prefix.clone(), Some(GetOptions::new().with_prefix().with_keys_only()))
                        .await?;
                    Ok::<BTreeSet<(String, String)>, etcd_client::Error>(
                        answer
                            .kvs()
                            .iter()
                            .filter_map(|kv| {
                                let (node, id) =
                                    kv.key_str().ok()?.strip_prefix(&prefix)?.split_once('/')?;
                                Some((node.to_owned(), id.to_owned()))
                            })
                            .collect(),
                    )
                }
            };
            let queued = keys(ops).await.map_err(self.etcd("reading the op queues"))?;
            let answered = keys(results).await.map_err(self.etcd("reading the op results"))?;
            Ok(queued
                .into_iter()
                .filter(|(_, id)| id.starts_with(&mine))
                .filter(|pair| !answered.contains(pair))
                .collect())
        })
    }

    /// Withdraws each op of `ops` (`(node, op id)`) that has no answer: in one etcd
    /// transaction per op, its key is deleted if its result's key does not exist, so an
    /// op a node answered meanwhile is kept with its answer. A node that comes back never
    /// sees a withdrawn op. How many were withdrawn.
    pub fn withdraw(&self, ops: &[(String, String)]) -> Result<usize, ClusterError> {
        let mut client = self.client.clone();
        self.rt.block_on(async {
            let mut gone = 0;
            for (node, id) in ops {
                let result = format!("{}{id}", results_prefix(node));
                let txn = Txn::new()
                    .when([Compare::create_revision(result, CompareOp::Equal, 0)])
                    .and_then([TxnOp::delete(format!("{}{id}", ops_prefix(node)), None)]);
                let done = client.txn(txn).await.map_err(self.etcd("withdrawing an op"))?;
                if done.succeeded() {
                    gone += 1;
                }
            }
            Ok(gone)
        })
    }

    /// Waits until every `(node, op id)` of `pending` has an answer, its node left the
    /// cluster, or `deadline` passed; each one's outcome. Reads once, then watches.
    #[allow(clippy::type_complexity)]
    pub fn wait(
        &self,
        pending: &[(String, String)],
        deadline: Instant,
    ) -> Result<BTreeMap<(String, String), Result<OpResult, NoAnswer>>, ClusterError> {
        let mut out: BTreeMap<(String, String), Result<OpResult, NoAnswer>> = BTreeMap::new();
        let wanted: BTreeSet<(String, String)> = pending.iter().cloned().collect();
        let mut client = self.client.clone();
        let results = format!("{PREFIX}results/");
        let nodes = node_key("");
        self.rt.block_on(async {
            let now = client
                .txn(Txn::new().and_then([
                    TxnOp::get(results.clone(), Some(GetOptions::new().with_prefix())),
                    TxnOp::get(
                        nodes.clone(),
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    ),
                ]))
                .await
                .map_err(self.etcd("reading the op results"))?;
            let revision = now.header().map_or(0, |h| h.revision());
            let mut alive = BTreeSet::new();
            for (i, r) in now.op_responses().into_iter().enumerate() {
                let etcd_client::TxnOpResponse::Get(get) = r else { continue };
                for kv in get.kvs() {
                    let Ok(key) = kv.key_str() else { continue };
                    if i == 0 {
                        answer(&wanted, &mut out, key, kv.value());
                    } else if let Some(n) = key.strip_prefix(&nodes) {
                        alive.insert(n.to_owned());
                    }
                }
            }
            for (node, id) in &wanted {
                if !out.contains_key(&(node.clone(), id.clone())) && !alive.contains(node) {
                    out.insert((node.clone(), id.clone()), Err(NoAnswer::NodeDown));
                }
            }
            if out.len() == wanted.len() {
                return Ok(out);
            }
            let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
            let (mut watcher, mut stream) = client
                .watch(PREFIX, Some(options))
                .await
                .map_err(self.etcd("watching the op results"))?;
            while out.len() < wanted.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(message) = tokio::time::timeout(left, stream.message()).await else {
                    break;
                };
                let Some(response) = message.map_err(self.etcd("watching the op results"))? else {
                    break;
                };
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Ok(key) = kv.key_str() else { continue };
                    if event.event_type() == EventType::Put && key.starts_with(&results) {
                        answer(&wanted, &mut out, key, kv.value());
                    } else if event.event_type() == EventType::Delete
                        && let Some(node) = key.strip_prefix(&nodes)
                    {
                        for (n, id) in &wanted {
                            if n == node {
                                out.entry((n.clone(), id.clone()))
                                    .or_insert(Err(NoAnswer::NodeDown));
                            }
                        }
                    }
                }
            }
            let _ = watcher.cancel().await;
            for key in &wanted {
                out.entry(key.clone()).or_insert(Err(NoAnswer::Deadline));
            }
            Ok(out)
        })
    }
}

/// Records the answer at `key` if it is one of `wanted`.
fn answer(
    wanted: &BTreeSet<(String, String)>,
    out: &mut BTreeMap<(String, String), Result<OpResult, NoAnswer>>,
    key: &str,
    value: &[u8],
) {
    let Some(rest) = key.strip_prefix(&format!("{PREFIX}results/")) else { return };
    let Some((node, id)) = rest.split_once('/') else { return };
    let pair = (node.to_owned(), id.to_owned());
    if wanted.contains(&pair) {
        let result = serde_json::from_slice::<OpResult>(value).unwrap_or_else(|e| OpResult {
            id: id.to_owned(),
            ok: false,
            text: format!("{}{id}: not an answer: {e}", results_prefix(node)),
        });
        out.insert(pair, Ok(result));
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
        let mut client = self.client.clone();
        let lease = self.lease;
        let _ = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await
        });
    }
}

/// The rollout's record as stored, if there is one.
pub(crate) async fn read_state(mut client: Client) -> Result<Option<Vec<u8>>, etcd_client::Error> {
    let answer = client.get(state_key(), None).await?;
    Ok(answer.kvs().first().map(|kv| kv.value().to_vec()))
}

/// The rollout's record read from `raw` ([`read_state`]'s answer from the cluster at
/// `endpoints`): [`ClusterError::BadRecord`] naming the key if it is not a rollout.
pub(crate) fn parse_state(
    raw: Option<Vec<u8>>,
    endpoints: &str,
) -> Result<Option<RolloutState>, ClusterError> {
    let Some(raw) = raw else { return Ok(None) };
    serde_json::from_slice(&raw).map(Some).map_err(|e| ClusterError::BadRecord {
        key: state_key(),
        endpoints: endpoints.to_owned(),
        why: e.to_string(),
    })
}

/// The ops queued for `node` (ids, oldest first), read through `client`.
pub(crate) async fn queued_ops(
    mut client: Client,
    node: &str,
) -> Result<Vec<String>, etcd_client::Error> {
    let prefix = ops_prefix(node);
    let options = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_sort(etcd_client::SortTarget::Create, etcd_client::SortOrder::Ascend);
    let answer = client.get(prefix.clone(), Some(options)).await?;
    Ok(answer
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_owned))
        .collect())
}
