//! `hotcode fleet install VSN`: a rolling upgrade of an etcd cluster's nodes.
//!
//! The live nodes (sorted by name; those already permanent on VSN left out) go in waves:
//! first the canary (`canary` nodes, default 1), then waves of at most `wave` nodes (a
//! count, or a percentage of the nodes). Each wave's nodes get their ops at once
//! (`unpack PACKAGE` if a package is given, then `install VSN` with the attempt
//! `<rollout>-w<k>`, so that a relup's `sync_nodes` meets the wave's nodes), then the
//! health gate runs on each upgraded node, and only a wave that passed it is made
//! permanent (`make_permanent` on its nodes) before the next wave starts.
//!
//! A failure is an op that failed, a node that left the cluster, or an unhealthy node.
//! Any failure in the canary wave, more than `max_failures` of them in all (a failed
//! `make_permanent` counted too), or a wave not through its gate within the progress
//! deadline, fails the rollout: with `rollback`, the wave's upgraded nodes go back to their
//! permanent release and the nodes of later waves are never sent anything; with `pause`,
//! the rollout stops as it stands, for `promote` (the wave is taken as good: made
//! permanent, then the next waves), `abort` (given up as it stands) or `rollback`.
//! Failures within the threshold (after the canary) roll the failed nodes back and the
//! rollout goes on.
//!
//! Ops are sent only after the record says the rollout is running (a node runs an op only
//! then, or a rollback); an op unanswered by its deadline is withdrawn, and so is every
//! unanswered op of a rollout that fails, pauses or is aborted.
//!
//! The whole rollout is recorded in etcd ([`RolloutState`]) at each step, under the
//! cluster's rollout lock held by this command's lease: one rollout at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hotcode_cluster::ops::{Op, OpKind};
use hotcode_cluster::rollout::{Driver, NoAnswer, Phase, RolloutState};
use hotcode_cluster::{ClusterError, NodeStatus};
use serde::{Deserialize, Serialize};

use super::gate::Health;

/// How many nodes a wave upgrades at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveSize {
    /// At most this many nodes.
    Nodes(usize),
    /// At most this percentage of the nodes (at least one node).
    Percent(u8),
}

impl WaveSize {
    /// `N` or `P%`.
    pub fn parse(text: &str) -> Result<WaveSize, String> {
        let bad = || format!("`{text}` is not a wave size like 2 or 25%");
        match text.strip_suffix('%') {
            Some(p) => match p.parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(WaveSize::Percent(p)),
                _ => Err(bad()),
            },
            None => match text.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(WaveSize::Nodes(n)),
                _ => Err(bad()),
            },
        }
    }

    fn nodes(self, total: usize) -> usize {
        match self {
            WaveSize::Nodes(n) => n.max(1),
            WaveSize::Percent(p) => (total * usize::from(p)).div_ceil(100).max(1),
        }
    }
}

/// What to do when a rollout fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The failed wave's upgraded nodes go back to their permanent release.
    Rollback,
    /// Stop as it stands, for `promote`, `abort` or `rollback`.
    Pause,
}

/// A rollout's plan (recorded with it, so that `promote` goes on with the same one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The release rolled out.
    pub vsn: String,
    /// A package (or root-shaped directory) each node unpacks first, by a path the nodes
    /// can read.
    pub package: Option<String>,
    /// How many nodes the canary wave has (0: none).
    pub canary: usize,
    /// The size of the later waves.
    pub wave: WaveSize,
    /// The gate after each wave (none: an install that succeeded is healthy).
    pub health: Option<Health>,
    /// How many failures the rollout tolerates.
    pub max_failures: u32,
    /// How long a wave may take, ops and gate, before the rollout fails.
    pub progress_deadline: Duration,
    /// What a failure does.
    pub on_failure: OnFailure,
}

/// Why a fleet command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// etcd failed, or another command holds the rollout lock.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A rollout that is not over is recorded: it must be finished first.
    #[error(
        "rollout {id} of release {vsn} is {phase}: `hotcode fleet promote`, `abort` or \
         `rollback` it first"
    )]
    Unfinished {
        /// Its id.
        id: String,
        /// Its release.
        vsn: String,
        /// Its phase.
        phase: &'static str,
    },
    /// `promote`, `abort` or `rollback` with no paused rollout.
    #[error("no paused rollout in the cluster{}", found.as_ref().map(|f| format!(" (the last one, {f})")).unwrap_or_default())]
    NotPaused {
        /// The last rollout, if there is one: its id and phase.
        found: Option<String>,
    },
    /// No live node to upgrade.
    #[error("no live node in the cluster needs release {vsn}")]
    NoNodes {
        /// The release.
        vsn: String,
    },
    /// A value given is not usable; nothing was taken or sent.
    #[error("{what} {value:?}: {why}")]
    Invalid {
        /// What it is (`release`, `--progress-deadline`).
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// `promote` of a rollout still recorded as running: its driver is gone, and its
    /// wave never went through the gate.
    #[error(
        "rollout {id} is recorded as running but no command drives it (its driver died): its \
         wave never went through the health gate, so it cannot be promoted; `hotcode fleet \
         rollback` or `abort` it"
    )]
    Orphaned {
        /// The rollout.
        id: String,
    },
    /// The recorded plan cannot be read.
    #[error("rollout {id}: its recorded plan is unreadable: {why}")]
    BadPlan {
        /// The rollout.
        id: String,
        /// Why.
        why: String,
    },
}

/// Per node, `Ok` or why not.
type Outcomes = Vec<(String, Result<(), String>)>;

/// Places a node can have (`fleet status` shows them).
mod place {
    pub const WAITING: &str = "waiting";
    pub const UPGRADING: &str = "upgrading";
    pub const CHECKING: &str = "checking";
    pub const HEALTHY: &str = "healthy";
    pub const PERMANENT: &str = "permanent";
    pub const ROLLED_BACK: &str = "rolled-back";
    pub const NOT_STARTED: &str = "not-started";
    pub const ALREADY: &str = "already-permanent";
}

/// Whether `status` (a node's published JSON) has `vsn` permanent.
fn permanent_on(status: &str, vsn: &str) -> bool {
    let doc: serde_json::Value = serde_json::from_str(status).unwrap_or_default();
    doc["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["vsn"] == vsn && r["status"] == "permanent")
}

/// The root a node published, if it did.
fn root_of(members: &[NodeStatus], node: &str) -> Option<PathBuf> {
    let m = members.iter().find(|m| m.node == node)?;
    let doc: serde_json::Value = serde_json::from_str(&m.status).ok()?;
    doc["root"].as_str().map(PathBuf::from)
}

/// Splits `nodes` into the canary and the waves.
pub fn waves(nodes: &[String], canary: usize, wave: WaveSize) -> Vec<Vec<String>> {
    let canary = canary.min(nodes.len());
    let mut out = Vec::new();
    if canary > 0 {
        out.push(nodes[..canary].to_vec());
    }
    for chunk in nodes[canary..].chunks(wave.nodes(nodes.len())) {
        out.push(chunk.to_vec());
    }
    out
}

/// The instant `d` from now (a plan's deadline was checked by [`check_plan`] to fit).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now)
}

/// Refuses a plan that cannot be run: a release name that is no version, a progress
/// deadline too far to be a point in time.
fn check_plan(plan: &Plan) -> Result<(), FleetError> {
    crate::release::names::check_name(crate::release::names::NameKind::Vsn, &plan.vsn)
        .map_err(|why| FleetError::Invalid { what: "release", value: plan.vsn.clone(), why })?;
    if Instant::now().checked_add(plan.progress_deadline).is_none() {
        return Err(FleetError::Invalid {
            what: "--progress-deadline",
            value: format!("{}", plan.progress_deadline.as_secs()),
            why: "is too far in the future for this system's clock".to_owned(),
        });
    }
    Ok(())
}

/// What to call the one driving a rollout, in the lock.
fn holder(what: &str) -> String {
    format!("hotcode fleet {what} (pid {})", std::process::id())
}

/// `hotcode fleet install`: rolls `plan.vsn` out over the live nodes; the rollout as it
/// ended (phase `done`, `rolled_back` or `paused`). `say` gets one line per step.
pub fn install(
    endpoints: &[String],
    plan: &Plan,
    say: &mut dyn FnMut(&str),
) -> Result<RolloutState, FleetError> {
    check_plan(plan)?;
    let driver = Driver::lock(endpoints, &holder(&format!("install {}", plan.vsn)))?;
    if let Some(old) = driver.state()?
        && !old.phase.finished()
    {
        return Err(FleetError::Unfinished { id: old.id, vsn: old.vsn, phase: old.phase.word() });
    }
    let members = driver.members()?;
    let mut places = BTreeMap::new();
    let mut todo = Vec::new();
    for m in &members {
        if permanent_on(&m.status, &plan.vsn) {
            places.insert(m.node.clone(), place::ALREADY.to_owned());
        } else {
            places.insert(m.node.clone(), place::WAITING.to_owned());
            todo.push(m.node.clone());
        }
    }
    if todo.is_empty() {
        return Err(FleetError::NoNodes { vsn: plan.vsn.clone() });
    }
    let mut state = RolloutState {
        // The lock's etcd revision: no two rollouts of a cluster share it.
        id: format!("r{}", driver.revision()),
        vsn: plan.vsn.clone(),
        phase: Phase::Running,
        waves: waves(&todo, plan.canary, plan.wave),
        wave: 0,
        places,
        failures: 0,
        reason: None,
        plan: serde_json::to_value(plan).unwrap_or_default(),
        next_op: 0,
    };
    driver.put_state(&state)?;
    say(&format!(
        "rollout {} of release {}: {} node(s) in {} wave(s): {}",
        state.id,
        plan.vsn,
        todo.len(),
        state.waves.len(),
        state.waves.iter().map(|w| w.join(" ")).collect::<Vec<_>>().join(" | ")
    ));
    drive(&driver, &mut state, plan, say)?;
    Ok(state)
}

/// The paused rollout, its plan, and the lock.
fn paused(endpoints: &[String], what: &str) -> Result<(Driver, RolloutState, Plan), FleetError> {
    let driver = Driver::lock(endpoints, &holder(what))?;
    let state = match driver.state()? {
        // A running rollout whose driver is gone (we hold the lock) is stopped too.
        Some(s) if !s.phase.finished() => s,
        Some(s) => {
            return Err(FleetError::NotPaused {
                found: Some(format!("{} {}", s.id, s.phase.word())),
            });
        }
        None => return Err(FleetError::NotPaused { found: None }),
    };
    let plan: Plan = serde_json::from_value(state.plan.clone())
        .map_err(|e| FleetError::BadPlan { id: state.id.clone(), why: e.to_string() })?;
    check_plan(&plan)
        .map_err(|e| FleetError::BadPlan { id: state.id.clone(), why: e.to_string() })?;
    Ok((driver, state, plan))
}

/// `hotcode fleet promote`: the paused wave's upgraded nodes are taken as good (made
/// permanent), the failure count starts again, and the next waves go on.
pub fn promote(
    endpoints: &[String],
    say: &mut dyn FnMut(&str),
) -> Result<RolloutState, FleetError> {
    let (driver, mut state, plan) = paused(endpoints, "promote")?;
    if state.phase == Phase::Running {
        return Err(FleetError::Orphaned { id: state.id });
    }
    let wave = state.waves.get(state.wave).cloned().unwrap_or_default();
    // A node whose unpack or install failed has nothing to make permanent.
    let upgraded: Vec<String> = wave
        .iter()
        .filter(|n| upgraded(&state, n) && !failed_before_gate(&state, n))
        .cloned()
        .collect();
    say(&format!(
        "promote {}: wave {} ({}) taken as good",
        state.id,
        state.wave + 1,
        upgraded.join(" ")
    ));
    state.phase = Phase::Running;
    state.reason = None;
    state.failures = 0;
    let deadline = after(plan.progress_deadline);
    // Promoted, the record says running before any op is sent (nodes check it).
    driver.put_state(&state)?;
    let made = step(&driver, &mut state, &upgraded, deadline, |_| OpKind::MakePermanent {
        vsn: plan.vsn.clone(),
    })?;
    for (node, outcome) in made {
        let place = match outcome {
            Ok(()) => place::PERMANENT.to_owned(),
            Err(why) => format!("failed: make-permanent: {why}"),
        };
        state.places.insert(node, place);
    }
    state.wave += 1;
    driver.put_state(&state)?;
    drive(&driver, &mut state, &plan, say)?;
    Ok(state)
}

/// `hotcode fleet abort`: the paused rollout is given up as it stands; no node is sent
/// anything. Nodes whose release is not permanent yet boot their permanent one at their
/// next start.
pub fn abort(endpoints: &[String], say: &mut dyn FnMut(&str)) -> Result<RolloutState, FleetError> {
    let (driver, mut state, _) = paused(endpoints, "abort")?;
    not_started(&mut state);
    state.phase = Phase::Aborted;
    driver.put_state(&state)?;
    withdraw_all(&driver, &state)?;
    say(&format!("rollout {} aborted as it stood", state.id));
    Ok(state)
}

/// `hotcode fleet rollback`: the paused wave's upgraded nodes go back to their permanent
/// release.
pub fn rollback(
    endpoints: &[String],
    say: &mut dyn FnMut(&str),
) -> Result<RolloutState, FleetError> {
    let (driver, mut state, plan) = paused(endpoints, "rollback")?;
    roll_back(&driver, &mut state, &plan, say)?;
    Ok(state)
}

/// Whether `node` got (or may have got: an install without an answer) the new release in
/// this rollout and is not permanent on it. A rollback of a node that never installed it
/// finds the node on its permanent release and does nothing.
fn upgraded(state: &RolloutState, node: &str) -> bool {
    let place = state.places.get(node).map_or("", String::as_str);
    !(place == place::WAITING
        || place == place::PERMANENT
        || place == place::ALREADY
        || place == place::NOT_STARTED
        || place == place::ROLLED_BACK
        || place.starts_with("failed: unpack"))
}

/// Whether `node`'s unpack or install failed in this rollout (so nothing is to be made
/// permanent on it).
fn failed_before_gate(state: &RolloutState, node: &str) -> bool {
    let place = state.places.get(node).map_or("", String::as_str);
    place.starts_with("failed: unpack") || place.starts_with("failed: install")
}

/// Withdraws every op of the rollout that no node answered (the rollout stopped: a node
/// that comes back must not run them).
fn withdraw_all(driver: &Driver, state: &RolloutState) -> Result<(), FleetError> {
    let left = driver.unanswered(&state.id)?;
    if !left.is_empty() {
        driver.withdraw(&left)?;
    }
    Ok(())
}

/// Whether `status` (a node's published JSON) lists release `vsn`, whatever its status.
fn has_release(status: &str, vsn: &str) -> bool {
    let doc: serde_json::Value = serde_json::from_str(status).unwrap_or_default();
    doc["releases"].as_array().into_iter().flatten().any(|r| r["vsn"] == vsn)
}

/// Nodes of the waves after the current one were never sent anything.
fn not_started(state: &mut RolloutState) {
    for wave in state.waves.iter().skip(state.wave + 1) {
        for node in wave {
            state.places.insert(node.clone(), place::NOT_STARTED.to_owned());
        }
    }
}

/// Sends `kind(node)` to each of `nodes` at once and waits for their answers until
/// `deadline`: per node, `Ok` or why not.
fn step(
    driver: &Driver,
    state: &mut RolloutState,
    nodes: &[String],
    deadline: Instant,
    kind: impl Fn(&str) -> OpKind,
) -> Result<Outcomes, FleetError> {
    let mut ops = Vec::new();
    for node in nodes {
        let op = Op { id: format!("{}-{}", state.id, state.next_op), kind: kind(node) };
        state.next_op += 1;
        ops.push((node.clone(), op));
    }
    // The record first: a node runs an op only if the record says its rollout is running.
    driver.put_state(state)?;
    let mut pending = Vec::new();
    for (node, op) in ops {
        driver.submit(&node, &op)?;
        pending.push((node, op.id));
    }
    let answers = driver.wait(&pending, deadline)?;
    // An op nobody answered is withdrawn: a node that comes back never runs it late.
    let unanswered: Vec<(String, String)> =
        pending.iter().filter(|p| !matches!(answers.get(*p), Some(Ok(_)))).cloned().collect();
    if !unanswered.is_empty() {
        driver.withdraw(&unanswered)?;
    }
    Ok(pending
        .into_iter()
        .map(|(node, id)| {
            let outcome = match answers.get(&(node.clone(), id)) {
                Some(Ok(r)) if r.ok => Ok(()),
                Some(Ok(r)) => Err(r.text.clone()),
                Some(Err(NoAnswer::NodeDown)) => Err("the node left the cluster".to_owned()),
                Some(Err(NoAnswer::Deadline)) | None => {
                    Err("no answer before the progress deadline".to_owned())
                }
            };
            (node, outcome)
        })
        .collect())
}

/// Works through the waves from `state.wave`.
fn drive(
    driver: &Driver,
    state: &mut RolloutState,
    plan: &Plan,
    say: &mut dyn FnMut(&str),
) -> Result<(), FleetError> {
    while state.wave < state.waves.len() {
        let k = state.wave;
        let wave = state.waves[k].clone();
        let canary = k == 0 && plan.canary > 0;
        let label = if canary { "canary".to_owned() } else { format!("wave {}", k + 1) };
        say(&format!("{label}: {} -> release {}", wave.join(" "), plan.vsn));
        let deadline = after(plan.progress_deadline);
        let failures_before = state.failures;
        for node in &wave {
            state.places.insert(node.clone(), place::UPGRADING.to_owned());
        }
        let mut going: Vec<String> = wave.clone();
        let mut fail = |state: &mut RolloutState, node: &str, what: &str, why: String| {
            say(&format!("  {node}: {what} failed: {why}"));
            state.places.insert(node.to_owned(), format!("failed: {what}: {why}"));
            state.failures += 1;
        };
        if let Some(package) = &plan.package {
            // A node that has the release already (a rollout run again after a rollback
            // or an abort) is not asked to unpack it again.
            let members = driver.members()?;
            let (has, needs): (Vec<String>, Vec<String>) = going.iter().cloned().partition(|n| {
                members.iter().any(|m| &m.node == n && has_release(&m.status, &plan.vsn))
            });
            let unpacked = step(driver, state, &needs, deadline, |_| OpKind::Unpack {
                path: package.clone(),
            })?;
            going = has;
            going.extend(keep_ok(state, unpacked, "unpack", &mut fail));
            going.sort_by_key(|n| wave.iter().position(|w| w == n));
        }
        let attempt = format!("{}-w{k}", state.id);
        let installed = step(driver, state, &going, deadline, |_| OpKind::Install {
            vsn: plan.vsn.clone(),
            attempt: Some(attempt.clone()),
        })?;
        going = keep_ok(state, installed, "install", &mut fail);
        if let Some(health) = &plan.health {
            let members = driver.members()?;
            for node in &going {
                state.places.insert(node.clone(), place::CHECKING.to_owned());
            }
            driver.put_state(state)?;
            let checks: Outcomes = std::thread::scope(|s| {
                let threads: Vec<_> = going
                    .iter()
                    .map(|node| {
                        let root = root_of(&members, node);
                        let vsn = plan.vsn.as_str();
                        let t = s.spawn(move || health.check(node, root.as_deref(), vsn, deadline));
                        (node.clone(), t)
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|(n, t)| (n, t.join().unwrap_or_else(|_| Err("the gate panicked".into()))))
                    .collect()
            });
            going = keep_ok(state, checks, "health", &mut fail);
        }
        for node in &going {
            say(&format!("  {node}: upgraded and healthy"));
            state.places.insert(node.clone(), place::HEALTHY.to_owned());
        }
        // An op unanswered or a gate killed at the deadline leaves no time either.
        let late = Instant::now() >= deadline;
        if let Some(reason) = too_many(state, plan, &label, canary, failures_before, late) {
            return fail_rollout(driver, state, plan, reason, say);
        }
        // Failures within the threshold: those nodes go back; the wave passed.
        let failed: Vec<String> =
            wave.iter().filter(|n| upgraded(state, n) && !going.contains(n)).cloned().collect();
        if !failed.is_empty() {
            let back =
                step(driver, state, &failed, after(plan.progress_deadline), |_| OpKind::Rollback)?;
            for (node, outcome) in back {
                let place = match outcome {
                    Ok(()) => place::ROLLED_BACK.to_owned(),
                    Err(why) => format!("failed: rollback: {why}"),
                };
                state.places.insert(node, place);
            }
        }
        let made = step(driver, state, &going, after(plan.progress_deadline), |_| {
            OpKind::MakePermanent { vsn: plan.vsn.clone() }
        })?;
        for (node, outcome) in made {
            match outcome {
                Ok(()) => {
                    state.places.insert(node, place::PERMANENT.to_owned());
                }
                Err(why) => {
                    say(&format!("  {node}: make-permanent failed: {why}"));
                    state.places.insert(node, format!("failed: make-permanent: {why}"));
                    state.failures += 1;
                }
            }
        }
        // A make-permanent that failed counts too: the threshold is looked at again.
        if let Some(reason) = too_many(state, plan, &label, canary, failures_before, false) {
            return fail_rollout(driver, state, plan, reason, say);
        }
        say(&format!("{label}: permanent on release {}", plan.vsn));
        state.wave += 1;
        driver.put_state(state)?;
    }
    state.phase = Phase::Done;
    driver.put_state(state)?;
    say(&format!(
        "rollout {} done: release {} permanent on every node reached",
        state.id, plan.vsn
    ));
    Ok(())
}

/// Why the rollout fails after a wave, if it does: more failures than `max_failures`,
/// any failure in the canary wave (the threshold is for the later waves), or the wave
/// `late` past its progress deadline.
fn too_many(
    state: &RolloutState,
    plan: &Plan,
    label: &str,
    canary: bool,
    failures_before: u32,
    late: bool,
) -> Option<String> {
    if late {
        Some(format!(
            "{label}: not through its gate within the progress deadline ({:?})",
            plan.progress_deadline
        ))
    } else if canary && state.failures > failures_before {
        Some(format!(
            "canary: {} failure(s); any failure of the canary fails the rollout",
            state.failures - failures_before
        ))
    } else if state.failures > plan.max_failures {
        Some(format!(
            "{label}: {} failure(s), more than --max-failures {}",
            state.failures, plan.max_failures
        ))
    } else {
        None
    }
}

/// The rollout failed for `reason`: rolled back or paused, as the plan says.
fn fail_rollout(
    driver: &Driver,
    state: &mut RolloutState,
    plan: &Plan,
    reason: String,
    say: &mut dyn FnMut(&str),
) -> Result<(), FleetError> {
    say(&format!("rollout {} failed: {reason}", state.id));
    state.reason = Some(reason);
    match plan.on_failure {
        OnFailure::Rollback => roll_back(driver, state, plan, say),
        OnFailure::Pause => {
            state.phase = Phase::Paused;
            driver.put_state(state)?;
            withdraw_all(driver, state)?;
            say(&format!(
                "rollout {} paused: `hotcode fleet promote`, `abort` or `rollback`",
                state.id
            ));
            Ok(())
        }
    }
}

/// The nodes of `outcomes` that succeeded; the others counted as failures.
fn keep_ok(
    state: &mut RolloutState,
    outcomes: Outcomes,
    what: &str,
    fail: &mut impl FnMut(&mut RolloutState, &str, &str, String),
) -> Vec<String> {
    let mut ok = Vec::new();
    for (node, outcome) in outcomes {
        match outcome {
            Ok(()) => ok.push(node),
            Err(why) => fail(state, &node, what, why),
        }
    }
    ok
}

/// The current wave's upgraded nodes go back to their permanent release; later waves are
/// never started.
fn roll_back(
    driver: &Driver,
    state: &mut RolloutState,
    plan: &Plan,
    say: &mut dyn FnMut(&str),
) -> Result<(), FleetError> {
    // What was sent and not answered is withdrawn first: no node installs it after.
    withdraw_all(driver, state)?;
    let wave = state.waves.get(state.wave).cloned().unwrap_or_default();
    let back: Vec<String> = wave.iter().filter(|n| upgraded(state, n)).cloned().collect();
    let outcomes = step(driver, state, &back, after(plan.progress_deadline), |_| OpKind::Rollback)?;
    for (node, outcome) in outcomes {
        let place = match outcome {
            Ok(()) => place::ROLLED_BACK.to_owned(),
            Err(why) => format!("failed: rollback: {why}"),
        };
        say(&format!("  {node}: {place}"));
        state.places.insert(node, place);
    }
    not_started(state);
    state.phase = Phase::RolledBack;
    driver.put_state(state)?;
    say(&format!("rollout {} rolled back; the nodes of later waves were never started", state.id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_are_the_canary_then_chunks() {
        let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        let w = waves(&nodes, 1, WaveSize::Nodes(2));
        assert_eq!(w, vec![vec!["n1"], vec!["n2", "n3"], vec!["n4", "n5"]]);
        let w = waves(&nodes, 0, WaveSize::Percent(40));
        assert_eq!(w.len(), 3);
        assert_eq!(WaveSize::parse("25%"), Ok(WaveSize::Percent(25)));
        assert!(WaveSize::parse("0").is_err() && WaveSize::parse("101%").is_err());
    }
}
