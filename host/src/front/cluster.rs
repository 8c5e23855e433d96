//! A node's place in an etcd cluster (feature `cluster`, SPEC §12): the release handler's
//! [`Cluster`] on the `hotcode-cluster` crate's [`Member`]. `hotcode boot ROOT --cluster URL
//! --node NAME` joins with [`EtcdCluster::join`] and hands it to the release handler, which
//! then meets the other nodes at `sync_nodes` and publishes its releases as JSON
//! (`{"current": "2", "releases": [{"vsn": "1", "status": "permanent"}, ...], "root": ...,
//! "socket": ...}`, the last two once [`EtcdCluster::set_root`] was called) under the
//! node's key. The fleet's ops reach the node through `front/fleet/agent.rs`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::release_handler::cluster::{Cluster, ClusterStatus, SyncFailure};

pub use hotcode_cluster::{
    ClusterError, Config, DEFAULT_TTL, Member, NodeStatus, Reader, SyncError,
};
pub use hotcode_cluster::{local, ops, rollout};

/// A node in an etcd cluster, as the release handler sees it.
pub struct EtcdCluster {
    member: Member,
    root: OnceLock<PathBuf>,
}

impl EtcdCluster {
    /// Joins the cluster at `url` as `node`, with a lease of `ttl`.
    pub fn join(url: &str, node: &str, ttl: Duration) -> Result<EtcdCluster, ClusterError> {
        let mut config = Config::new(url, node);
        config.ttl = ttl;
        Ok(EtcdCluster { member: Member::join(&config)?, root: OnceLock::new() })
    }

    /// Says where the node's root is (once, before it joins the release handler): its
    /// published status then carries `root` and `socket`, which the fleet's health gate
    /// uses to reach the node.
    pub fn set_root(&self, root: &Path) {
        let _ = self.root.set(root.to_owned());
    }

    /// The membership underneath (its lease, the published statuses).
    pub fn member(&self) -> &Member {
        &self.member
    }
}

impl Cluster for EtcdCluster {
    fn node(&self) -> &str {
        self.member.node()
    }

    fn nodes(&self) -> Result<Vec<String>, SyncFailure> {
        self.member
            .members()
            .map(|m| m.into_iter().map(|s| s.node).collect())
            .map_err(|e| SyncFailure::Cluster(e.to_string()))
    }

    fn sync_nodes(
        &self,
        attempt: &str,
        id: &str,
        nodes: &[String],
        timeout: Option<Duration>,
    ) -> Result<(), SyncFailure> {
        self.member.sync(attempt, id, nodes, timeout).map_err(|e| match e {
            SyncError::NodeDown { node, .. } => SyncFailure::NodeDown { node },
            SyncError::Aborted { node, .. } => SyncFailure::Aborted { node },
            SyncError::Timeout { missing, after, .. } => SyncFailure::Timeout { missing, after },
            other => SyncFailure::Cluster(other.to_string()),
        })
    }

    fn abort(&self, attempt: &str) {
        if let Err(e) = self.member.abort(attempt) {
            log::error!("giving up attempt {attempt}: {e}");
        }
    }

    fn publish(&self, status: &ClusterStatus) {
        let releases: Vec<serde_json::Value> = status
            .releases
            .iter()
            .map(|(vsn, status)| serde_json::json!({ "vsn": vsn, "status": status }))
            .collect();
        let mut doc = serde_json::json!({ "current": status.current, "releases": releases });
        if let Some(root) = self.root.get() {
            doc["root"] = root.display().to_string().into();
            doc["socket"] = crate::front::control::socket_path(root).display().to_string().into();
        }
        if let Err(e) = self.member.publish(&doc.to_string()) {
            log::warn!("publishing the node's releases: {e}");
        }
    }
}
