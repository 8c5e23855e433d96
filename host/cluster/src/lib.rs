//! hotcode's coordination between nodes, on etcd.
//!
//! OTP's `{sync_nodes, Id, Nodes}` makes every listed node wait until all of them reached
//! the same line of their relup. Erlang does it with messages between release handlers and
//! node monitors; hotcode nodes are separate operating-system processes on separate
//! machines, so they meet in etcd instead, an existing and well-tested coordination
//! service, rather than in a protocol of our own.
//!
//! A [`Member`] is one node in a cluster:
//!
//! - it **joins** under a lease (`/hotcode/nodes/<node>`, whose value is the status the node
//!   publishes). The lease is the node's liveness: a node that dies stops renewing it, and
//!   etcd deletes its keys when the lease's TTL runs out, so every other node sees the loss
//!   within that bound. A second live node of the same name is refused.
//! - it **synchronises** ([`Member::sync`]) at a barrier named by an *attempt* (one try of
//!   one fleet upgrade) and an `Id`: it writes its arrival
//!   (`/hotcode/sync/<attempt>/<id>/<node>`, under its lease), then waits until every other
//!   listed node arrived. An arrival of another attempt is another key, so an arrival left by
//!   an aborted attempt never releases a later one's barrier (OTP matches Ids by value and
//!   can be released by a stale message). A listed node whose lease is gone before it
//!   arrived ends the wait with [`SyncError::NodeDown`] (OTP's `{sync_error, {nodedown, N}}`);
//!   one that gave the attempt up ([`Member::abort`]) ends it with [`SyncError::Aborted`];
//!   an optional timeout ends it with [`SyncError::Timeout`] (OTP can wait for ever).
//! - it **aborts** an attempt ([`Member::abort`]): it marks the whole attempt given up
//!   (`/hotcode/sync/<attempt>/%aborted/<node>`) and each arrival it wrote `aborted`, so
//!   every node at any barrier of the attempt, now or later, stops too, whether or not this
//!   node had reached it.
//!
//! The wait reads the barrier at the revision of the node's own arrival (an arrival that
//! came and went since still counts), then the barrier, the attempt and the members as
//! they are now, in one read, then watches every later event in order. Nothing is polled;
//! only a watch quiet for a whole lease TTL asks etcd for the node's lease, so that an etcd
//! that hangs without closing the watch ends the wait with an error.
//!
//! Rollouts ([`rollout`]) send nodes release operations ([`ops`]) through etcd too.
//!
//! The API is synchronous, like the host: each [`Member`] owns a small private tokio
//! runtime (one worker thread) on which the etcd client and the lease's keep-alive run.
//!
//! **Invariant:** this crate knows nothing of hotcode's host: names, attempts and Ids are
//! strings to it. The host (`hotcode`, feature `cluster`) turns relup instructions into
//! calls of this API.

pub mod local;
pub mod ops;
pub mod rollout;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// The root of every key hotcode writes in etcd.
pub const PREFIX: &str = "/hotcode/";

/// The lease TTL a node joins with unless told otherwise: a node that dies is seen as down
/// by the others within this time.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// An arrival's value while the node stands at the barrier or went past it.
const ARRIVED: &str = "arrived";
/// An arrival's value once the node gave the attempt up.
const ABORTED: &str = "aborted";

/// What went wrong talking to the cluster, naming the node and the endpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// etcd could not be reached or refused a request.
    #[error("node {node}: etcd at {endpoints}: {what}: {source}")]
    Etcd {
        /// This node.
        node: String,
        /// The endpoints, comma-separated.
        endpoints: String,
        /// What was being done.
        what: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// Another live node already has this name.
    #[error("node {node}: another live node of that name is in the cluster at {endpoints}")]
    NameTaken {
        /// The name.
        node: String,
        /// The endpoints, comma-separated.
        endpoints: String,
    },
    /// A node name, attempt or endpoint is not usable.
    #[error("{what} {value:?}: {why}")]
    Invalid {
        /// What it is (`node name`, `attempt`, `cluster URL`).
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The private runtime could not start.
    #[error("node {node}: starting the cluster client's runtime: {source}")]
    Runtime {
        /// This node.
        node: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another command holds the rollout lock (one rollout at a time per cluster), or
    /// this one lost it.
    #[error("the cluster at {endpoints} has a rollout under way: the lock is held by {holder}")]
    Locked {
        /// Who holds it (what that command wrote).
        holder: String,
        /// The endpoints.
        endpoints: String,
    },
    /// A record the cluster holds cannot be read (not the JSON it should be).
    #[error("etcd at {endpoints}: the record at {key} is unreadable: {why}")]
    BadRecord {
        /// The record's key.
        key: String,
        /// The endpoints.
        endpoints: String,
        /// Why it cannot be read.
        why: String,
    },
    /// A request got no answer in time.
    #[error("node {node}: etcd at {endpoints} did not answer {what} within {after:?}")]
    Unanswered {
        /// This node.
        node: String,
        /// The endpoints.
        endpoints: String,
        /// What was being done.
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },
}

/// Why a barrier ([`Member::sync`]) did not release this node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A listed node was not in the cluster, or its lease ran out, before it arrived.
    #[error(
        "node {node} is down (not in the cluster, or its lease expired) and never reached {id}"
    )]
    NodeDown {
        /// The node lost.
        node: String,
        /// The barrier.
        id: String,
    },
    /// A listed node gave this attempt up (its install failed before the point of no return).
    #[error("node {node} aborted attempt {attempt} at or after {id}")]
    Aborted {
        /// The node that gave up.
        node: String,
        /// The attempt.
        attempt: String,
        /// The barrier.
        id: String,
    },
    /// The timeout passed with nodes still missing.
    #[error("{id}: no arrival of {} within {after:?}", missing.join(", "))]
    Timeout {
        /// The barrier.
        id: String,
        /// The nodes that had not arrived.
        missing: Vec<String>,
        /// The timeout.
        after: Duration,
    },
    /// This node's own lease is gone: the others see it as down.
    #[error("node {node} lost its own lease at {id}: the cluster sees it as down")]
    SelfLost {
        /// This node.
        node: String,
        /// The barrier.
        id: String,
    },
    /// etcd failed while waiting.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// How a node joins.
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd endpoints (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// The node's name in the cluster: a word (no `/`, no control characters, at most 255
    /// bytes, not empty).
    pub node: String,
    /// The lease TTL (whole seconds, at least 1): how soon a dead node is seen as down.
    pub ttl: Duration,
}

impl Config {
    /// A configuration with the [`DEFAULT_TTL`].
    pub fn new(endpoint: impl Into<String>, node: impl Into<String>) -> Config {
        Config { endpoints: vec![endpoint.into()], node: node.into(), ttl: DEFAULT_TTL }
    }
}

/// One node of the published membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's name.
    pub node: String,
    /// What it last published (free text to this crate; the host writes JSON).
    pub status: String,
}

/// One node's membership of a cluster: its lease, its key, its barriers. Dropping it
/// leaves the cluster (the lease is revoked, so the others see the node gone at once).
pub struct Member {
    rt: Runtime,
    client: Client,
    node: String,
    endpoints: String,
    lease: i64,
    ttl: Duration,
    keepalive: Mutex<Option<JoinHandle<()>>>,
    /// Per attempt, the barrier keys this node arrived at.
    arrivals: Mutex<HashMap<String, Vec<String>>>,
}

/// How long one request may take before it is an error (not the barrier's wait).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that `value` can be one segment of a key.
fn check_word(what: &'static str, value: &str) -> Result<(), ClusterError> {
    let why = if value.is_empty() {
        Some("is empty")
    } else if value.len() > 255 {
        Some("is longer than 255 bytes")
    } else if value == "." || value == ".." {
        Some("is `.` or `..`")
    } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        Some("has a character other than ASCII letters, digits, `_`, `.` and `-`")
    } else {
        None
    };
    match why {
        Some(why) => Err(ClusterError::Invalid { what, value: value.to_owned(), why }),
        None => Ok(()),
    }
}

/// A barrier Id as one key segment: `%` and `/` escaped, the rest as written.
fn id_segment(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

fn node_key(node: &str) -> String {
    format!("{PREFIX}nodes/{node}")
}

fn barrier_prefix(attempt: &str, id: &str) -> String {
    format!("{PREFIX}sync/{attempt}/{}/", id_segment(id))
}

/// Where nodes that gave `attempt` up say so: `%aborted` is no Id's segment, since
/// [`id_segment`] escapes every `%`.
fn aborted_prefix(attempt: &str) -> String {
    format!("{PREFIX}sync/{attempt}/%aborted/")
}

impl Member {
    /// Joins the cluster at `config.endpoints` as `config.node`: a lease of `config.ttl`
    /// kept alive by a background task, and the node's key under it (refused if a live
    /// node has the name).
    pub fn join(config: &Config) -> Result<Member, ClusterError> {
        check_word("node name", &config.node)?;
        if config.endpoints.is_empty() {
            return Err(ClusterError::Invalid {
                what: "cluster URL",
                value: String::new(),
                why: "no endpoint given",
            });
        }
        let node = config.node.clone();
        let endpoints = config.endpoints.join(",");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hotcode-cluster")
            .enable_all()
            .build()
            .map_err(|source| ClusterError::Runtime { node: node.clone(), source })?;
        let etcd = |what: &'static str| {
            let (node, endpoints) = (node.clone(), endpoints.clone());
            move |source| ClusterError::Etcd { node, endpoints, what, source }
        };
        let ttl_secs = i64::try_from(config.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(REQUEST_TIMEOUT);
        let (client, lease) = rt.block_on(async {
            let mut client = Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(etcd("connecting"))?;
            let lease =
                client.lease_grant(ttl_secs, None).await.map_err(etcd("granting a lease"))?.id();
            let key = node_key(&node);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, "{}", Some(PutOptions::new().with_lease(lease)))]);
            let joined = client.txn(txn).await.map_err(etcd("registering the node"))?;
            if !joined.succeeded() {
                let _ = client.lease_revoke(lease).await;
                return Err(ClusterError::NameTaken {
                    node: node.clone(),
                    endpoints: endpoints.clone(),
                });
            }
            Ok((client, lease))
        })?;
        let keepalive = rt.spawn(keep_alive(client.clone(), lease, config.ttl, node.clone()));
        log::info!("node {node} joined the cluster at {endpoints} (lease TTL {ttl_secs} s)");
        Ok(Member {
            rt,
            client,
            node,
            endpoints,
            lease,
            ttl: Duration::from_secs(ttl_secs.unsigned_abs()),
            keepalive: Mutex::new(Some(keepalive)),
            arrivals: Mutex::new(HashMap::new()),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease TTL: the bound on how long a dead node goes unnoticed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The endpoints, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn etcd(&self, what: &'static str) -> impl FnOnce(etcd_client::Error) -> ClusterError + '_ {
        move |source| ClusterError::Etcd {
            node: self.node.clone(),
            endpoints: self.endpoints.clone(),
            what,
            source,
        }
    }

    /// Publishes `status` as the value of this node's key (under its lease).
    pub fn publish(&self, status: &str) -> Result<(), ClusterError> {
        let mut client = self.client.clone();
        self.rt.block_on(async {
            client
                .put(node_key(&self.node), status, Some(PutOptions::new().with_lease(self.lease)))
                .await
                .map(drop)
                .map_err(self.etcd("publishing the node's status"))
        })
    }

    /// The live nodes and what each published, by name.
    pub fn members(&self) -> Result<Vec<NodeStatus>, ClusterError> {
        self.rt.block_on(list_members(self.client.clone())).map_err(self.etcd("listing the nodes"))
    }

    /// OTP's `sync_nodes(Id, Nodes)` within `attempt`: tells every other node of `nodes`
    /// that this one reached `id` (this node may or may not be listed), then waits until
    /// each of them reached it too, for at most `timeout` if one is given. See the
    /// [crate docs](crate) for what ends the wait.
    pub fn sync(
        &self,
        attempt: &str,
        id: &str,
        nodes: &[String],
        timeout: Option<Duration>,
    ) -> Result<(), SyncError> {
        check_word("attempt", attempt)?;
        let started = Instant::now();
        let others: BTreeSet<&str> =
            nodes.iter().map(String::as_str).filter(|n| *n != self.node).collect();
        let prefix = barrier_prefix(attempt, id);
        let gave_up = aborted_prefix(attempt);
        let mine = format!("{prefix}{}", self.node);
        let mut client = self.client.clone();
        let nodes_prefix = node_key("");
        self.rt.block_on(async {
            let put = client
                .put(mine.clone(), ARRIVED, Some(PutOptions::new().with_lease(self.lease)))
                .await
                .map_err(self.etcd("writing the arrival"))?;
            self.arrivals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(attempt.to_owned())
                .or_default()
                .push(mine.clone());
            if others.is_empty() {
                return Ok(());
            }
            let revision = put.header().map_or(0, |h| h.revision());
            // The barrier as of our own arrival (an arrival that came and went since still
            // counts); then the barrier, the attempt and the members now, in one read, and
            // every event after that read. A watch from the present is served at once; one
            // from the past only by etcd's catch-up loop, every 100 ms.
            let with_prefix = || Some(GetOptions::new().with_prefix());
            let at_arrival = client
                .get(prefix.clone(), with_prefix().map(|o| o.with_revision(revision)))
                .await
                .map_err(self.etcd("reading the barrier"))?;
            let now = client
                .txn(Txn::new().and_then([
                    TxnOp::get(prefix.clone(), with_prefix()),
                    TxnOp::get(gave_up.clone(), with_prefix()),
                    TxnOp::get(nodes_prefix.clone(), with_prefix()),
                ]))
                .await
                .map_err(self.etcd("reading the barrier"))?;
            let current = now.header().map_or(revision, |h| h.revision());
            let gets: Vec<etcd_client::GetResponse> = now
                .op_responses()
                .into_iter()
                .filter_map(|r| match r {
                    TxnOpResponse::Get(get) => Some(get),
                    _ => None,
                })
                .collect();
            let [barrier, aborted, members] = gets.as_slice() else {
                return Err(ClusterError::Unanswered {
                    node: self.node.clone(),
                    endpoints: self.endpoints.clone(),
                    what: "the barrier's read in full",
                    after: started.elapsed(),
                }
                .into());
            };
            let mut state = Barrier {
                attempt,
                id,
                me: &self.node,
                others: &others,
                arrived: BTreeSet::new(),
                alive: BTreeSet::new(),
            };
            for kv in at_arrival.kvs().iter().chain(barrier.kvs()) {
                if let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) {
                    state.arrival(key.strip_prefix(&prefix).unwrap_or(""), value)?;
                }
            }
            for kv in aborted.kvs() {
                if let Some(n) = kv.key_str().ok().and_then(|k| k.strip_prefix(&gave_up)) {
                    state.arrival(n, ABORTED)?;
                }
            }
            for kv in members.kvs() {
                if let Some(n) = kv.key_str().ok().and_then(|k| k.strip_prefix(&nodes_prefix)) {
                    state.alive.insert(n.to_owned());
                }
            }
            if !state.alive.contains(&self.node) {
                return Err(SyncError::SelfLost { node: self.node.clone(), id: id.to_owned() });
            }
            if let Some(down) =
                others.iter().find(|n| !state.arrived.contains(**n) && !state.alive.contains(**n))
            {
                return Err(SyncError::NodeDown { node: (*down).to_owned(), id: id.to_owned() });
            }
            if state.done() {
                return Ok(());
            }
            let (mut watcher, mut stream) = client
                .watch(
                    PREFIX,
                    Some(WatchOptions::new().with_prefix().with_start_revision(current + 1)),
                )
                .await
                .map_err(self.etcd("watching the barrier"))?;
            let result = loop {
                // Waits in slices of at most the lease TTL: a slice with no event asks
                // etcd for this node's lease, so that an etcd that stops answering without
                // closing the watch ends the wait (within the TTL and one request's
                // timeout) instead of holding it for ever.
                let slice = match timeout {
                    Some(t) => t.saturating_sub(started.elapsed()).min(self.ttl),
                    None => self.ttl,
                };
                let message = match tokio::time::timeout(slice, stream.message()).await {
                    Ok(m) => m,
                    Err(_) => {
                        if let Some(t) = timeout
                            && started.elapsed() >= t
                        {
                            break Err(SyncError::Timeout {
                                id: id.to_owned(),
                                missing: state.missing(),
                                after: t,
                            });
                        }
                        let probe = client.lease_time_to_live(self.lease, None);
                        match tokio::time::timeout(REQUEST_TIMEOUT, probe).await {
                            Ok(Ok(lease)) if lease.ttl() > 0 => continue,
                            Ok(Ok(_)) => {
                                break Err(SyncError::SelfLost {
                                    node: self.node.clone(),
                                    id: id.to_owned(),
                                });
                            }
                            Ok(Err(e)) => break Err(self.etcd("checking the lease")(e).into()),
                            Err(_) => {
                                break Err(ClusterError::Unanswered {
                                    node: self.node.clone(),
                                    endpoints: self.endpoints.clone(),
                                    what: "a lease check while waiting at the barrier",
                                    after: REQUEST_TIMEOUT,
                                }
                                .into());
                            }
                        }
                    }
                };
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        break Err(ClusterError::Unanswered {
                            node: self.node.clone(),
                            endpoints: self.endpoints.clone(),
                            what: "the barrier's watch (it closed)",
                            after: started.elapsed(),
                        }
                        .into());
                    }
                    Err(e) => break Err(self.etcd("watching the barrier")(e).into()),
                };
                if let Err(e) = state.events(&prefix, &gave_up, &nodes_prefix, response.events()) {
                    break Err(e);
                }
                if state.done() {
                    break Ok(());
                }
            };
            let _ = watcher.cancel().await;
            result
        })
    }

    /// Gives `attempt` up: ends the wait of every node at any barrier of the attempt, now
    /// or when it gets there ([`SyncError::Aborted`]), whether or not this node reached it.
    pub fn abort(&self, attempt: &str) -> Result<(), ClusterError> {
        check_word("attempt", attempt)?;
        let mut keys = self
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(attempt)
            .unwrap_or_default();
        keys.insert(0, format!("{}{}", aborted_prefix(attempt), self.node));
        let mut client = self.client.clone();
        self.rt.block_on(async {
            for key in keys {
                client
                    .put(key, ABORTED, Some(PutOptions::new().with_lease(self.lease)))
                    .await
                    .map_err(self.etcd("aborting the attempt"))?;
            }
            Ok(())
        })
    }

    /// Stops renewing the lease without revoking it: what a node that crashed looks like
    /// to the others, who see it down when the TTL runs out. For fault drills and tests.
    pub fn stop_renewing(&self) {
        if let Some(task) = self.keepalive.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let renewing =
            self.keepalive.lock().unwrap_or_else(|p| p.into_inner()).take().map(|t| t.abort());
        if renewing.is_none() {
            // Crashed on purpose: leave the lease to expire, as a dead process would.
            return;
        }
        let mut client = self.client.clone();
        let lease = self.lease;
        let _ = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await
        });
    }
}

/// The live nodes, sorted by name.
async fn list_members(mut client: Client) -> Result<Vec<NodeStatus>, etcd_client::Error> {
    let prefix = node_key("");
    let answer = client.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
    Ok(answer
        .kvs()
        .iter()
        .filter_map(|kv| {
            let node = kv.key_str().ok()?.strip_prefix(&prefix)?.to_owned();
            Some(NodeStatus { node, status: kv.value_str().unwrap_or("").to_owned() })
        })
        .collect())
}

/// A read-only view of a cluster, without joining it (it holds no lease and is no node):
/// what `hotcode fleet status` reads.
pub struct Reader {
    rt: Runtime,
    client: Client,
    endpoints: String,
}

impl Reader {
    /// Connects to etcd at `endpoints`.
    pub fn connect(endpoints: &[String]) -> Result<Reader, ClusterError> {
        let joined = endpoints.join(",");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ClusterError::Runtime { node: "(reader)".to_owned(), source })?;
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(REQUEST_TIMEOUT);
        let client = rt.block_on(Client::connect(endpoints, Some(options))).map_err(|source| {
            ClusterError::Etcd {
                node: "(reader)".to_owned(),
                endpoints: joined.clone(),
                what: "connecting",
                source,
            }
        })?;
        Ok(Reader { rt, client, endpoints: joined })
    }

    /// The live nodes and what each published, by name.
    pub fn members(&self) -> Result<Vec<NodeStatus>, ClusterError> {
        self.rt.block_on(list_members(self.client.clone())).map_err(|source| ClusterError::Etcd {
            node: "(reader)".to_owned(),
            endpoints: self.endpoints.clone(),
            what: "listing the nodes",
            source,
        })
    }
}

impl Reader {
    fn etcd(&self, what: &'static str) -> impl FnOnce(etcd_client::Error) -> ClusterError + '_ {
        move |source| ClusterError::Etcd {
            node: "(reader)".to_owned(),
            endpoints: self.endpoints.clone(),
            what,
            source,
        }
    }

    /// The rollout recorded in the cluster, if any ([`rollout::RolloutState`]).
    pub fn rollout(&self) -> Result<Option<rollout::RolloutState>, ClusterError> {
        let raw = self
            .rt
            .block_on(rollout::read_state(self.client.clone()))
            .map_err(self.etcd("reading the rollout"))?;
        rollout::parse_state(raw, &self.endpoints)
    }

    /// The ids of the ops queued for `node`, oldest first.
    pub fn queued_ops(&self, node: &str) -> Result<Vec<String>, ClusterError> {
        self.rt
            .block_on(rollout::queued_ops(self.client.clone(), node))
            .map_err(self.etcd("reading the op queue"))
    }
}

/// What a waiting node knows of one barrier.
struct Barrier<'a> {
    attempt: &'a str,
    id: &'a str,
    me: &'a str,
    others: &'a BTreeSet<&'a str>,
    arrived: BTreeSet<String>,
    alive: BTreeSet<String>,
}

impl Barrier<'_> {
    fn done(&self) -> bool {
        self.others.iter().all(|n| self.arrived.contains(*n))
    }

    fn missing(&self) -> Vec<String> {
        self.others
            .iter()
            .filter(|n| !self.arrived.contains(**n))
            .map(|n| (*n).to_owned())
            .collect()
    }

    fn arrival(&mut self, node: &str, value: &str) -> Result<(), SyncError> {
        if !self.others.contains(node) {
            return Ok(());
        }
        if value == ABORTED {
            return Err(SyncError::Aborted {
                node: node.to_owned(),
                attempt: self.attempt.to_owned(),
                id: self.id.to_owned(),
            });
        }
        self.arrived.insert(node.to_owned());
        Ok(())
    }

    /// One watch response's events, in revision order.
    fn events(
        &mut self,
        prefix: &str,
        gave_up: &str,
        nodes_prefix: &str,
        events: &[etcd_client::Event],
    ) -> Result<(), SyncError> {
        // Arrivals first within one response: a node that arrived and died in the same
        // batch did arrive (OTP keeps a message received before the nodedown).
        let mut downs: BTreeMap<String, ()> = BTreeMap::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            if let Some(node) = key.strip_prefix(prefix) {
                if event.event_type() == EventType::Put {
                    self.arrival(node, kv.value_str().unwrap_or(""))?;
                }
            } else if let Some(node) = key.strip_prefix(gave_up) {
                if event.event_type() == EventType::Put {
                    self.arrival(node, ABORTED)?;
                }
            } else if let Some(node) = key.strip_prefix(nodes_prefix) {
                match event.event_type() {
                    EventType::Put => {
                        self.alive.insert(node.to_owned());
                    }
                    EventType::Delete => {
                        self.alive.remove(node);
                        downs.insert(node.to_owned(), ());
                    }
                }
            }
        }
        for node in downs.keys() {
            if node == self.me {
                return Err(SyncError::SelfLost { node: node.clone(), id: self.id.to_owned() });
            }
            if self.others.contains(node.as_str()) && !self.arrived.contains(node) {
                return Err(SyncError::NodeDown { node: node.clone(), id: self.id.to_owned() });
            }
        }
        Ok(())
    }
}

/// Renews `lease` every third of its TTL until aborted. A failed renewal is logged and
/// retried: if etcd stays unreachable the lease runs out and the others see this node down.
async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, node: String) {
    let period = (ttl / 3).max(Duration::from_millis(200));
    loop {
        match client.lease_keep_alive(lease).await {
            Ok((mut keeper, mut stream)) => loop {
                if let Err(e) = keeper.keep_alive().await {
                    log::warn!("node {node}: renewing its lease: {e}");
                    break;
                }
                match stream.message().await {
                    Ok(Some(answer)) if answer.ttl() > 0 => {}
                    Ok(_) => {
                        log::error!("node {node}: its lease expired; the cluster sees it as down");
                        return;
                    }
                    Err(e) => {
                        log::warn!("node {node}: renewing its lease: {e}");
                        break;
                    }
                }
                tokio::time::sleep(period).await;
            },
            Err(e) => log::warn!("node {node}: renewing its lease: {e}"),
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_key_segment() {
        assert_eq!(id_segment("{a,\"1/2\"}"), "{a,\"1%2F2\"}");
        assert_eq!(id_segment("50%"), "50%25");
        assert_eq!(barrier_prefix("t1", "x/y"), "/hotcode/sync/t1/x%2Fy/");
    }

    #[test]
    fn names_and_attempts_are_words() {
        for good in ["n1", "web-1.eu_west", "a..b", "-"] {
            assert!(check_word("node name", good).is_ok(), "{good:?}");
        }
        for bad in ["", "a/b", "a\nb", ".", "..", "n 1", "n*", "n\u{e9}", "a\\b", "%2F", "n:1"] {
            assert!(check_word("node name", bad).is_err(), "{bad:?}");
        }
        assert!(check_word("node name", &"x".repeat(256)).is_err());
    }
}
