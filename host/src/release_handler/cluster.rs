//! What the release handler needs of a cluster (SPEC §12): a name, the live nodes, and
//! OTP's `sync_nodes` barrier within one upgrade attempt. The release handler knows this
//! trait only; `front/cluster.rs` (feature `cluster`) implements it on etcd with the
//! `hotcode-cluster` crate, and tests or embedders may implement it otherwise.
//!
//! An **attempt** is one try of one fleet upgrade, named by whoever starts it (`hotcode
//! ctl install VSN --attempt ID`, or the fleet command) and given to every node's install.
//! Barriers are matched by attempt and Id, so an arrival from an attempt that was given up
//! never releases a later one (OTP matches by Id only).

use std::time::Duration;

/// A node's place in a cluster, as the release handler uses it.
pub trait Cluster: Send + Sync {
    /// This node's name in the cluster.
    fn node(&self) -> &str;

    /// The live nodes of the cluster, this one included: what `{sync_nodes, Id, {hotcode,
    /// nodes, []}}` synchronises with.
    fn nodes(&self) -> Result<Vec<String>, SyncFailure>;

    /// `sync_nodes(Id, Nodes)` within `attempt`: tells the other nodes of `nodes` that this
    /// one reached `id`, then waits until each of them reached it, for at most `timeout`.
    fn sync_nodes(
        &self,
        attempt: &str,
        id: &str,
        nodes: &[String],
        timeout: Option<Duration>,
    ) -> Result<(), SyncFailure>;

    /// Gives `attempt` up: nodes still waiting at a barrier this node reached in it stop
    /// waiting with an error.
    fn abort(&self, attempt: &str);

    /// Publishes this node's releases and current release (after each release operation).
    fn publish(&self, status: &ClusterStatus);
}

/// What a node publishes to its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The release the node runs.
    pub current: String,
    /// Every release the node has, `(vsn, status)` (`permanent`, `unpacked`, `old`, and
    /// `current` for an installed but not permanent one).
    pub releases: Vec<(String, String)>,
}

/// Why a barrier failed; each names the node it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncFailure {
    /// A listed node was down before it arrived (OTP's `{sync_error, {nodedown, Node}}`).
    #[error("node {node} is down")]
    NodeDown {
        /// The node.
        node: String,
    },
    /// A listed node gave the attempt up.
    #[error("node {node} aborted this attempt")]
    Aborted {
        /// The node.
        node: String,
    },
    /// The barrier's timeout passed.
    #[error("no arrival of {} within {after:?}", missing.join(", "))]
    Timeout {
        /// The nodes that had not arrived.
        missing: Vec<String>,
        /// The timeout.
        after: Duration,
    },
    /// The node list of `{sync_nodes, Id, {M, F, A}}` could not be had.
    #[error("the node list: {0}")]
    Nodes(String),
    /// The coordination service failed, or this node lost its place in the cluster.
    #[error("{0}")]
    Cluster(String),
}
