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
//! - **installs** (`eval.rs`): object code first (any error drops everything staged, the node
//!   is exactly as before), then, after the point of no return, the rest in order; an error
//!   there follows the [`ErrorAction`];
//! - keeps RELEASES on disk with atomic writes, and never writes `current`: a node that dies
//!   at any instant of an install boots the permanent release again.

mod check;
mod eval;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use plugin_api::Term;

use crate::code::code_server::{PurgeMethod, Purged};
use crate::code::error::{CodeServerError, LoadError};
use crate::release::files::{
    AppSpec, RelSpec, ReleaseApp, ReleaseEntry, ReleaseStatus, read_releases,
    write_releases_atomically,
};
use crate::release::hashes::{HASHES_FILE, ModuleHashes, read_hashes};
use crate::release::{Direction, ParseError};
use crate::runtime::application::{AppError, RestartType};
use crate::runtime::node::Node;

pub use check::Plan;

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
    /// Log and exit the process with [`EXIT_RESTART`], so that the service manager
    /// restarts the node, which boots the permanent release (`hotcode boot` does this).
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

/// The host version releases must name in their `.rel` (`{hotcode, Vsn}`).
pub const HOST_VSN: &str = env!("CARGO_PKG_VERSION");

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

/// What `install` returns: OTP's `{ok, OtherVsn, Descr}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    /// The release the node came from.
    pub from: String,
    /// Up or down.
    pub direction: Direction,
    /// The relup entry's description.
    pub descr: Term,
    /// How long processes were suspended (first suspend to last resume), if any were.
    pub suspend_window: Option<std::time::Duration>,
}

struct State {
    /// The releases as on disk: `unpacked`, `permanent`, `old` (never `current`).
    releases: Vec<ReleaseEntry>,
    /// The release the node runs now.
    current: String,
    /// The SHA-256 of every module file the releases recorded, by root-relative path.
    hashes: ModuleHashes,
}

/// The release handler of one node and one release root. See the [module docs](self).
pub struct ReleaseHandler {
    root: PathBuf,
    node: Node,
    error_action: ErrorAction,
    state: Mutex<State>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io { path: path.to_owned(), source }
}

impl ReleaseHandler {
    /// Boots the permanent release of `root` on a new node.
    pub fn boot(root: impl Into<PathBuf>, error_action: ErrorAction) -> Result<Self, ReleaseError> {
        let root = root.into();
        let path = root.join("releases").join("RELEASES");
        let releases = read_releases(&path)?;
        let permanent = releases
            .iter()
            .find(|r| r.status == ReleaseStatus::Permanent)
            .cloned()
            .ok_or_else(|| ReleaseError::NoPermanent { path: path.clone() })?;
        check_host_vsn(&permanent.vsn, &permanent.host_vsn)?;
        let node = Node::new()?;
        let handler = ReleaseHandler {
            root,
            node,
            error_action,
            state: Mutex::new(State {
                releases,
                current: permanent.vsn.clone(),
                hashes: ModuleHashes::new(),
            }),
        };
        handler.reload_hashes()?;
        log::info!("booting release {} {}", permanent.name, permanent.vsn);
        handler.start_release(&permanent)?;
        Ok(handler)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every write to the state happens after the step it records succeeded.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The release root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The version of the release the node runs.
    pub fn current(&self) -> String {
        self.lock().current.clone()
    }

    /// The library directory of `app` in `entry`, resolved against the root.
    fn lib_dir(&self, app: &ReleaseApp) -> PathBuf {
        let dir = Path::new(&app.lib_dir);
        if dir.is_absolute() { dir.to_owned() } else { self.root.join(dir) }
    }

    /// Reads the `.app` of every application of `entry`.
    fn app_specs(&self, entry: &ReleaseEntry) -> Result<Vec<(AppSpec, PathBuf)>, ReleaseError> {
        entry
            .apps
            .iter()
            .map(|app| {
                let dir = self.lib_dir(app);
                let spec = AppSpec::read(&dir.join(format!("{}.app", app.name)))?;
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

    /// Reads every release's integrity record (`releases/<vsn>/modules.sha256`).
    fn reload_hashes(&self) -> Result<(), ReleaseError> {
        let mut state = self.lock();
        let mut all = ModuleHashes::new();
        for r in &state.releases {
            let path = self.root.join("releases").join(&r.vsn).join(HASHES_FILE);
            if path.exists() {
                all.extend(read_hashes(&path)?);
            }
        }
        if all.is_empty() {
            log::warn!(
                "{}: no release records module digests ({HASHES_FILE}); loading unverified",
                self.root.display()
            );
        }
        state.hashes = all;
        Ok(())
    }

    /// The recorded digest of module file `file`: `Ok(None)` when the root records none at
    /// all, an error when it records some but not this file.
    pub(crate) fn expected_hash(
        &self,
        hashes: &ModuleHashes,
        file: &Path,
    ) -> Result<Option<[u8; 32]>, String> {
        if hashes.is_empty() {
            return Ok(None);
        }
        let key = file.strip_prefix(&self.root).unwrap_or(file).to_string_lossy().into_owned();
        match hashes.get(&key) {
            Some(digest) => Ok(Some(*digest)),
            None => {
                Err(format!("{} is not recorded in any release's {HASHES_FILE}", file.display()))
            }
        }
    }

    /// Stages `module` from `file`, verified against its release's record when there is one.
    pub(crate) fn stage(
        &self,
        hashes: &ModuleHashes,
        module: &str,
        file: &Path,
    ) -> Result<(), ReleaseError> {
        match self.expected_hash(hashes, file).map_err(ReleaseError::Invalid)? {
            Some(digest) => self.node.code().load_object_code_verified(module, file, &digest)?,
            None => self.node.code().load_object_code(module, file)?,
        };
        Ok(())
    }

    /// Loads and starts a release on the (empty) node, as OTP's boot script does.
    fn start_release(&self, entry: &ReleaseEntry) -> Result<(), ReleaseError> {
        let specs = self.app_specs(entry)?;
        let hashes = self.lock().hashes.clone();
        for (spec, dir) in &specs {
            for module in &spec.modules {
                self.stage(&hashes, module, &dir.join(format!("{module}.so")))?;
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

    /// `release_handler:which_releases()`.
    pub fn which_releases(&self) -> Vec<ReleaseInfo> {
        let state = self.lock();
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
        let state = self.lock();
        check::plan(self, &state, vsn)
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
        let mut state = self.lock();
        let plan = check::plan(self, &state, vsn)?;
        log::info!(
            "installing release {vsn} ({} from {}, {} instructions from {})",
            if plan.direction == Direction::Up { "upgrade" } else { "downgrade" },
            state.current,
            plan.entry.instructions.len(),
            plan.script.display()
        );
        let suspend_window = match eval::run(self, &plan, progress) {
            Ok(window) => window,
            Err(e @ ReleaseError::AfterPointOfNoReturn { .. }) => {
                if self.error_action == ErrorAction::Restart {
                    log::error!("{e}; exiting so that the node restarts on the permanent release");
                    log::logger().flush();
                    std::process::exit(EXIT_RESTART);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let from = std::mem::replace(&mut state.current, vsn.to_owned());
        log::info!("release {vsn} installed (from {from}); make it permanent to keep it");
        Ok(Installed {
            from,
            direction: plan.direction,
            descr: plan.entry.descr.clone(),
            suspend_window,
        })
    }

    fn write(&self, releases: &[ReleaseEntry]) -> Result<(), ReleaseError> {
        let path = self.root.join("releases").join("RELEASES");
        write_releases_atomically(&path, releases).map_err(io(&path))
    }

    /// `release_handler:make_permanent(Vsn)`: the current release becomes the one booted;
    /// the previous permanent one becomes old. Then runs the post-purges left by the
    /// install (soft ones only if the old code is free now; brutal ones regardless).
    pub fn make_permanent(&self, vsn: &str) -> Result<(), ReleaseError> {
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

    /// `release_handler:remove_release(Vsn)`: deletes a release and the library
    /// directories no other release uses. Refused for the permanent and current releases.
    pub fn remove(&self, vsn: &str) -> Result<(), ReleaseError> {
        let mut state = self.lock();
        let Some(target) = state.releases.iter().find(|r| r.vsn == vsn).cloned() else {
            return Err(ReleaseError::UnknownRelease { vsn: vsn.to_owned() });
        };
        if target.status == ReleaseStatus::Permanent {
            return Err(ReleaseError::RemovePermanent { vsn: vsn.to_owned() });
        }
        if state.current == vsn {
            return Err(ReleaseError::RemoveCurrent { vsn: vsn.to_owned() });
        }
        let releases: Vec<ReleaseEntry> =
            state.releases.iter().filter(|r| r.vsn != vsn).cloned().collect();
        self.write(&releases)?;
        state.releases = releases;
        let used: BTreeSet<PathBuf> =
            state.releases.iter().flat_map(|r| r.apps.iter().map(|a| self.lib_dir(a))).collect();
        for app in &target.apps {
            let dir = self.lib_dir(app);
            if !used.contains(&dir) && dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
                log::info!("removed {}", dir.display());
            }
        }
        let dir = self.root.join("releases").join(vsn);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        log::info!("release {vsn} removed");
        Ok(())
    }

    /// `release_handler:unpack_release`: adds the release found in directory `from`
    /// (laid out as a root: `releases/<vsn>/<name>.rel`, optional `relup`, and `lib/`),
    /// copying the library directories the root does not have yet. Returns its version.
    pub fn unpack(&self, from: &Path) -> Result<String, ReleaseError> {
        let releases_dir = from.join("releases");
        let mut rels = Vec::new();
        for dir in std::fs::read_dir(&releases_dir).map_err(io(&releases_dir))? {
            let dir = dir.map_err(io(&releases_dir))?.path();
            if !dir.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let file = file.map_err(io(&dir))?.path();
                if file.extension().is_some_and(|e| e == "rel") {
                    rels.push(file);
                }
            }
        }
        let [rel_path] = rels.as_slice() else {
            return Err(ReleaseError::Invalid(format!(
                "{}: expected exactly one releases/<vsn>/<name>.rel, found {}",
                from.display(),
                rels.len()
            )));
        };
        let rel = RelSpec::read(rel_path)?;
        check_host_vsn(&rel.vsn, &rel.host_vsn)?;
        let mut state = self.lock();
        if state.releases.iter().any(|r| r.vsn == rel.vsn) {
            return Err(ReleaseError::AlreadyUnpacked { vsn: rel.vsn });
        }
        let mut apps = Vec::new();
        for app in &rel.apps {
            let name = format!("{}-{}", app.name, app.vsn);
            let (src, dest) = (from.join("lib").join(&name), self.root.join("lib").join(&name));
            if !dest.exists() {
                copy_dir(&src, &dest)?;
            }
            apps.push(ReleaseApp {
                name: app.name.clone(),
                vsn: app.vsn.clone(),
                lib_dir: format!("lib/{name}"),
            });
        }
        let dest = self.root.join("releases").join(&rel.vsn);
        copy_dir(rel_path.parent().unwrap_or(&releases_dir), &dest)?;
        let mut releases = state.releases.clone();
        releases.push(ReleaseEntry {
            name: rel.name.clone(),
            vsn: rel.vsn.clone(),
            host_vsn: rel.host_vsn.clone(),
            apps,
            status: ReleaseStatus::Unpacked,
        });
        self.write(&releases)?;
        state.releases = releases;
        drop(state);
        self.reload_hashes()?;
        log::info!("release {} {} unpacked", rel.name, rel.vsn);
        Ok(rel.vsn)
    }

    pub(crate) fn entry(&self, state_releases: &[ReleaseEntry], vsn: &str) -> Option<ReleaseEntry> {
        state_releases.iter().find(|r| r.vsn == vsn).cloned()
    }
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

/// Copies a directory tree (files and subdirectories; no links are followed).
fn copy_dir(from: &Path, to: &Path) -> Result<(), ReleaseError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for item in std::fs::read_dir(from).map_err(io(from))? {
        let item = item.map_err(io(from))?;
        let (src, dest) = (item.path(), to.join(item.file_name()));
        let kind = item.file_type().map_err(io(&src))?;
        if kind.is_dir() {
            copy_dir(&src, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dest).map_err(io(&src))?;
        }
    }
    Ok(())
}
