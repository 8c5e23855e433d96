//! The release handler: moving a running node from one release to another, OTP style.
//!
//! A release root (SPEC §6) holds libraries by application version (`lib/<app>-<vsn>/`),
//! one directory per release (`releases/<vsn>/` with its `.rel` and, for upgrades, its
//! `relup`) and the `releases/RELEASES` file with each release's status. The handler:
//!
//! - **boots** the permanent release: loads every module of every application, loads the
//!   application specs, starts the applications that are not included in another;
//! - **checks** an install (`check.rs`): the relup entry for the current version is found as
//!   OTP does (upgrade: `releases/<New>/relup` up-list; downgrade: `releases/<Current>/relup`
//!   down-list), every instruction is validated, every file is inspected without loading it,
//!   and soft-purged modules must not be held. No side effect on the node;
//! - **installs** (`eval.rs`): object code first, then the preflight of every state
//!   migration on a copy in the staged code (any error drops everything staged, the node
//!   is exactly as before), then, after the point of no return, the rest in order, and a
//!   check that every migrated process did migrate; an error there follows the
//!   [`ErrorAction`];
//! - keeps RELEASES on disk with atomic writes, and never writes `current`: a node that dies
//!   at any instant of an install boots the permanent release again;
//! - in a cluster ([`cluster`], SPEC §12), meets the other nodes at `sync_nodes` within the
//!   install's attempt ([`InstallOptions::attempt`]): a barrier that fails before the point
//!   of no return drops everything staged and gives the attempt up, so the nodes still
//!   waiting stop too (as does any failure of an install with an attempt before its point
//!   of no return, its check included); after it, the [`ErrorAction`]. It publishes its releases after every
//!   operation;
//! - records why the node exits, when it exits on purpose, in `ROOT/run/last-exit`
//!   ([`last_exit`]);
//! - restarts the host (`restart_new_emulator`, `restart_emulator`, `ctl restart`) by
//!   starting the release's host binary and handing it the node ([`restart`]): the sockets,
//!   the root's lock, and the state of the gen_servers that opt in.
//!
//! One operation at a time holds the handler's lock, from its check to its last write.
//! Reading what the releases are ([`ReleaseHandler::which_releases`],
//! [`ReleaseHandler::current`]) does not wait for it: readers see the state as the last
//! operation left it, published when that operation let go of the lock.

mod check;
pub mod cluster;
mod eval;
mod integrity;
pub mod last_exit;
pub mod restart;
mod unpack;

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use plugin_api::Term;

use crate::code::code_server::{CodeServer, Config, PurgeMethod, Purged};
use crate::code::error::{CodeServerError, LoadError};
use crate::release::files::{
    AppSpec, ReleaseApp, ReleaseEntry, ReleaseStatus, read_releases, write_releases_atomically,
};
use crate::release::names::{NameKind, check_name, host_binary_path, lib_dir_name, root_path};
use crate::release::{Direction, ParseError};

use crate::runtime::application::{AppError, RestartType};
use crate::runtime::bounded::Timeouts;
use crate::runtime::node::Node;
use cluster::{Cluster, ClusterStatus, SyncFailure};
use integrity::Record;
use restart::{HandedStates, Hello, HostRestart, RestartError, Successor};

pub use check::{Plan, RestartKind};

/// A relup's purge word, handed to the code server as its own.
impl From<crate::release::relup::PurgeMethod> for PurgeMethod {
    fn from(method: crate::release::relup::PurgeMethod) -> PurgeMethod {
        match method {
            crate::release::relup::PurgeMethod::SoftPurge => PurgeMethod::SoftPurge,
            crate::release::relup::PurgeMethod::BrutalPurge => PurgeMethod::BrutalPurge,
        }
    }
}

/// The exit code of a node that exits so that its service manager restarts it (after an
/// error past the point of no return, with [`ErrorAction::Restart`]).
pub const EXIT_RESTART: i32 = 3;

/// What to do when an instruction fails after the point of no return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Log, record why in `ROOT/run/last-exit` ([`last_exit`]) and exit the process with
    /// [`EXIT_RESTART`], so that the service manager restarts the node, which boots the
    /// permanent release (`hotcode boot` does this).
    Restart,
    /// Return the error; the embedder decides.
    Return,
}

/// A release handling operation failed or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A release file is unreadable or malformed (names file, line and column).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A release package (`.tar.gz`) was refused: the error names the package and the
    /// entry.
    #[error(transparent)]
    Package(#[from] crate::release::package::PackageError),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// RELEASES names no permanent release.
    #[error("{}: no permanent release to boot", path.display())]
    NoPermanent {
        /// The RELEASES file.
        path: PathBuf,
    },
    /// No release with that version.
    #[error("unknown release {vsn}")]
    UnknownRelease {
        /// The version asked for.
        vsn: String,
    },
    /// `install` of the release that is running.
    #[error("release {vsn} is already the current release")]
    AlreadyCurrent {
        /// The version.
        vsn: String,
    },
    /// No relup entry leads from the current release to the one asked for.
    #[error(
        "no relup entry from {from} to {to}: {} has no up entry from {from}, and {} no down entry to {to}",
        up.display(), down.display()
    )]
    NoScript {
        /// The current release.
        from: String,
        /// The target release.
        to: String,
        /// Where an upgrade script would be.
        up: PathBuf,
        /// Where a downgrade script would be.
        down: PathBuf,
    },
    /// The check found problems; each names a position (`path:line:col: message`).
    #[error("the install of {vsn} was refused:\n  {}", problems.join("\n  "))]
    Check {
        /// The target release.
        vsn: String,
        /// Every problem found.
        problems: Vec<String>,
    },
    /// Loading object code failed before the point of no return; everything staged was
    /// dropped and the node is as it was.
    #[error("loading object code failed, nothing changed: {0}")]
    Load(#[from] LoadError),
    /// The preflight before the point of no return found that a process's state would
    /// not survive its migration: nothing was changed, everything staged was dropped.
    #[error(
        "the install of {vsn} was refused, nothing changed: the {direction} code_change of {process} ({module}) would fail: {reason}"
    )]
    Preflight {
        /// The target release.
        vsn: String,
        /// The process (`<0.N.0>`), or `processes` when the failure was not one process's.
        process: String,
        /// Its callback module.
        module: String,
        /// `up`, `down`, or `implicit` (a migration without a `code_change` instruction).
        direction: &'static str,
        /// Why.
        reason: String,
    },
    /// A `sync_nodes` before the point of no return failed: everything staged was dropped,
    /// the attempt given up (so the nodes still waiting stop too), the node is as it was.
    #[error(
        "the install of {vsn} stopped at {at}: sync_nodes {id} of attempt {attempt} failed, nothing changed: {reason}"
    )]
    Sync {
        /// The target release.
        vsn: String,
        /// `path:line:col` of the instruction.
        at: String,
        /// The barrier's Id.
        id: String,
        /// The attempt.
        attempt: String,
        /// Why, naming the node (boxed: the error stays small on every other path).
        reason: Box<SyncFailure>,
    },
    /// An instruction failed after the point of no return.
    #[error("{at}: {instruction} failed after the point of no return: {reason}")]
    AfterPointOfNoReturn {
        /// `path:line:col` of the instruction.
        at: String,
        /// The instruction.
        instruction: String,
        /// Why.
        reason: String,
    },
    /// `remove` of the permanent release.
    #[error("release {vsn} is permanent and cannot be removed")]
    RemovePermanent {
        /// The version.
        vsn: String,
    },
    /// `remove` of the release that is running.
    #[error("release {vsn} is the current release and cannot be removed")]
    RemoveCurrent {
        /// The version.
        vsn: String,
    },
    /// `make_permanent` of a release that is not current.
    #[error("release {vsn} is not the current release (install it first)")]
    NotCurrent {
        /// The version.
        vsn: String,
    },
    /// `reboot_old` of a release that is not old.
    #[error("release {vsn} is not an old release")]
    NotOld {
        /// The version.
        vsn: String,
    },
    /// `unpack` of a release that exists already.
    #[error("release {vsn} is already unpacked")]
    AlreadyUnpacked {
        /// The version.
        vsn: String,
    },
    /// The release was built for another host version.
    #[error("release {vsn} needs hotcode {found}, this is hotcode {expected}")]
    HostVersion {
        /// The release.
        vsn: String,
        /// What it names.
        found: String,
        /// What this host is.
        expected: String,
    },
    /// Something else in the release is inconsistent (named in the message).
    #[error("{0}")]
    Invalid(String),
    /// Booting an application failed.
    #[error("boot: {0}")]
    App(#[from] AppError),
    /// Booting a module failed.
    #[error("boot: {0}")]
    Code(#[from] CodeServerError),
    /// Restarting the host failed: the node keeps serving the release it was on, and
    /// nothing on disk changed.
    #[error("the host restart failed, the node serves on unchanged: {0}")]
    Restart(#[from] RestartError),
    /// A script ending with `restart_emulator` ran, but restarting the host then failed:
    /// the node serves on, on the old host, with the new release current (not permanent).
    #[error(
        "the script of release {vsn} ran, but the host restart that ends it failed: {source}; \
         the node serves release {vsn} (current, not permanent) on the old host"
    )]
    RestartAfterScript {
        /// The release installed.
        vsn: String,
        /// Why the restart failed.
        #[source]
        source: RestartError,
    },
}

/// One step of an install, reported before it runs.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The step's number, from 1.
    pub step: usize,
    /// How many steps the install has.
    pub total: usize,
    /// The instruction, in relup syntax.
    pub instruction: &'a crate::release::Instruction,
}

/// How an install runs, beyond its target release.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// The upgrade attempt this install belongs to: the same on every node of one fleet
    /// upgrade, new for each try. Needed by a script with `sync_nodes`; a word (no `/`).
    pub attempt: Option<String>,
}

/// The host version releases must name in their `.rel` (`{hotcode, Vsn}`): the package's
/// version, unless the build set `HOTCODE_HOST_VSN` (`cargo xtask dist` builds a second
/// host binary so, for the service example's host restart).
pub const HOST_VSN: &str = match option_env!("HOTCODE_HOST_VSN") {
    Some(vsn) => vsn,
    None => env!("CARGO_PKG_VERSION"),
};

/// A release as `which_releases` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// The release's name.
    pub name: String,
    /// Its version.
    pub vsn: String,
    /// Its applications and their versions.
    pub apps: Vec<(String, String)>,
    /// Its status; `Current` for an installed release that is not permanent yet.
    pub status: ReleaseStatus,
}

/// What `install` returns: OTP's `{ok, OtherVsn, Descr}` ([`Installed::to_term`]), and
/// what hotcode knows besides.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    /// OTP's `OtherVsn`: the version of the relup entry that ran (release_handler(3)): on
    /// an upgrade the release the node came from, on a downgrade the release it went to.
    pub other_vsn: String,
    /// The release the node came from.
    pub from: String,
    /// Up or down.
    pub direction: Direction,
    /// The relup entry's description.
    pub descr: Term,
    /// How long processes were suspended (first suspend to last resume), if any were.
    pub suspend_window: Option<std::time::Duration>,
    /// The pid of the new host process that took over the node, when the script restarts
    /// the host (`restart_new_emulator`, `restart_emulator`). This process must then hand
    /// the node over ([`ReleaseHandler::take_successor`]) and exit.
    pub restarted: Option<u32>,
    /// OTP's `{continue_after_restart, OldVsn, Descr}`: the script began with
    /// `restart_new_emulator`, so the new host runs the rest of it; this node ran none.
    pub continue_after_restart: bool,
}

impl Installed {
    /// `{ok, OtherVsn, Descr}`, as `release_handler:install_release/1` returns it.
    pub fn to_term(&self) -> Term {
        Term::tuple([Term::ok(), Term::Str(self.other_vsn.clone()), self.descr.clone()])
    }
}

struct State {
    /// The releases as on disk: `unpacked`, `permanent`, `old` (never `current`).
    releases: Vec<ReleaseEntry>,
    /// The release the node runs now.
    current: String,
    /// Each release's integrity record, by release version.
    records: std::collections::BTreeMap<String, Record>,
}

/// What readers see without waiting for an operation: the releases and the current one as
/// the last operation left them.
struct View {
    releases: Vec<ReleaseEntry>,
    current: String,
}

/// The handler's lock, held by one operation at a time. Letting go of it publishes the
/// state to the [`View`].
struct StateGuard<'a> {
    state: MutexGuard<'a, State>,
    view: &'a Mutex<View>,
    cluster: Option<&'a Arc<dyn Cluster>>,
}

impl Deref for StateGuard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        // Lock order: the state, then the view; readers take only the view.
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let changed = view.releases != self.state.releases || view.current != self.state.current;
        view.releases.clone_from(&self.state.releases);
        view.current.clone_from(&self.state.current);
        if changed && let Some(cluster) = self.cluster {
            cluster.publish(&view.cluster_status());
        }
    }
}

impl View {
    fn cluster_status(&self) -> ClusterStatus {
        ClusterStatus {
            current: self.current.clone(),
            releases: self
                .releases
                .iter()
                .map(|r| {
                    let status = if r.vsn == self.current && r.status != ReleaseStatus::Permanent {
                        ReleaseStatus::Current
                    } else {
                        r.status
                    };
                    (r.vsn.clone(), status.to_string())
                })
                .collect(),
        }
    }
}

/// The release handler of one node and one release root. See the [module docs](self).
pub struct ReleaseHandler {
    root: PathBuf,
    node: Node,
    error_action: ErrorAction,
    state: Mutex<State>,
    view: Mutex<View>,
    /// How to restart the host, if the front said ([`ReleaseHandler::set_host_restart`]).
    host_restart: Mutex<Option<HostRestart>>,
    /// The new host process that reported ready, until the front takes it.
    successor: Mutex<Option<Successor>>,
    cluster: OnceLock<Arc<dyn Cluster>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io { path: path.to_owned(), source }
}

impl ReleaseHandler {
    /// Boots the permanent release of `root` on a new node, with the default [`Timeouts`].
    pub fn boot(root: impl Into<PathBuf>, error_action: ErrorAction) -> Result<Self, ReleaseError> {
        Self::boot_with(root, error_action, Timeouts::default())
    }

    /// Boots the permanent release of `root` on a new node that waits for plugin code as
    /// `timeouts` say (from the boot on: `init` and `start` of the release's processes and
    /// applications, then every install's `apply`s and `code_change`s).
    ///
    /// The node's private library copies go to `ROOT/run/lib/<pid>-<n>/` (`ROOT/run` is
    /// made with mode 0700 if missing); what a node that died left there is removed first.
    pub fn boot_with(
        root: impl Into<PathBuf>,
        error_action: ErrorAction,
        timeouts: Timeouts,
    ) -> Result<Self, ReleaseError> {
        Self::boot_inner(root.into(), error_action, timeouts, None)
    }

    /// Boots release `vsn` of `root`, whatever its status, on a new node: the new host
    /// process of a restart boots the release its predecessor ran ([`restart::Hello`]),
    /// which need not be permanent nor name this host's version (after
    /// `restart_new_emulator` the new host runs the old release's applications, then the
    /// rest of the script: [`ReleaseHandler::continue_install`]).
    pub fn boot_release(
        root: impl Into<PathBuf>,
        error_action: ErrorAction,
        timeouts: Timeouts,
        vsn: &str,
    ) -> Result<Self, ReleaseError> {
        check_vsn(vsn)?;
        Self::boot_inner(root.into(), error_action, timeouts, Some(vsn))
    }

    fn boot_inner(
        root: PathBuf,
        error_action: ErrorAction,
        timeouts: Timeouts,
        vsn: Option<&str>,
    ) -> Result<Self, ReleaseError> {
        // Absolute: the private copies live below it, and the unload check compares their
        // paths with `/proc/self/maps`, which has only absolute ones.
        let root = std::path::absolute(&root).map_err(io(&root))?;
        let path = root.join("releases").join("RELEASES");
        let releases = read_releases(&path)?;
        let permanent = match vsn {
            None => {
                let permanent = releases
                    .iter()
                    .find(|r| r.status == ReleaseStatus::Permanent)
                    .cloned()
                    .ok_or_else(|| ReleaseError::NoPermanent { path: path.clone() })?;
                check_host_vsn(&permanent.vsn, &permanent.host_vsn)?;
                permanent
            }
            Some(vsn) => releases
                .iter()
                .find(|r| r.vsn == vsn)
                .cloned()
                .ok_or_else(|| ReleaseError::UnknownRelease { vsn: vsn.to_owned() })?,
        };
        let node = Node::with_code_server(CodeServer::with_config(Config {
            scratch_parent: Some(private_copies_dir(&root)?),
        })?);
        node.set_timeouts(timeouts);
        let handler = ReleaseHandler {
            root,
            node,
            error_action,
            view: Mutex::new(View { releases: releases.clone(), current: permanent.vsn.clone() }),
            cluster: OnceLock::new(),
            state: Mutex::new(State {
                releases,
                current: permanent.vsn.clone(),
                records: Default::default(),
            }),
            host_restart: Mutex::new(None),
            successor: Mutex::new(None),
        };
        handler.finish_interrupted()?;
        handler.load_records()?;
        log::info!("booting release {} {}", permanent.name, permanent.vsn);
        handler.start_release(&permanent)?;
        Ok(handler)
    }

    fn lock(&self) -> StateGuard<'_> {
        // Every write to the state happens after the step it records succeeded.
        StateGuard {
            state: self.state.lock().unwrap_or_else(|p| p.into_inner()),
            view: &self.view,
            cluster: self.cluster.get(),
        }
    }

    /// Puts the node in a cluster (once: a node does not change clusters while it runs),
    /// and publishes its releases there. Returns `false` if it already was in one.
    pub fn join_cluster(&self, cluster: Arc<dyn Cluster>) -> bool {
        if self.cluster.set(Arc::clone(&cluster)).is_err() {
            return false;
        }
        cluster.publish(&self.view().cluster_status());
        true
    }

    /// The cluster the node is in, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.get()
    }

    /// The state as the last operation left it, without waiting for one that runs.
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The release root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The version of the release the node runs (while an install runs: the one it started
    /// from). Does not wait for a running operation.
    pub fn current(&self) -> String {
        self.view().current.clone()
    }

    /// The library directory of `app`: always `ROOT/lib/<app>-<vsn>`, built from its checked
    /// name and version (RELEASES's LibDir is refused at reading unless it says the same).
    fn lib_dir(&self, app: &ReleaseApp) -> PathBuf {
        self.root.join("lib").join(lib_dir_name(&app.name, &app.vsn))
    }

    /// `ROOT/releases/<vsn>`, for a version that passed [`check_vsn`].
    fn release_dir(&self, vsn: &str) -> Result<PathBuf, ReleaseError> {
        root_path(&self.root, &["releases", vsn]).map_err(ReleaseError::Invalid)
    }

    /// Reads the `.app` of every application of `entry`.
    fn app_specs(&self, entry: &ReleaseEntry) -> Result<Vec<(AppSpec, PathBuf)>, ReleaseError> {
        entry
            .apps
            .iter()
            .map(|app| {
                let dir = self.lib_dir(app);
                let file = dir.join(format!("{}.app", app.name));
                self.trusted(&file)?;
                let spec = AppSpec::read(&file)?;
                if spec.name != app.name {
                    return Err(ReleaseError::Invalid(format!(
                        "{}: the file describes application {}, but release {} names {}",
                        file.display(),
                        spec.name,
                        entry.vsn,
                        app.name
                    )));
                }
                if spec.vsn != app.vsn {
                    return Err(ReleaseError::Invalid(format!(
                        "{}: application {} has vsn {}, but release {} needs {}",
                        dir.display(),
                        app.name,
                        spec.vsn,
                        entry.vsn,
                        app.vsn
                    )));
                }
                Ok((spec, dir))
            })
            .collect()
    }

    /// Loads and starts a release on the (empty) node, as OTP's boot script does.
    fn start_release(&self, entry: &ReleaseEntry) -> Result<(), ReleaseError> {
        let specs = self.app_specs(entry)?;
        let record = self.record(&self.lock(), &entry.vsn);
        for (spec, dir) in &specs {
            for module in &spec.modules {
                self.stage(&record, module, &dir.join(format!("{module}.so")))?;
                self.node.load_module(module, PurgeMethod::SoftPurge, PurgeMethod::SoftPurge)?;
            }
        }
        let included: BTreeSet<&str> = specs
            .iter()
            .flat_map(|(s, _)| s.included_applications.iter().map(String::as_str))
            .collect();
        for (spec, _) in &specs {
            self.node.load_application(spec.clone())?;
        }
        for (spec, _) in &specs {
            if !included.contains(spec.name.as_str()) {
                self.node.start_application(&spec.name, RestartType::Permanent)?;
            }
        }
        Ok(())
    }

    /// `release_handler:which_releases()`, as the last operation left the releases: it does
    /// not wait for a running one.
    pub fn which_releases(&self) -> Vec<ReleaseInfo> {
        let state = self.view();
        state
            .releases
            .iter()
            .map(|r| ReleaseInfo {
                name: r.name.clone(),
                vsn: r.vsn.clone(),
                apps: r.apps.iter().map(|a| (a.name.clone(), a.vsn.clone())).collect(),
                status: if r.vsn == state.current && r.status != ReleaseStatus::Permanent {
                    ReleaseStatus::Current
                } else {
                    r.status
                },
            })
            .collect()
    }

    /// `release_handler:check_install_release(Vsn)`: everything `install` would check,
    /// with no side effect on the node.
    pub fn check_install(&self, vsn: &str) -> Result<Plan, ReleaseError> {
        check_vsn(vsn)?;
        let state = self.lock();
        check::plan(self, &state, vsn, false)
    }

    /// `release_handler:install_release(Vsn)`: checks, then evaluates the relup entry.
    pub fn install(&self, vsn: &str) -> Result<Installed, ReleaseError> {
        self.install_with_progress(vsn, &mut |_| {})
    }

    /// [`install`](Self::install), reporting each instruction before it runs, so a person
    /// can follow a long install (`hotcode ctl install` prints these lines).
    pub fn install_with_progress(
        &self,
        vsn: &str,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Installed, ReleaseError> {
        self.install_with(vsn, &InstallOptions::default(), progress)
    }

    /// [`install_with_progress`](Self::install_with_progress) within an upgrade attempt
    /// ([`InstallOptions`]), which a script with `sync_nodes` needs.
    pub fn install_with(
        &self,
        vsn: &str,
        options: &InstallOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Installed, ReleaseError> {
        check_vsn(vsn)?;
        if let Some(attempt) = &options.attempt {
            check_name(NameKind::Release, attempt).map_err(|e| {
                ReleaseError::Invalid(format!("attempt {attempt:?} is not a word: {e}"))
            })?;
        }
        let mut state = self.lock();
        let attempt = options.attempt.as_deref();
        let plan = match check::plan(self, &state, vsn, false) {
            Ok(plan) => plan,
            Err(e) => {
                // A node whose check refuses never reaches a barrier: the others must not
                // wait for it.
                if let (Some(cluster), Some(attempt)) = (self.cluster(), attempt) {
                    cluster.abort(attempt);
                }
                return Err(e);
            }
        };
        if attempt.is_none()
            && let Some(sync) =
                plan.entry.instructions.iter().find(|i| i.value.name() == "sync_nodes")
        {
            return Err(ReleaseError::Check {
                vsn: vsn.to_owned(),
                problems: vec![format!(
                    "{}:{}: sync_nodes needs the upgrade attempt's id, the same on every node \
                     (hotcode ctl ROOT install {vsn} --attempt ID)",
                    plan.script.display(),
                    sync.pos
                )],
            });
        }
        log::info!(
            "installing release {vsn} ({} from {}, {} instructions from {})",
            if plan.direction == Direction::Up { "upgrade" } else { "downgrade" },
            state.current,
            plan.entry.instructions.len(),
            plan.script.display()
        );
        if plan.restart == Some(RestartKind::NewEmulator) {
            // OTP: the node restarts on the new host with the old release's applications,
            // and the rest of the script runs there, as part of its boot. Nothing of it runs
            // here: if the new host fails, this node is exactly as it was.
            if let Some(first) = plan.entry.instructions.first() {
                progress(Progress {
                    step: 1,
                    total: plan.entry.instructions.len(),
                    instruction: &first.value,
                });
            }
            let hello = Hello {
                old_pid: std::process::id(),
                boot: state.current.clone(),
                continue_install: Some(vsn.to_owned()),
            };
            let pid = match self.start_successor(&plan.target, &plan.record, &hello) {
                Ok(pid) => pid,
                Err(e) => {
                    // Nothing ran here; the other nodes of this attempt must not wait for
                    // a node that will not reach their barriers.
                    if let (Some(cluster), Some(attempt)) = (self.cluster(), attempt) {
                        cluster.abort(attempt);
                    }
                    return Err(e.into());
                }
            };
            log::info!(
                "release {vsn}: the new host (pid {pid}) runs the rest of the script \
                 (continue_after_restart from {})",
                state.current
            );
            return Ok(Installed {
                other_vsn: plan.entry.vsn.clone(),
                from: state.current.clone(),
                direction: plan.direction,
                descr: plan.entry.descr.clone(),
                suspend_window: None,
                restarted: Some(pid),
                continue_after_restart: true,
            });
        }
        let suspend_window = match eval::run(self, &plan, attempt, progress) {
            Ok(window) => window,
            Err(e @ ReleaseError::AfterPointOfNoReturn { .. }) => {
                if self.error_action == ErrorAction::Restart {
                    let permanent = state
                        .releases
                        .iter()
                        .find(|r| r.status == ReleaseStatus::Permanent)
                        .map_or("?", |r| r.vsn.as_str());
                    let reason = format!(
                        "install of release {vsn} failed: {e}; the node exits with \
                         {EXIT_RESTART} so that its service manager restarts it on the permanent \
                         release {permanent}"
                    );
                    log::error!("{reason}");
                    // Before the exit closes the client's connection: the client reads it
                    // when it sees the connection close without an answer.
                    last_exit::record_exit(&self.root, EXIT_RESTART, &reason);
                    log::logger().flush();
                    // No destructor runs from here: the code layer's exit hook removes
                    // the node's private library copies (ROOT/run/lib/<pid>-<n>).
                    std::process::exit(EXIT_RESTART);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let from = std::mem::replace(&mut state.current, vsn.to_owned());
        // release_handler(3): a `current` release becomes `old` when another is installed
        // (the permanent one stays permanent). Like OTP, an install writes nothing: the next
        // write of RELEASES records it, and a node restarted before that finds the release
        // `unpacked`, as OTP's does.
        for release in &mut state.releases {
            if release.vsn == from && release.status != ReleaseStatus::Permanent {
                release.status = ReleaseStatus::Old;
            }
        }
        log::info!("release {vsn} installed (from {from}); make it permanent to keep it");
        let restarted = if plan.restart == Some(RestartKind::Emulator) {
            // OTP's restart_emulator: the script ran; the node restarts into the release.
            let hello =
                Hello { old_pid: std::process::id(), boot: vsn.to_owned(), continue_install: None };
            match self.start_successor(&plan.target, &plan.record, &hello) {
                Ok(pid) => Some(pid),
                Err(source) => {
                    return Err(ReleaseError::RestartAfterScript { vsn: vsn.to_owned(), source });
                }
            }
        } else {
            None
        };
        Ok(Installed {
            other_vsn: plan.entry.vsn.clone(),
            from,
            direction: plan.direction,
            descr: plan.entry.descr.clone(),
            suspend_window,
            restarted,
            continue_after_restart: false,
        })
    }

    /// The new host's side of `restart_new_emulator`: the node booted the old release
    /// ([`ReleaseHandler::boot_release`]); this checks the install of `vsn` again and runs
    /// the rest of its script (everything after `restart_new_emulator`). An error is
    /// returned whatever the [`ErrorAction`]: the new process then tells the old one, which
    /// serves on, and exits.
    pub fn continue_install(
        &self,
        vsn: &str,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Installed, ReleaseError> {
        check_vsn(vsn)?;
        let mut state = self.lock();
        let plan = check::plan(self, &state, vsn, true)?;
        if plan.restart != Some(RestartKind::NewEmulator) {
            return Err(ReleaseError::Invalid(format!(
                "{}: the script to release {vsn} does not begin with restart_new_emulator; \
                 there is nothing to continue",
                plan.script.display()
            )));
        }
        log::info!(
            "continuing the install of release {vsn} after restart_new_emulator ({} \
             instructions from {})",
            plan.entry.instructions.len().saturating_sub(1),
            plan.script.display()
        );
        let suspend_window = eval::run(self, &plan, None, progress)?;
        let from = std::mem::replace(&mut state.current, vsn.to_owned());
        // As after any install: the release left becomes `old` (release_handler(3)).
        for release in &mut state.releases {
            if release.vsn == from && release.status != ReleaseStatus::Permanent {
                release.status = ReleaseStatus::Old;
            }
        }
        log::info!("release {vsn} installed (from {from}); make it permanent to keep it");
        Ok(Installed {
            other_vsn: plan.entry.vsn.clone(),
            from,
            direction: plan.direction,
            descr: plan.entry.descr.clone(),
            suspend_window,
            restarted: None,
            continue_after_restart: false,
        })
    }

    /// Lets this node restart its host: `restart_new_emulator`, `restart_emulator` and
    /// [`ReleaseHandler::restart_host`] start the release's host binary as `restart` says
    /// (see [`restart`]). Without it, check-install refuses scripts that restart the host.
    pub fn set_host_restart(&self, restart: HostRestart) {
        *self.host_restart.lock().unwrap_or_else(|p| p.into_inner()) = Some(restart);
    }

    /// `hotcode ctl ROOT restart`: restarts the host in place, on the current release and
    /// its host binary (a host fix), by the same handover. Returns the new process's pid;
    /// this process must then hand the node over ([`ReleaseHandler::take_successor`]) and
    /// exit. On an error the node serves on unchanged.
    pub fn restart_host(&self) -> Result<u32, ReleaseError> {
        let state = self.lock();
        let current = self
            .entry(&state.releases, &state.current)
            .ok_or_else(|| ReleaseError::UnknownRelease { vsn: state.current.clone() })?;
        let record = self.record(&state, &state.current);
        let hello = Hello {
            old_pid: std::process::id(),
            boot: state.current.clone(),
            continue_install: None,
        };
        Ok(self.start_successor(&current, &record, &hello)?)
    }

    /// The new host process that reported ready, once: the front stops serving, drains,
    /// and finishes the handover with [`Successor::go`] and the states of
    /// [`ReleaseHandler::handover_states`].
    pub fn take_successor(&self) -> Option<Successor> {
        self.successor.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Starts `release`'s host binary as the new host and waits until it is ready; keeps it
    /// for [`ReleaseHandler::take_successor`].
    fn start_successor(
        &self,
        release: &ReleaseEntry,
        record: &Record,
        hello: &Hello,
    ) -> Result<u32, RestartError> {
        let config = self.host_restart.lock().unwrap_or_else(|p| p.into_inner());
        let config = config.as_ref().ok_or(RestartError::NotConfigured)?;
        let binary = self.host_binary(&config.exe, &release.host_vsn, record)?;
        let successor = restart::start_successor(
            &binary,
            &config.args,
            &config.fds,
            hello,
            config.ready_timeout,
        )?;
        let pid = successor.pid();
        *self.successor.lock().unwrap_or_else(|p| p.into_inner()) = Some(successor);
        Ok(pid)
    }

    /// Whether a host restart is configured, and the running binary it would use for this
    /// host's own version.
    pub(crate) fn restart_exe(&self) -> Option<PathBuf> {
        self.host_restart.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| c.exe.clone())
    }

    /// The binary of host version `host_vsn`: `ROOT/host-<HostVsn>/bin/hotcode`, trusted,
    /// executable, and the one `record` (its release's integrity record) lists; or, when
    /// the root holds none and `host_vsn` is this host's version, the running binary `exe`.
    pub(crate) fn host_binary(
        &self,
        exe: &Path,
        host_vsn: &str,
        record: &Record,
    ) -> Result<PathBuf, RestartError> {
        let binary = host_binary_path(&self.root, host_vsn)
            .map_err(|problem| RestartError::Binary { binary: self.root.clone(), problem })?;
        let problem = |problem: String| RestartError::Binary { binary: binary.clone(), problem };
        match std::fs::symlink_metadata(&binary) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && host_vsn == HOST_VSN => {
                return Ok(exe.to_owned());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(problem(format!(
                    "no such file: the release runs on hotcode {host_vsn}, this node is hotcode \
                     {HOST_VSN}, and the root holds no binary of hotcode {host_vsn}"
                )));
            }
            Err(e) => return Err(problem(e.to_string())),
        }
        integrity::verify_host_binary(&self.root, &binary, record).map_err(problem)?;
        Ok(binary)
    }

    /// The host binary the permanent release of `root` runs on, when it is not this
    /// binary's version and the root holds it (`host-<HostVsn>/bin/hotcode`, verified
    /// against that release's record): what a plain boot must run instead of itself.
    /// `Ok(None)` when this binary is the one, or when the root has no such binary (the
    /// boot then refuses the release, naming both versions). Reads RELEASES without the
    /// root's lock: call it before taking the lock, and boot under the lock as usual.
    pub fn permanent_host_binary(root: &Path) -> Result<Option<PathBuf>, ReleaseError> {
        let Ok(releases) = read_releases(&root.join("releases").join("RELEASES")) else {
            // The boot reads it again and names what is wrong.
            return Ok(None);
        };
        let Some(permanent) = releases.iter().find(|r| r.status == ReleaseStatus::Permanent) else {
            return Ok(None);
        };
        if permanent.host_vsn == HOST_VSN {
            return Ok(None);
        }
        let binary = host_binary_path(root, &permanent.host_vsn).map_err(ReleaseError::Invalid)?;
        if std::fs::symlink_metadata(&binary).is_err() {
            return Ok(None);
        }
        let record = integrity::read_record(root, &permanent.vsn);
        integrity::verify_host_binary(root, &binary, &record).map_err(|why| {
            ReleaseError::Invalid(format!(
                "{}: the host binary of the permanent release {}: {why}",
                binary.display(),
                permanent.vsn
            ))
        })?;
        Ok(Some(binary))
    }

    /// The old node's side of the state handover (see [`restart`]): suspends every
    /// gen_server of a module its application opts in with
    /// [`restart::HANDOVER_ENV`], and exports each state as the version that made it. The
    /// processes stay suspended: this node hands over and exits. A process that does not
    /// answer within `timeout` is left out (logged); its successor starts fresh.
    pub fn handover_states(&self, timeout: std::time::Duration) -> HandedStates {
        let mut states = Vec::new();
        for module in self.handover_modules() {
            let mut each = Vec::new();
            for pid in self.node.processes_running(&module) {
                let exported = self
                    .node
                    .suspend(pid, timeout)
                    .and_then(|()| self.node.export_state(pid, timeout));
                match exported {
                    Ok((vsn, state)) => each.push((vsn, state)),
                    Err(e) => log::warn!("{pid} ({module}): its state is not handed over: {e}"),
                }
            }
            log::info!("{module}: handing over the state of {} process(es)", each.len());
            states.push((module, each));
        }
        states
    }

    /// The new node's side of the state handover: each process running a module of
    /// `states`, in the order of the supervision trees, takes its predecessor's state through
    /// its version's `code_change(OldVsn, State, [])`. A process that fails keeps the state
    /// its `init` made (logged); so do processes with no predecessor. Returns how many
    /// processes took a state.
    pub fn adopt_states(&self, states: HandedStates, timeout: std::time::Duration) -> usize {
        let mut adopted = 0;
        for (module, list) in states {
            let pids = self.node.processes_running(&module);
            if pids.len() != list.len() {
                log::warn!(
                    "{module}: {} state(s) handed over for {} process(es) here; the rest start fresh",
                    list.len(),
                    pids.len()
                );
            }
            for (pid, (vsn, state)) in pids.into_iter().zip(list) {
                match self.node.adopt_state(pid, &vsn, state, timeout) {
                    Ok(()) => {
                        adopted += 1;
                        log::info!(
                            "{pid} ({module}): took over its predecessor's state (vsn {vsn})"
                        );
                    }
                    Err(e) => log::error!(
                        "{pid} ({module}): cannot take over its predecessor's state, it keeps \
                         a fresh one: {e}"
                    ),
                }
            }
        }
        adopted
    }

    /// The modules whose processes hand their state over: the [`restart::HANDOVER_ENV`]
    /// lists of the loaded applications.
    fn handover_modules(&self) -> Vec<String> {
        let mut modules = Vec::new();
        for spec in self.node.loaded_applications() {
            for (key, value) in &spec.env {
                if key != restart::HANDOVER_ENV {
                    continue;
                }
                match value.as_list() {
                    Some(items) => {
                        for item in items {
                            match item.as_atom() {
                                Some(m) if !modules.iter().any(|x| x == m) => {
                                    modules.push(m.to_owned())
                                }
                                Some(_) => {}
                                None => log::warn!(
                                    "application {}: {} lists {item}, not a module name",
                                    spec.name,
                                    restart::HANDOVER_ENV
                                ),
                            }
                        }
                    }
                    None => log::warn!(
                        "application {}: {} must be a list of modules, not {value}",
                        spec.name,
                        restart::HANDOVER_ENV
                    ),
                }
            }
        }
        modules
    }

    fn write(&self, releases: &[ReleaseEntry]) -> Result<(), ReleaseError> {
        let path = self.root.join("releases").join("RELEASES");
        fault_point("before writing RELEASES");
        write_releases_atomically(&path, releases).map_err(io(&path))?;
        fault_point("after writing RELEASES");
        Ok(())
    }

    /// `release_handler:make_permanent(Vsn)`: the current release becomes the one booted;
    /// the previous permanent one becomes old. Then runs the post-purges left by the
    /// install (soft ones only if the old code is free now; brutal ones regardless).
    pub fn make_permanent(&self, vsn: &str) -> Result<(), ReleaseError> {
        check_vsn(vsn)?;
        let mut state = self.lock();
        if state.current != vsn {
            if !state.releases.iter().any(|r| r.vsn == vsn) {
                return Err(ReleaseError::UnknownRelease { vsn: vsn.to_owned() });
            }
            return Err(ReleaseError::NotCurrent { vsn: vsn.to_owned() });
        }
        let releases = promoted(&state.releases, vsn);
        self.write(&releases)?;
        state.releases = releases;
        drop(state);
        for (module, method) in self.node.code().pending_post_purges() {
            let outcome = match method {
                PurgeMethod::BrutalPurge => self.node.purge(&module),
                PurgeMethod::SoftPurge => self.node.code().post_purge(&module),
            };
            if let Purged::Pending { holders } = outcome {
                log::info!(
                    "{module}: old code still held by {} holder(s) after {method}",
                    holders.len()
                );
            }
        }
        log::info!("release {vsn} is permanent");
        Ok(())
    }

    /// `release_handler:reboot_old_release(Vsn)`: makes old release `vsn` permanent again
    /// (the permanent one becomes old). The caller restarts the node, which then boots it.
    pub fn reboot_old(&self, vsn: &str) -> Result<(), ReleaseError> {
        check_vsn(vsn)?;
        let mut state = self.lock();
        let Some(target) = state.releases.iter().find(|r| r.vsn == vsn) else {
            return Err(ReleaseError::UnknownRelease { vsn: vsn.to_owned() });
        };
        if target.status != ReleaseStatus::Old {
            return Err(ReleaseError::NotOld { vsn: vsn.to_owned() });
        }
        let releases = promoted(&state.releases, vsn);
        self.write(&releases)?;
        state.releases = releases;
        log::info!("release {vsn} is permanent again; the node must restart to run it");
        Ok(())
    }

    pub(crate) fn entry(&self, state_releases: &[ReleaseEntry], vsn: &str) -> Option<ReleaseEntry> {
        state_releases.iter().find(|r| r.vsn == vsn).cloned()
    }
}

/// `ROOT/run/lib`, the parent of a booted node's private library copies (see
/// [`Config::scratch_parent`]), with `ROOT/run` made (mode 0700) if it is missing.
fn private_copies_dir(root: &Path) -> Result<PathBuf, ReleaseError> {
    use std::os::unix::fs::DirBuilderExt;
    let run = root.join("run");
    match std::fs::DirBuilder::new().mode(0o700).create(&run) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ReleaseError::Io { path: run, source: e }),
    }
    Ok(run.join("lib"))
}

/// `releases` with `vsn` permanent and the previous permanent release old.
fn promoted(releases: &[ReleaseEntry], vsn: &str) -> Vec<ReleaseEntry> {
    let mut releases = releases.to_vec();
    for r in &mut releases {
        if r.vsn == vsn {
            r.status = ReleaseStatus::Permanent;
        } else if r.status == ReleaseStatus::Permanent {
            r.status = ReleaseStatus::Old;
        }
    }
    releases
}

/// Refuses a version given by a caller (a `ctl` argument) that is not a word: it would
/// be joined into paths.
fn check_vsn(vsn: &str) -> Result<(), ReleaseError> {
    check_name(NameKind::Vsn, vsn).map_err(ReleaseError::Invalid)
}

fn check_host_vsn(vsn: &str, host_vsn: &str) -> Result<(), ReleaseError> {
    if host_vsn != HOST_VSN {
        return Err(ReleaseError::HostVersion {
            vsn: vsn.to_owned(),
            found: host_vsn.to_owned(),
            expected: HOST_VSN.to_owned(),
        });
    }
    Ok(())
}

/// The environment variable that makes a node kill itself (SIGKILL) at the Nth fault point
/// it passes: the crash tests' way of stopping a node at every step of unpack, install,
/// make_permanent and remove. A node started without it never stops at a fault point.
pub const FAULT_ENV: &str = "HOTCODE_TEST_KILL_AT";

/// The environment variable that a node passes on to the new host process of a restart as
/// its [`FAULT_ENV`] (which the new process does not inherit): the crash tests' way of
/// stopping the new process at each step of a handover.
pub const FAULT_ENV_NEW_HOST: &str = "HOTCODE_TEST_KILL_NEW_HOST_AT";

/// A step after which a crash must leave the root bootable (see [`FAULT_ENV`]). Public for
/// the `hotcode` binary's own steps (a host restart's handover); a test hook that can only
/// kill the process.
pub fn fault_point(what: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let Some(at) = *AT.get_or_init(|| std::env::var(FAULT_ENV).ok()?.parse().ok()) else {
        return;
    };
    let n = PASSED.fetch_add(1, Ordering::Relaxed) + 1;
    eprintln!("fault point {n}: {what}");
    if n == at {
        // SAFETY: kill(2) with our own pid and a signal number touches no memory.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
