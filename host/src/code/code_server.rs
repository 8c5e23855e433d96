//! The code server: per module a *current* and an *old* version, as in OTP.
//!
//! - [`CodeServer::load_object_code`] opens and checks a new version without making it
//!   reachable ("staged").
//! - [`CodeServer::load`] makes the staged version current; the previous current becomes
//!   old. If old code was there already it is pre-purged first (`soft_purge` refuses if it
//!   is held, `brutal_purge` purges). If nothing holds the new old version it is unloaded at
//!   once, otherwise the post-purge method is remembered ([`CodeServer::post_purge`]).
//! - [`CodeServer::remove`] makes the current version old with no successor.
//! - [`CodeServer::purge`] makes old code go away: it is detached from its slot so no caller
//!   can reach it, and unloaded the moment its last holder returns. Nothing ever unmaps
//!   code a thread is in.
//! - [`CodeServer::soft_purge`] purges only if nobody holds the old code.
//! - [`CodeServer::holders`] says which threads hold which version, right now.
//!
//! Every operation is serialised by one lock; the call path never takes it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use abi_stable::StableAbi;
use abi_stable::std_types::RResult;
use abi_stable::type_layout::TypeLayout;
use crossbeam::utils::CachePadded;
use plugin_api::behaviour::GenServerTable;
use plugin_api::{Interface, RTerm, Term};

use crate::code::error::{ApplyError, CallError, CodeServerError, LoadError, LoadErrorKind};
use crate::code::handle::Handle;
use crate::code::hold::{self, ThreadInfo, VersionCell};
use crate::code::loader;
use crate::code::membarrier;
use crate::code::reaper::{self, LeakedLibrary, Retired};
use crate::code::scratch::{self, Scratch};
use crate::code::version::Version;

/// How to purge old code that is in the way (OTP's `PrePurge` / `PostPurge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PurgeMethod {
    /// Refuse (before) or leave it for later (after) if any thread holds it.
    SoftPurge,
    /// Purge it regardless: detach it and unload it when its last holder returns.
    BrutalPurge,
}

impl fmt::Display for PurgeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PurgeMethod::SoftPurge => "soft_purge",
            PurgeMethod::BrutalPurge => "brutal_purge",
        })
    }
}

/// A thread, future or process state holding a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The thread. For a process's state held between callbacks (no thread is inside the
    /// version for it), the name `<between callbacks>` and tid 0.
    pub thread: ThreadInfo,
    /// The hotcode process running on that thread, or whose state holds the version.
    pub process: Option<u64>,
    /// When the holder is an in-flight future of an async call (`Handle::call_async`): its
    /// id; `thread` is then the thread that started the call (the future may run anywhere).
    pub future: Option<u64>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = self.future {
            return write!(
                f,
                "future #{id} (started on thread '{}', tid {})",
                self.thread.name, self.thread.tid
            );
        }
        match self.process {
            Some(pid) if self.thread.tid == 0 => write!(f, "process <{pid}> (its state)"),
            Some(pid) => write!(
                f,
                "process <{pid}> on thread '{}' (tid {})",
                self.thread.name, self.thread.tid
            ),
            None => write!(f, "thread '{}' (tid {})", self.thread.name, self.thread.tid),
        }
    }
}

/// What is known about one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The module's vsn string.
    pub vsn: String,
    /// Process-wide unique id of this load.
    pub id: u64,
    /// The module's behaviour.
    pub behaviour: plugin_api::Behaviour,
    /// The file it was loaded from.
    pub source: PathBuf,
    /// The private copy that is mapped. Its file was unlinked once it was opened: the path
    /// names the mapping in `/proc/self/maps` (where it is followed by ` (deleted)`).
    pub copy: PathBuf,
    /// The SHA-256 of the bytes that were mapped (taken of the private copy before it was
    /// opened).
    pub sha256: loader::Sha256,
}

impl VersionInfo {
    fn of(v: &Version) -> VersionInfo {
        VersionInfo {
            vsn: v.vsn.clone(),
            id: v.id,
            behaviour: v.behaviour,
            source: v.source.clone(),
            copy: v.copy.clone(),
            sha256: v.sha256,
        }
    }
}

/// A version and the threads holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldVersion {
    /// The version.
    pub version: VersionInfo,
    /// Who holds it.
    pub holders: Vec<Holder>,
}

/// [`CodeServer::holders`]: for each version of a module, who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleHolders {
    /// The current version.
    pub current: Option<HeldVersion>,
    /// The old version.
    pub old: Option<HeldVersion>,
    /// Purged versions still waiting for their last holder.
    pub detached: Vec<HeldVersion>,
}

/// One module's state, for [`CodeServer::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleStatus {
    /// The module.
    pub name: String,
    /// Its current version.
    pub current: Option<VersionInfo>,
    /// Its old version.
    pub old: Option<VersionInfo>,
    /// A version staged by `load_object_code`, not yet loaded.
    pub staged: Option<VersionInfo>,
    /// The post-purge remembered for the old version, if it was held at `load`.
    pub pending_post_purge: Option<PurgeMethod>,
}

/// The state of a whole code server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Every module, sorted by name.
    pub modules: Vec<ModuleStatus>,
    /// Purged versions still held by some thread.
    pub detached: Vec<VersionInfo>,
    /// Libraries that stayed mapped after being closed.
    pub leaked: Vec<LeakedLibrary>,
}

/// What became of a version that left its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purged {
    /// There was nothing to purge.
    Nothing,
    /// Unloaded, and verified gone from the address space.
    Unloaded,
    /// Closed but still mapped: reported as leaked and retried later.
    Leaked {
        /// Why.
        reason: String,
    },
    /// Still held: it is detached and will be unloaded when the last holder returns.
    Pending {
        /// Who holds it now.
        holders: Vec<Holder>,
    },
}

impl Purged {
    fn from_retired(r: Retired) -> Purged {
        match r {
            Retired::Unloaded => Purged::Unloaded,
            Retired::Leaked(reason) => Purged::Leaked { reason },
            Retired::Held(found) => {
                Purged::Pending { holders: found.into_iter().map(holder).collect() }
            }
        }
    }
}

fn holder(found: hold::Found) -> Holder {
    Holder { thread: found.thread, process: found.process, future: found.future }
}

/// What a handle reads: the module's current version. Shared by the code server and every
/// handle of the module, so handles never touch the code server's lock.
pub(crate) struct ModuleEntry {
    /// Read on every call; padded so that writes to neighbouring data (the `Arc`'s counts
    /// when handles are cloned, other allocations) never invalidate its line.
    pub(crate) current: CachePadded<AtomicPtr<VersionCell>>,
    pub(crate) name: String,
}

/// The interface a module's handles use; every later version must match it.
#[derive(Clone, Copy)]
struct Expected {
    name: &'static str,
    layout: &'static TypeLayout,
}

struct ModuleState {
    entry: Arc<ModuleEntry>,
    current: Option<Arc<Version>>,
    old: Option<Arc<Version>>,
    post_purge: Option<PurgeMethod>,
    expected: Option<Expected>,
}

impl ModuleState {
    fn publish_current(&mut self, version: Option<Arc<Version>>) {
        let cell =
            version.as_ref().map_or(ptr::null_mut(), |v| v.cell as *const VersionCell as *mut _);
        self.entry.current.store(cell, Ordering::Release);
        self.current = version;
    }
}

#[derive(Default)]
struct State {
    modules: HashMap<String, ModuleState>,
    staged: HashMap<String, Arc<Version>>,
}

/// Configuration for [`CodeServer::with_config`].
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The directory that holds the code servers' directories for private library copies:
    /// each code server makes and locks its own `<pid>-<n>` in it, and removes those that
    /// dead processes left. It is made with mode 0700 if missing, and must be a real
    /// directory of this uid that group and others cannot access, inside a directory where
    /// others cannot rename it (not writable by them, or sticky); it must be on a filesystem
    /// that allows mapping code (not `noexec`). Default: `$TMPDIR/hotcode-<uid>`; the
    /// release handler uses `ROOT/run/lib`.
    pub scratch_parent: Option<PathBuf>,
}

/// The code server. See the [module docs](self).
pub struct CodeServer {
    id: u64,
    scratch: Scratch,
    state: Mutex<State>,
}

static NEXT_SERVER: AtomicU64 = AtomicU64::new(1);
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

impl CodeServer {
    /// A code server with default configuration.
    pub fn new() -> Result<CodeServer, CodeServerError> {
        CodeServer::with_config(Config::default())
    }

    /// A code server with `config`.
    ///
    /// # Errors
    ///
    /// [`CodeServerError::Scratch`] if the directory for private library copies cannot be
    /// made; [`CodeServerError::UnsafeScratch`] if its parent is not private (see
    /// [`Config::scratch_parent`]).
    pub fn with_config(config: Config) -> Result<CodeServer, CodeServerError> {
        membarrier::init();
        let parent = config.scratch_parent.unwrap_or_else(scratch::default_parent);
        let scratch = Scratch::create(&parent)?;
        let id = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        log::debug!("code server {id}: private library copies in {}", scratch.path().display());
        Ok(CodeServer { id, scratch, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Operations mutate the state only after every check and fallible step, so a
        // panic (a bug) cannot leave it half-changed; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The directory of this server's private library copies, `<parent>/<pid>-<n>` (see
    /// [`Config::scratch_parent`]). A copy is in it only while it is being loaded: the
    /// loader unlinks it once it is open (the mapping stays), and the directory is removed
    /// when the server is dropped or the process exits.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Opens and checks version of `module` in `path`, without making it reachable.
    ///
    /// The file must be a hotcode plugin exporting `module`, with a layout compatible with
    /// the host's and, if the module is in use, with the interface its handles (or its
    /// current version) use. A version staged earlier for the same module is dropped.
    /// On error nothing changes.
    pub fn load_object_code(
        &self,
        module: &str,
        path: impl AsRef<Path>,
    ) -> Result<VersionInfo, LoadError> {
        self.stage(module, path.as_ref(), None)
    }

    /// [`load_object_code`](Self::load_object_code) of a file whose SHA-256 must be
    /// `sha256` (as its release recorded it); a file that differs is refused, naming it.
    pub fn load_object_code_verified(
        &self,
        module: &str,
        path: impl AsRef<Path>,
        sha256: &loader::Sha256,
    ) -> Result<VersionInfo, LoadError> {
        self.stage(module, path.as_ref(), Some(sha256))
    }

    fn stage(
        &self,
        module: &str,
        path: &Path,
        sha256: Option<&loader::Sha256>,
    ) -> Result<VersionInfo, LoadError> {
        reaper::retry_leaked();
        let id = NEXT_VERSION.fetch_add(1, Ordering::Relaxed);
        let opened = loader::open(module, path, self.scratch.path(), id, sha256)?;
        let version = Arc::new(Version::new(id, self.id, path.to_owned(), opened));
        let mut state = self.lock();
        if let Err(kind) = check_interface(state.modules.get(module), &version) {
            drop(state);
            let _ = reaper::retire(version);
            return Err(LoadError { module: module.to_owned(), path: path.to_owned(), kind });
        }
        log::info!("staged {} from {}", version.label(), path.display());
        let info = VersionInfo::of(&version);
        if let Some(previous) = state.staged.insert(module.to_owned(), version) {
            log::info!("dropping previously staged {}", previous.label());
            let _ = reaper::retire(previous);
        }
        Ok(info)
    }

    /// Drops the version staged for `module`, if any (rollback before the point of no return).
    pub fn drop_staged(&self, module: &str) -> bool {
        let staged = self.lock().staged.remove(module);
        match staged {
            Some(version) => {
                log::info!("dropping staged {}", version.label());
                let _ = reaper::retire(version);
                true
            }
            None => false,
        }
    }

    /// Makes the staged version of `module` current (OTP's `{load, {M, PrePurge, PostPurge}}`).
    pub fn load(
        &self,
        module: &str,
        pre: PurgeMethod,
        post: PurgeMethod,
    ) -> Result<Purged, CodeServerError> {
        let mut state = self.lock();
        let Some(new) = state.staged.get(module).cloned() else {
            return Err(CodeServerError::NoStagedCode { module: module.to_owned() });
        };
        let entry = state.modules.entry(module.to_owned()).or_insert_with(|| ModuleState {
            entry: Arc::new(ModuleEntry {
                name: module.to_owned(),
                current: CachePadded::new(AtomicPtr::new(ptr::null_mut())),
            }),
            current: None,
            old: None,
            post_purge: None,
            expected: None,
        });
        pre_purge(module, entry, pre)?;
        state.staged.remove(module);
        let module_state = state.modules.get_mut(module).expect("inserted above");
        let previous = module_state.current.take();
        log::info!(
            "load {}: {} is current{}",
            module,
            new.label(),
            previous.as_ref().map(|p| format!(", {} is old", p.label())).unwrap_or_default()
        );
        module_state.publish_current(Some(new));
        module_state.old = previous;
        Ok(settle_old(module_state, post))
    }

    /// Makes `module` have no current version (OTP's `{remove, {M, PrePurge, PostPurge}}`).
    /// Callers get [`CallError::NotLoaded`]. Removing a module
    /// that is not loaded is not an error.
    pub fn remove(
        &self,
        module: &str,
        pre: PurgeMethod,
        post: PurgeMethod,
    ) -> Result<Purged, CodeServerError> {
        let mut state = self.lock();
        let Some(module_state) = state.modules.get_mut(module) else {
            return Ok(Purged::Nothing);
        };
        if module_state.current.is_none() {
            return Ok(Purged::Nothing);
        }
        pre_purge(module, module_state, pre)?;
        let previous = module_state.current.take();
        module_state.publish_current(None);
        if let Some(p) = &previous {
            log::info!("remove {module}: {} is old, no current version", p.label());
        }
        module_state.old = previous;
        Ok(settle_old(module_state, post))
    }

    /// Makes the old code of `module` go away now (OTP's `{purge, [M]}`): it becomes
    /// unreachable and is unloaded as soon as no thread holds it.
    pub fn purge(&self, module: &str) -> Purged {
        let mut state = self.lock();
        let Some(module_state) = state.modules.get_mut(module) else {
            return Purged::Nothing;
        };
        purge_old(module_state)
    }

    /// Purges the old code of `module` only if no thread holds it; otherwise reports who
    /// does and changes nothing.
    pub fn soft_purge(&self, module: &str) -> Result<Purged, CodeServerError> {
        let mut state = self.lock();
        let Some(module_state) = state.modules.get_mut(module) else {
            return Ok(Purged::Nothing);
        };
        refuse_if_old_held(module, module_state)?;
        Ok(purge_old(module_state))
    }

    /// Runs the post-purge remembered at `load`/`remove` for `module`: `soft_purge` unloads
    /// the old version if it is no longer held (else keeps waiting), `brutal_purge` purges.
    pub fn post_purge(&self, module: &str) -> Purged {
        let mut state = self.lock();
        let Some(module_state) = state.modules.get_mut(module) else {
            return Purged::Nothing;
        };
        let Some(method) = module_state.post_purge else {
            return Purged::Nothing;
        };
        match method {
            PurgeMethod::BrutalPurge => purge_old(module_state),
            PurgeMethod::SoftPurge => {
                let found = module_state
                    .old
                    .as_ref()
                    .map(|old| hold::scan(&[old.cell]))
                    .unwrap_or_default();
                if found.is_empty() {
                    purge_old(module_state)
                } else {
                    Purged::Pending { holders: found.into_iter().map(holder).collect() }
                }
            }
        }
    }

    /// The modules with a post-purge still pending.
    pub fn pending_post_purges(&self) -> Vec<(String, PurgeMethod)> {
        let state = self.lock();
        let mut pending: Vec<_> = state
            .modules
            .iter()
            .filter_map(|(n, m)| m.post_purge.map(|p| (n.clone(), p)))
            .collect();
        pending.sort();
        pending
    }

    /// Which threads hold each version of `module`, right now.
    pub fn holders(&self, module: &str) -> Result<ModuleHolders, CodeServerError> {
        let state = self.lock();
        let Some(module_state) = state.modules.get(module) else {
            return Err(CodeServerError::NotLoaded { module: module.to_owned() });
        };
        let detached: Vec<Arc<Version>> =
            reaper::detached(self.id).into_iter().filter(|v| v.module == module).collect();
        let mut versions: Vec<&Arc<Version>> = Vec::new();
        versions.extend(module_state.current.iter());
        versions.extend(module_state.old.iter());
        versions.extend(detached.iter());
        let cells: Vec<&'static VersionCell> = versions.iter().map(|v| v.cell).collect();
        let found = hold::scan(&cells);
        let held = |at: usize| HeldVersion {
            version: VersionInfo::of(versions[at]),
            holders: found.iter().filter(|f| f.which == at).cloned().map(holder).collect(),
        };
        let mut at = 0;
        let mut next = |present: bool| {
            present.then(|| {
                at += 1;
                held(at - 1)
            })
        };
        let current = next(module_state.current.is_some());
        let old = next(module_state.old.is_some());
        let detached = (0..detached.len()).filter_map(|_| next(true)).collect();
        Ok(ModuleHolders { current, old, detached })
    }

    /// Whether the current version of `module` exports `function` for `apply`.
    pub fn exports(&self, module: &str, function: &str) -> bool {
        let state = self.lock();
        state
            .modules
            .get(module)
            .and_then(|m| m.current.as_ref())
            .is_some_and(|v| v.function(function).is_some())
    }

    /// Calls `module:function(Args)` in the module's current version: a function the
    /// plugin exported for `{apply, {M, F, Args}}`.
    pub fn apply(&self, module: &str, function: &str, args: Vec<Term>) -> Result<Term, ApplyError> {
        let not_loaded = || ApplyError::NotLoaded { module: module.to_owned() };
        let (entry, version) = {
            let state = self.lock();
            let m = state.modules.get(module).ok_or_else(not_loaded)?;
            (Arc::clone(&m.entry), m.current.clone().ok_or_else(not_loaded)?)
        };
        let held = hold::enter(&entry.current).map_err(|_| not_loaded())?;
        if !ptr::eq(held.cell(), version.cell) {
            // Another version became current meanwhile: call that one instead.
            drop(held);
            return self.apply(module, function, args);
        }
        let Some(f) = version.function(function) else {
            return Err(ApplyError::Undefined {
                module: module.to_owned(),
                function: function.to_owned(),
                exported: version.function_names().join(", "),
            });
        };
        let args = RTerm::from_term(&Term::List(args));
        // `held` keeps the version loaded while the function runs and while its result,
        // allocated by the plugin, is copied into host memory and dropped.
        let result = match f(args.as_ref()) {
            RResult::ROk(t) => t.decode().map_err(|e| plugin_api::PluginError {
                kind: plugin_api::PluginErrorKind::Failed,
                message: format!("undecodable result: {e}"),
                reason: None,
            }),
            RResult::RErr(e) => Err(e.into_host()),
        };
        drop(held);
        result.map_err(|error| ApplyError::Failed {
            module: module.to_owned(),
            function: function.to_owned(),
            error,
        })
    }

    /// The vsn of the version staged for `module`, if one is.
    pub fn staged_vsn(&self, module: &str) -> Option<String> {
        self.lock().staged.get(module).map(|v| v.vsn.clone())
    }

    /// Tries the staged version of gen_server `module` on a state it has not migrated yet:
    /// runs its `code_change(From, State, Extra)` on these copies, then drops the state it
    /// built, in that same version. Nothing reaches the new version otherwise: this is
    /// the release handler's preflight, before the point of no return, of the migration a
    /// process will make after it. (`code_change` is documented to be a pure function of its
    /// arguments, so running it twice is harmless.)
    ///
    /// # Errors
    /// [`CallError::NotLoaded`] if nothing is staged for `module`; [`CallError::Plugin`]
    /// if `code_change` failed or panicked.
    pub fn try_code_change(
        &self,
        module: &str,
        from: &Term,
        state: &Term,
        extra: &Term,
    ) -> Result<(), CallError> {
        let not_loaded = || CallError::NotLoaded { module: module.to_owned() };
        // The staged version is reachable from no slot: enter it through a pointer of our
        // own, and do so under the lock, while the version is still the staged one. Only
        // `drop_staged` and a new `stage` retire a staged version, both after taking it out
        // of `staged` under this lock, so their scan (made after that, behind
        // `purger_fence`) sees this thread's slot and the version stays mapped until the
        // hold is let go.
        let (version, held) = {
            let state = self.lock();
            let version = state.staged.get(module).cloned().ok_or_else(not_loaded)?;
            if version.behaviour != plugin_api::Behaviour::GenServer {
                return Ok(());
            }
            let entry = AtomicPtr::new(version.cell.as_ptr());
            let held = hold::enter(&entry).map_err(|_| not_loaded())?;
            (version, held)
        };
        debug_assert!(ptr::eq(held.cell(), version.cell));
        // SAFETY: a GenServer version's table was checked against GenServerTable's layout
        // at load (`check_behaviour`); `held` keeps the version loaded.
        let table = unsafe { held.table::<GenServerTable>() };
        let built = table
            .code_change(from, state, extra)
            .map_err(|error| CallError::Plugin { module: module.to_owned(), error })?;
        // SAFETY: `built` was made by this very table just now and is used for nothing else.
        unsafe { table.drop_state(built) };
        drop(held);
        Ok(())
    }

    /// The behaviour of the current version of `module`, if it has one.
    pub fn behaviour(&self, module: &str) -> Option<plugin_api::Behaviour> {
        self.lock().modules.get(module).and_then(|m| m.current.as_ref()).map(|v| v.behaviour)
    }

    /// The vsn of whichever version of this server uses `cell` (current, old or detached).
    pub(crate) fn vsn_of(&self, cell: &'static VersionCell) -> Option<String> {
        let state = self.lock();
        let found = state
            .modules
            .values()
            .flat_map(|m| m.current.iter().chain(m.old.iter()))
            .find(|v| std::ptr::eq(v.cell, cell))
            .map(|v| v.vsn.clone());
        found.or_else(|| {
            reaper::detached(self.id)
                .iter()
                .find(|v| std::ptr::eq(v.cell, cell))
                .map(|v| v.vsn.clone())
        })
    }

    /// The vsn of the current version of `module`, if it has one.
    pub fn current_vsn(&self, module: &str) -> Option<String> {
        self.lock().modules.get(module).and_then(|m| m.current.as_ref()).map(|v| v.vsn.clone())
    }

    /// Retries libraries that stayed mapped after being closed; returns those now gone.
    pub fn retry_leaked(&self) -> Vec<LeakedLibrary> {
        reaper::retry_leaked().into_iter().filter(|l| l.owner == self.id).collect()
    }

    /// Everything the code server knows, for status displays. Retries leaked libraries first.
    pub fn status(&self) -> Status {
        reaper::retry_leaked();
        let state = self.lock();
        let mut modules: Vec<ModuleStatus> = state
            .modules
            .iter()
            .map(|(name, m)| ModuleStatus {
                name: name.clone(),
                current: m.current.as_deref().map(VersionInfo::of),
                old: m.old.as_deref().map(VersionInfo::of),
                staged: state.staged.get(name).map(|v| VersionInfo::of(v)),
                pending_post_purge: m.post_purge,
            })
            .collect();
        for (name, staged) in &state.staged {
            if !state.modules.contains_key(name) {
                modules.push(ModuleStatus {
                    name: name.clone(),
                    current: None,
                    old: None,
                    staged: Some(VersionInfo::of(staged)),
                    pending_post_purge: None,
                });
            }
        }
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        Status {
            modules,
            detached: reaper::detached(self.id).iter().map(|v| VersionInfo::of(v)).collect(),
            leaked: reaper::leaked(self.id),
        }
    }

    /// A handle for calling `module` through interface `I`.
    ///
    /// The module must have been loaded (it may have been removed since: calls then fail
    /// with `NotLoaded`). From now on every version of the module must export `I`, and
    /// `load_object_code` refuses one that doesn't.
    pub fn handle<I: Interface>(&self, module: &str) -> Result<Handle<I>, CodeServerError> {
        let mut state = self.lock();
        let Some(module_state) = state.modules.get_mut(module) else {
            return Err(CodeServerError::NotLoaded { module: module.to_owned() });
        };
        let want = Expected { name: I::NAME, layout: <I as StableAbi>::LAYOUT };
        match module_state.expected {
            Some(expected) if ptr::eq(expected.layout, want.layout) => {}
            Some(expected) => {
                return Err(CodeServerError::WrongInterface {
                    module: module.to_owned(),
                    expected: I::NAME.to_owned(),
                    found: expected.name.to_owned(),
                });
            }
            None => {
                for version in module_state.current.iter().chain(module_state.old.iter()) {
                    let wrong = || CodeServerError::WrongInterface {
                        module: module.to_owned(),
                        expected: I::NAME.to_owned(),
                        found: version.interface.clone().unwrap_or_else(|| "none".to_owned()),
                    };
                    if version.interface.as_deref() != Some(I::NAME) {
                        return Err(wrong());
                    }
                    let layout = version.interface_layout().ok_or_else(wrong)?;
                    if let Err(kind) =
                        loader::check_layout(&format!("interface {}", I::NAME), want.layout, layout)
                    {
                        return Err(CodeServerError::Load(LoadError {
                            module: module.to_owned(),
                            path: version.source.clone(),
                            kind,
                        }));
                    }
                }
                module_state.expected = Some(want);
            }
        }
        Ok(Handle::new(Arc::clone(&module_state.entry)))
    }
}

/// Checks a freshly opened version's interface against what the module already uses.
fn check_interface(module: Option<&ModuleState>, new: &Version) -> Result<(), LoadErrorKind> {
    let Some(module) = module else { return Ok(()) };
    let Some(new_layout) = new.interface_layout() else { return Ok(()) };
    let new_name = new.interface.as_deref().unwrap_or("none");
    let what = format!("interface {new_name}");
    if let Some(expected) = module.expected {
        if expected.name != new_name {
            return Err(LoadErrorKind::WrongInterface {
                expected: expected.name.to_owned(),
                found: new_name.to_owned(),
            });
        }
        return loader::check_layout(&what, expected.layout, new_layout);
    }
    // No handle yet: the new version must at least agree with the current one.
    if let Some(current) = &module.current {
        let current_name = current.interface.as_deref().unwrap_or("none");
        if current_name != new_name {
            return Err(LoadErrorKind::WrongInterface {
                expected: current_name.to_owned(),
                found: new_name.to_owned(),
            });
        }
        if let Some(current_layout) = current.interface_layout() {
            return loader::check_layout(&what, current_layout, new_layout);
        }
    }
    Ok(())
}

/// Refuses with `OldProcesses` if any thread holds the old version of `module`.
fn refuse_if_old_held(module: &str, state: &ModuleState) -> Result<(), CodeServerError> {
    let Some(old) = &state.old else { return Ok(()) };
    let found = hold::scan(&[old.cell]);
    if found.is_empty() {
        return Ok(());
    }
    Err(CodeServerError::OldProcesses {
        module: module.to_owned(),
        holders: found.into_iter().map(holder).collect(),
    })
}

/// OTP's PrePurge: clear the old slot before a new version pushes into it.
fn pre_purge(
    module: &str,
    state: &mut ModuleState,
    method: PurgeMethod,
) -> Result<Purged, CodeServerError> {
    if method == PurgeMethod::SoftPurge {
        refuse_if_old_held(module, state)?;
    }
    Ok(purge_old(state))
}

/// Detaches the old version and retires it. In-flight futures holding it are dropped (in
/// their version) before it is unloaded: a thread cannot be stopped, a future can.
fn purge_old(state: &mut ModuleState) -> Purged {
    state.post_purge = None;
    match state.old.take() {
        Some(old) => {
            log::info!("purge {}: {}", state.entry.name, old.label());
            let (cell, id) = (old.cell, old.id);
            match reaper::retire(old) {
                Retired::Held(found) if found.iter().any(|f| f.future.is_some()) => {
                    // The futures the scan found, by id: should the version go and its
                    // cell be recycled before this runs, futures of the cell's next
                    // version are not these.
                    let ids: Vec<u64> = found.iter().filter_map(|f| f.future).collect();
                    let cancelled = hold::cancel_futures(cell, &ids);
                    log::info!(
                        "purge {}: dropped {cancelled} in-flight future(s)",
                        state.entry.name
                    );
                    Purged::from_retired(reaper::outcome(id))
                }
                retired => Purged::from_retired(retired),
            }
        }
        None => Purged::Nothing,
    }
}

/// After `load`/`remove`: unload the old version at once if nothing holds it, else
/// remember the post-purge method.
fn settle_old(state: &mut ModuleState, post: PurgeMethod) -> Purged {
    let Some(old) = &state.old else {
        state.post_purge = None;
        return Purged::Nothing;
    };
    let found = hold::scan(&[old.cell]);
    if found.is_empty() {
        return purge_old(state);
    }
    log::info!("{} is still held by {} thread(s); {post} remembered", old.label(), found.len());
    state.post_purge = Some(post);
    Purged::Pending { holders: found.into_iter().map(holder).collect() }
}

impl Drop for CodeServer {
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.lock());
        for (_, version) in state.staged {
            let _ = reaper::retire(version);
        }
        for (_, mut module) in state.modules {
            // Unpublish first, so no handle that outlives us can enter the version.
            let current = module.current.take();
            module.entry.current.store(ptr::null_mut(), Ordering::Release);
            for version in [current, module.old.take()].into_iter().flatten() {
                let _ = reaper::retire(version);
            }
        }
        reaper::retry_leaked();
        // The scratch directory goes when `self.scratch` is dropped, next. Detached or
        // leaked libraries may still be mapped: their copies were unlinked when they were
        // opened, and the unload checks find them in /proc/self/maps by path all the same.
    }
}
