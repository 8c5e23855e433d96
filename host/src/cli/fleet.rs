//! `hotcode fleet --cluster URL ...`: look at an etcd cluster's nodes and roll releases
//! out over them (SPEC §12), without joining the cluster. The work is the library's
//! (`hotcode::fleet::rollout`); this module is the command line and the printing.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

/// `hotcode fleet --cluster URL ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum FleetOp {
    /// Every node: its releases, its place in the rollout, its liveness; and the rollout.
    Status {
        /// One JSON document: {"version": 1, "nodes": [{"node", "live", "place", "status":
        /// <what it published: {"current", "releases": [{"vsn", "status"}], "root",
        /// "socket"}>}], "rollout": <the rollout's record, or null>}.
        #[arg(long)]
        json: bool,
    },
    /// Roll release VSN out over the live nodes: the canary, then waves, a health gate
    /// after each, make_permanent only for a wave that passed it.
    Install {
        /// The release.
        vsn: String,
        /// A release package (or root-shaped directory) every node unpacks first: a path
        /// the nodes can read.
        #[arg(long, value_name = "PATH")]
        package: Option<String>,
        /// How many nodes the canary wave has (0: none).
        #[arg(long, value_name = "N", default_value_t = 1)]
        canary: usize,
        /// The most nodes upgrading at once after the canary: a count or a percentage of
        /// the nodes (2, 25%).
        #[arg(long, value_name = "N|P%", default_value = "1")]
        wave: String,
        /// The health gate: a shell command run per upgraded node (HOTCODE_NODE,
        /// HOTCODE_ROOT, HOTCODE_SOCKET, HOTCODE_VSN in its environment); exit 0 is healthy.
        #[arg(long, value_name = "CMD", conflicts_with = "health_call", alias = "health")]
        health_cmd: Option<String>,
        /// The health gate: a gen_server call through each upgraded node's control socket
        /// (NAME:REQUEST, e.g. svc_handler:ping); a reply is healthy.
        #[arg(long, value_name = "NAME:REQUEST")]
        health_call: Option<String>,
        /// How many failures (failed ops, lost nodes, unhealthy nodes) are tolerated after
        /// the canary (any failure of the canary fails the rollout); the failed nodes are
        /// rolled back and the rollout goes on.
        #[arg(long, value_name = "K", default_value_t = 0)]
        max_failures: u32,
        /// How long one wave (its ops and its gate) may take, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        progress_deadline: u64,
        /// What a failed rollout does.
        #[arg(long, value_enum, default_value_t = FailureArg::Rollback)]
        on_failure: FailureArg,
    },
    /// Go on with a paused rollout: its paused wave taken as good (made permanent), then
    /// the next waves.
    Promote,
    /// Give a paused rollout up as it stands (no node is sent anything).
    Abort,
    /// Roll a paused rollout's upgraded nodes back to their permanent release.
    Rollback,
}

/// `--on-failure`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FailureArg {
    /// The failed wave's upgraded nodes go back to their permanent release.
    Rollback,
    /// Stop as it stands, for promote, abort or rollback.
    Pause,
}

/// Runs `op` against the cluster at `url`.
#[cfg(feature = "cluster")]
pub(crate) fn run(url: &str, op: FleetOp) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use hotcode::fleet::gate::Health;
    use hotcode::fleet::rollout::{self, OnFailure, Plan, WaveSize};

    let endpoints = [url.to_owned()];
    let mut say = |line: &str| println!("{line}");
    let state = match op {
        FleetOp::Status { json } => return status(url, json),
        FleetOp::Install {
            vsn,
            package,
            canary,
            wave,
            health_cmd,
            health_call,
            max_failures,
            progress_deadline,
            on_failure,
        } => {
            let wave = WaveSize::parse(&wave).map_err(anyhow::Error::msg)?;
            let health = match (health_cmd, health_call) {
                (Some(command), _) => Some(Health::Command { command }),
                (None, Some(call)) => Some(Health::parse_call(&call).map_err(anyhow::Error::msg)?),
                (None, None) => None,
            };
            let package = match package {
                // The nodes read it: an absolute path means the same on every local node.
                Some(p) => Some(
                    std::path::absolute(&p)
                        .with_context(|| format!("--package {p}"))?
                        .display()
                        .to_string(),
                ),
                None => None,
            };
            let plan = Plan {
                vsn,
                package,
                canary,
                wave,
                health,
                max_failures,
                progress_deadline: std::time::Duration::from_secs(progress_deadline.max(1)),
                on_failure: match on_failure {
                    FailureArg::Rollback => OnFailure::Rollback,
                    FailureArg::Pause => OnFailure::Pause,
                },
            };
            rollout::install(&endpoints, &plan, &mut say)?
        }
        FleetOp::Promote => rollout::promote(&endpoints, &mut say)?,
        FleetOp::Abort => rollout::abort(&endpoints, &mut say)?,
        FleetOp::Rollback => rollout::rollback(&endpoints, &mut say)?,
    };
    use hotcode::cluster::rollout::Phase;
    Ok(match state.phase {
        Phase::Done | Phase::Aborted => ExitCode::SUCCESS,
        _ => {
            eprintln!(
                "hotcode: rollout {} {}: {}",
                state.id,
                state.phase.word(),
                state.reason.as_deref().unwrap_or("-")
            );
            ExitCode::from(1)
        }
    })
}

/// `hotcode fleet --cluster URL status [--json]`.
#[cfg(feature = "cluster")]
fn status(url: &str, json: bool) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let reader = hotcode::cluster::Reader::connect(&[url.to_owned()])
        .with_context(|| format!("cannot reach the cluster at {url}"))?;
    let members = reader.members()?;
    let rollout = reader.rollout()?;
    let mut nodes: Vec<(String, bool, serde_json::Value)> = members
        .into_iter()
        .map(|m| {
            let status = serde_json::from_str(&m.status)
                .unwrap_or_else(|_| serde_json::Value::String(m.status.clone()));
            (m.node, true, status)
        })
        .collect();
    // Nodes of the rollout that are no longer live.
    if let Some(r) = &rollout {
        for node in r.places.keys() {
            if !nodes.iter().any(|(n, _, _)| n == node) {
                nodes.push((node.clone(), false, serde_json::Value::Null));
            }
        }
    }
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    let place = |node: &str| rollout.as_ref().and_then(|r| r.places.get(node).cloned());
    if json {
        let list: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(node, live, status)| {
                serde_json::json!({ "node": node, "live": live, "place": place(node), "status": status })
            })
            .collect();
        println!("{}", serde_json::json!({ "version": 1, "nodes": list, "rollout": rollout }));
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        println!("no live node in the cluster at {url}");
    }
    for (node, live, status) in &nodes {
        if !live {
            println!("{node}: DOWN; rollout: {}", place(node).unwrap_or_default());
            continue;
        }
        let current = status.get("current").and_then(|c| c.as_str()).unwrap_or("?");
        let releases: Vec<String> = status
            .get("releases")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
            .map(|r| {
                let field = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
                format!("{} {}", field("vsn"), field("status"))
            })
            .collect();
        let rollout = place(node).map(|p| format!("; rollout: {p}")).unwrap_or_default();
        println!("{node}: live, current {current}; releases: {}{rollout}", releases.join(", "));
    }
    if let Some(r) = &rollout {
        let waves: Vec<String> = r.waves.iter().map(|w| w.join(" ")).collect();
        println!(
            "rollout {} of release {}: {}, wave {} of {} ({}), {} failure(s){}",
            r.id,
            r.vsn,
            r.phase.word(),
            (r.wave + 1).min(r.waves.len()),
            r.waves.len(),
            waves.join(" | "),
            r.failures,
            r.reason.as_deref().map(|why| format!(": {why}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Without the feature, `fleet` is refused with the way to get it.
#[cfg(not(feature = "cluster"))]
pub(crate) fn run(url: &str, _op: FleetOp) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "fleet --cluster {url}: this hotcode was built without the cluster feature; build it \
         with `cargo build -p hotcode --features cluster` (needs protoc: apt-get install -y \
         protobuf-compiler)"
    )
}
