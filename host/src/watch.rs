//! Watch mode: reload a module whenever its library file is rebuilt.
//!
//! The fastest way to feel hot code loading is the developer loop: edit a plugin, build it,
//! and see the running node answer with the new code, without restarting anything. A
//! [`Watcher`] watches a build output directory (`target/debug`, say) for the library files
//! of some modules and, each time one of them is rebuilt, makes the new build the module's
//! current version the way a relup's `load` would:
//!
//! 1. wait for the file to *settle* (see below), so that a file still being written is
//!    never loaded;
//! 2. `load_object_code` (the loader copies the file to a private path and checks it), then
//!    make sure the file did not change while it was being copied;
//! 3. `load` with a soft pre-purge: calls in flight finish in the version they entered,
//!    new calls enter the new one;
//! 4. if the previous version is still held, move the processes running it to the new
//!    version (`suspend`, `code_change` up, `resume`), wait a bounded time for the
//!    threads still inside it to return, and purge it: softly if it is free, brutally
//!    (processes still on it are killed, their supervisors restart them) after the bound.
//!
//! Each outcome is logged and sent as a [`WatchEvent`]. A file that is not a loadable
//! plugin (a build that wrote garbage, a truncated copy) is [`WatchEvent::Rejected`] and the
//! running version keeps serving.
//!
//! # When a file has settled
//!
//! Build tools do not write a library in one atomic step. Cargo links into `deps/` and then
//! hard-links (or, failing that, copies) the result to `target/debug/lib<name>.so`; a copy
//! grows chunk by chunk, and a linker that writes in place leaves a half-written file
//! behind for a while. The loader's private copy would freeze whatever half it saw, so a
//! file counts as settled only when all of these hold:
//!
//! - no filesystem event named it for a quiet period ([`WatchOptions::quiet`]);
//! - two looks at its metadata, one quiet period apart, found the same file (device, inode,
//!   size, modification and change times), with no event in between;
//! - its ELF headers describe no byte past the end of the file: every segment, every section
//!   and the section header table (which linkers write last, at the end) are all there;
//! - after the loader took its private copy, the file is still the one that settled (same
//!   metadata, no event meanwhile); otherwise the copy may mix two writes, so it is dropped
//!   unused and the file is waited on again.
//!
//! The last check is what makes the rule safe rather than merely likely: any write to the
//! file moves its modification time and raises an event, so a copy taken between two
//! identical looks is a copy of one unchanging file. The first three make sure that file is
//! the finished one; a writer pausing longer than the quiet period gets its half-written
//! file rejected by the ELF check (reported, not loaded) and loaded once it is complete.
//!
//! # Ownership
//!
//! The watcher works on its own thread, so it takes the node as an `Arc<Node>`: the upgrade
//! operations it needs (`suspend`, `change_code`, `purge`) are the node owner's powers,
//! which [`NodeRef`](crate::NodeRef) deliberately does not lend to the threads that merely
//! call processes. Dropping the [`Watcher`] stops its thread and gives the `Arc` back.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use object::read::ReadCache;
use object::{Object, ObjectSection, ObjectSegment};
use plugin_api::Term;

use crate::code_server::{PurgeMethod, Purged};
use crate::error::{CodeServerError, LoadError, LoadErrorKind};
use crate::node::Node;
use crate::process::{ChangeMode, Pid};

/// A module to watch, and the file name of its library in the watched directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchedModule {
    /// The module name the library exports (`greeter`).
    pub module: String,
    /// The library's file name in the watched directory (`libgreeter.so`): a plain name,
    /// not a path.
    pub file_name: String,
}

impl WatchedModule {
    /// `module`'s library is `file_name` in the watched directory.
    pub fn new(module: impl Into<String>, file_name: impl Into<String>) -> WatchedModule {
        WatchedModule { module: module.into(), file_name: file_name.into() }
    }

    /// Why this is not something a watcher can watch, if it is not.
    fn problem(&self) -> Option<&'static str> {
        if self.module.is_empty() {
            return Some("the module name is empty");
        }
        let plain = Path::new(&self.file_name).file_name().and_then(|n| n.to_str());
        if plain != Some(self.file_name.as_str()) || self.file_name == ".." {
            return Some("the file must be a plain file name in the watched directory");
        }
        None
    }
}

/// Parses `MODULE=FILE`, as the `hotcode watch` command line gives it.
impl FromStr for WatchedModule {
    type Err = WatchError;

    fn from_str(spec: &str) -> Result<WatchedModule, WatchError> {
        let bad = |why: &str| WatchError::BadModule { spec: spec.to_owned(), why: why.to_owned() };
        let Some((module, file_name)) = spec.split_once('=') else {
            return Err(bad("expected MODULE=FILE"));
        };
        let watched = WatchedModule::new(module, file_name);
        match watched.problem() {
            Some(why) => Err(bad(why)),
            None => Ok(watched),
        }
    }
}

/// How a [`Watcher`] settles files and upgrades modules.
///
/// `#[non_exhaustive]`: start from [`WatchOptions::default`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WatchOptions {
    /// How long a file must go without events, and the time between the two looks at its
    /// metadata. A file is loaded at the earliest two quiet periods after its last write.
    /// Default: 100 ms.
    pub quiet: Duration,
    /// Whether [`Watcher::start`] loads every module's file before it returns, in order,
    /// and fails if one cannot be loaded (those loaded before it stay loaded). Turn it off
    /// for a node that loaded its modules already. Default: on.
    pub load_at_start: bool,
    /// How long processes get to answer `suspend` and `code_change`. Default: 5 s.
    pub process_timeout: Duration,
    /// How long the previous version may stay in use after the processes moved on before
    /// it is purged brutally. Default: 2 s.
    pub purge_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            quiet: Duration::from_millis(100),
            load_at_start: true,
            process_timeout: Duration::from_secs(5),
            purge_timeout: Duration::from_secs(2),
        }
    }
}

/// What a [`Watcher`] did about a rebuilt file.
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The file was loaded and is the module's current version.
    Reloaded(Reloaded),
    /// The file could not be loaded; the version that was current still is.
    Rejected {
        /// The module.
        module: String,
        /// The file.
        file: PathBuf,
        /// Why it was refused.
        error: ReloadError,
    },
}

impl fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchEvent::Reloaded(r) => r.fmt(f),
            // A load error names the module and the file already.
            WatchEvent::Rejected { error: error @ ReloadError::Load(_), .. } => {
                write!(f, "rejected: {error}")
            }
            WatchEvent::Rejected { module, file, error } => {
                write!(f, "rejected {module} from {}: {error}", file.display())
            }
        }
    }
}

/// A module moved to a rebuilt version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The module.
    pub module: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// The vsn that was current before, if one was.
    pub old_vsn: Option<String>,
    /// The vsn that is current now.
    pub new_vsn: String,
    /// From the moment the file settled to the moment the new version was current (new
    /// calls enter it).
    pub to_current: Duration,
    /// The processes whose state was moved to the new version with `code_change`.
    pub migrated: Vec<Pid>,
    /// What became of the previous version.
    pub old_code: Purged,
    /// Whether the previous version was still in use after [`WatchOptions::purge_timeout`]
    /// and was purged brutally (processes still on it were killed).
    pub brutal_purge: bool,
    /// From the moment the file settled to the moment the previous version was dealt with.
    pub elapsed: Duration,
}

impl fmt::Display for Reloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old = self.old_vsn.as_deref().unwrap_or("none");
        write!(
            f,
            "reloaded {}: vsn {old} -> {} from {}, current {:.1} ms after the file settled",
            self.module,
            self.new_vsn,
            self.file.display(),
            self.to_current.as_secs_f64() * 1e3
        )?;
        if !self.migrated.is_empty() {
            let pids: Vec<String> = self.migrated.iter().map(Pid::to_string).collect();
            write!(f, "; migrated {}", pids.join(", "))?;
        }
        match &self.old_code {
            Purged::Nothing => Ok(()),
            Purged::Unloaded if self.brutal_purge => write!(f, "; old code purged brutally"),
            Purged::Unloaded => write!(f, "; old code unloaded"),
            Purged::Leaked { reason } => write!(f, "; old code leaked: {reason}"),
            Purged::Pending { holders } => write!(
                f,
                "; old code purged brutally, unloaded when {} holder(s) return",
                holders.len()
            ),
        }
    }
}

/// Why a rebuilt file was not made current.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file is not a loadable plugin for the module (or not a complete one).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The code server refused to make the new version current.
    ///
    /// The reason is part of the message rather than a `source`: an event line is read on
    /// its own, without walking an error chain.
    #[error("cannot make the new version of `{module}` current: {error}")]
    Current {
        /// The module.
        module: String,
        /// The code server's reason (boxed: it is large, and this path is rare).
        error: Box<CodeServerError>,
    },
    /// The file changed while it was being loaded (a build still writing it); nothing was
    /// loaded. The watcher itself waits for the file to settle again instead.
    #[error("{} changed while it was being loaded", file.display())]
    Changed {
        /// The file.
        file: PathBuf,
    },
}

/// Starting a [`Watcher`] failed; nothing is watched.
///
/// A variant with a cause keeps it as its `source` only, so that a report printing the chain
/// (`anyhow`'s `{:#}`) shows it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The directory to watch is not a directory.
    #[error("{}: not a directory", dir.display())]
    NotADirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// A module to watch is malformed, or named twice.
    #[error("bad module to watch `{spec}`: {why}")]
    BadModule {
        /// The module, as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// The filesystem watch could not be set up.
    #[error("cannot watch {}", dir.display())]
    Notify {
        /// The directory.
        dir: PathBuf,
        /// The reason.
        #[source]
        source: notify::Error,
    },
    /// A module could not be loaded at start ([`WatchOptions::load_at_start`]).
    #[error("cannot load module `{module}` at start")]
    InitialLoad {
        /// The module.
        module: String,
        /// The reason (boxed: it is large, and this path is rare).
        #[source]
        source: Box<ReloadError>,
    },
    /// The watcher thread could not be started.
    #[error("cannot start the watcher thread")]
    Thread(#[source] io::Error),
}

/// Watches a directory and reloads modules whose library files are rebuilt. See the
/// [module docs](self).
///
/// Dropping it stops watching; a reload in progress finishes first, which may take up to
/// the process and purge timeouts of [`WatchOptions`].
pub struct Watcher {
    events: Receiver<WatchEvent>,
    dir: PathBuf,
    /// The filesystem watch. Dropped first, it stops the raw events.
    fs: Option<notify::RecommendedWatcher>,
    /// Never sent on: dropping it tells the thread to stop.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Watches `dir` (not its subdirectories) for the library files of `modules`, and
    /// reloads each module into `node` whenever its file is rebuilt.
    ///
    /// The watch is in place before the modules are loaded at start (if
    /// [`WatchOptions::load_at_start`]), so that a rebuild racing with the start is not
    /// missed.
    pub fn start(
        node: Arc<Node>,
        dir: &Path,
        modules: Vec<WatchedModule>,
        options: WatchOptions,
    ) -> Result<Watcher, WatchError> {
        let not_a_dir = || WatchError::NotADirectory { dir: dir.to_owned() };
        if !dir.is_dir() {
            return Err(not_a_dir());
        }
        // Events name files by the watched path: a canonical one makes them comparable.
        let dir = dir.canonicalize().map_err(|_| not_a_dir())?;
        let mut seen_modules = HashSet::new();
        let mut seen_files = HashSet::new();
        for m in &modules {
            let spec = format!("{}={}", m.module, m.file_name);
            let bad = |why: &str| WatchError::BadModule { spec: spec.clone(), why: why.to_owned() };
            if let Some(why) = m.problem() {
                return Err(bad(why));
            }
            if !seen_modules.insert(m.module.as_str()) {
                return Err(bad("the module is named twice"));
            }
            if !seen_files.insert(m.file_name.as_str()) {
                return Err(bad("the file is named for two modules"));
            }
        }

        let (raw_tx, raw_rx) = channel::unbounded();
        let mut fs = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the watcher stops: nothing left to tell.
            let _ = raw_tx.send(event);
        })
        .map_err(|source| WatchError::Notify { dir: dir.clone(), source })?;
        fs.watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Notify { dir: dir.clone(), source })?;

        let mut tracked: Vec<Tracked> = modules
            .into_iter()
            .map(|m| Tracked {
                path: dir.join(&m.file_name),
                module: m.module,
                dirty_since: None,
                look: None,
                handled: None,
            })
            .collect();
        if options.load_at_start {
            for t in &mut tracked {
                let settled_at = Instant::now();
                let fp = fingerprint(&t.path).map_err(|e| WatchError::InitialLoad {
                    module: t.module.clone(),
                    source: Box::new(ReloadError::Load(LoadError {
                        module: t.module.clone(),
                        path: t.path.clone(),
                        kind: io_kind(e),
                    })),
                })?;
                let unchanged = || fingerprint(&t.path).ok() == Some(fp);
                let loaded = reload(&node, &t.module, &t.path, settled_at, &options, unchanged)
                    .map_err(|source| WatchError::InitialLoad {
                        module: t.module.clone(),
                        source: Box::new(source),
                    })?;
                log::info!("watch: {loaded}");
                t.handled = Some(fp);
            }
        }

        let (events_tx, events) = channel::unbounded();
        let (stop, stop_rx) = channel::bounded(0);
        let worker =
            Worker { node, options, tracked, raw: raw_rx, stop: stop_rx, events: events_tx };
        let thread = std::thread::Builder::new()
            .name("hotcode-watch".to_owned())
            .spawn(move || worker.run())
            .map_err(WatchError::Thread)?;
        log::info!("watch: watching {}", dir.display());
        Ok(Watcher { events, dir, fs: Some(fs), stop: Some(stop), thread: Some(thread) })
    }

    /// What the watcher did, in order: one event per rebuilt file it loaded or rejected.
    pub fn events(&self) -> &Receiver<WatchEvent> {
        &self.events
    }

    /// The watched directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops watching and waits for the watcher thread to finish.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.fs.take());
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("watch: the watcher thread panicked");
        }
    }
}

/// What identifies one written state of a file: any write moves the modification and
/// change times, and a replacement brings another inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn fingerprint(path: &Path) -> io::Result<Fingerprint> {
    let m = std::fs::metadata(path)?;
    Ok(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

fn io_kind(e: io::Error) -> LoadErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound => LoadErrorKind::NotFound,
        _ => LoadErrorKind::Io(e),
    }
}

/// One watched file and where it is in settling.
struct Tracked {
    module: String,
    path: PathBuf,
    /// When the last event named the file, while it is waiting to settle.
    dirty_since: Option<Instant>,
    /// The first of the two looks: what the file was, and when.
    look: Option<(Fingerprint, Instant)>,
    /// The file last loaded or rejected: if it settles unchanged, there is nothing to do.
    handled: Option<Fingerprint>,
}

impl Tracked {
    fn touch(&mut self, now: Instant) {
        self.dirty_since = Some(now);
        self.look = None;
    }

    /// When this file should next be looked at, if it is waiting to settle.
    fn due(&self, quiet: Duration) -> Option<Instant> {
        let last = self.dirty_since?;
        Some(match self.look {
            None => last + quiet,
            Some((_, at)) => at + quiet,
        })
    }
}

/// Raw events from the filesystem watch.
type RawEvent = notify::Result<notify::Event>;

/// The watcher thread's state.
struct Worker {
    node: Arc<Node>,
    options: WatchOptions,
    tracked: Vec<Tracked>,
    raw: Receiver<RawEvent>,
    stop: Receiver<()>,
    events: Sender<WatchEvent>,
}

/// How long the thread waits when nothing is settling; any event wakes it sooner.
const IDLE: Duration = Duration::from_secs(3600);

impl Worker {
    fn run(mut self) {
        loop {
            let now = Instant::now();
            let timeout = self
                .tracked
                .iter()
                .filter_map(|t| t.due(self.options.quiet))
                .min()
                .map_or(IDLE, |due| due.saturating_duration_since(now));
            channel::select! {
                // Nothing is ever sent: this fires when the `Watcher` is dropped.
                recv(self.stop) -> _ => return,
                recv(self.raw) -> event => match event {
                    Ok(event) => self.note(event),
                    Err(_) => return,
                },
                default(timeout) => {}
            }
            self.step_due();
        }
    }

    /// Marks the files an event names as changed.
    fn note(&mut self, event: RawEvent) {
        let now = Instant::now();
        match event {
            Err(e) => {
                // Events may have been lost: look at every file again. One that did not
                // change since it was handled settles to nothing.
                log::warn!("watch: filesystem watch error ({e}); looking at every file again");
                self.tracked.iter_mut().for_each(|t| t.touch(now));
            }
            Ok(event) if event.need_rescan() => {
                log::debug!("watch: the event queue overflowed; looking at every file again");
                self.tracked.iter_mut().for_each(|t| t.touch(now));
            }
            Ok(event) => {
                if !changes_content(&event.kind) {
                    return;
                }
                for t in &mut self.tracked {
                    if event.paths.iter().any(|p| p == &t.path) {
                        log::trace!("watch: {:?} on {}", event.kind, t.path.display());
                        t.touch(now);
                    }
                }
            }
        }
    }

    /// Looks at every file that is due, and reloads those that settled.
    fn step_due(&mut self) {
        let now = Instant::now();
        for at in 0..self.tracked.len() {
            if self.tracked[at].due(self.options.quiet).is_some_and(|due| due <= now) {
                self.step(at);
            }
        }
    }

    fn step(&mut self, at: usize) {
        let now = Instant::now();
        let t = &mut self.tracked[at];
        let fp = match fingerprint(&t.path) {
            Ok(fp) => fp,
            Err(e) => {
                // Gone (a build replacing it removes it first) or unreadable: the next
                // event for it starts over. The running version keeps serving meanwhile.
                log::debug!("watch: {}: {e}; waiting for it to come back", t.path.display());
                t.dirty_since = None;
                t.look = None;
                return;
            }
        };
        match t.look {
            Some((first, _)) if first == fp => {}
            _ => {
                t.look = Some((fp, now));
                return;
            }
        }
        t.dirty_since = None;
        t.look = None;
        if t.handled == Some(fp) {
            log::debug!("watch: {} settled unchanged", t.path.display());
            return;
        }
        let (module, path) = (t.module.clone(), t.path.clone());
        // Events that arrive while the loader copies the file are kept here, then noted.
        let mut arrived = Vec::new();
        let unchanged = || {
            arrived.extend(self.raw.try_iter());
            let touched = arrived.iter().any(|e| names_content_change(e, &path));
            !touched && fingerprint(&path).ok() == Some(fp)
        };
        let outcome = reload(&self.node, &module, &path, now, &self.options, unchanged);
        for event in arrived {
            self.note(event);
        }
        let event = match outcome {
            Ok(reloaded) => {
                log::info!("watch: {reloaded}");
                WatchEvent::Reloaded(reloaded)
            }
            Err(ReloadError::Changed { .. }) => {
                log::debug!("watch: {} changed while loading; waiting again", path.display());
                self.tracked[at].touch(Instant::now());
                return;
            }
            Err(error) => {
                log::warn!("watch: rejected {module} from {}: {error}", path.display());
                WatchEvent::Rejected { module, file: path, error }
            }
        };
        self.tracked[at].handled = Some(fp);
        // Nobody listening is not an error: the log has it too.
        let _ = self.events.send(event);
    }
}

/// Whether an event of this kind may mean the file's content changed. Opening and reading
/// (the loader's own copy among them) do not.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn names_content_change(event: &RawEvent, path: &Path) -> bool {
    match event {
        Ok(e) => changes_content(&e.kind) && (e.need_rescan() || e.paths.iter().any(|p| p == path)),
        // An error may hide anything.
        Err(_) => true,
    }
}

/// Loads the settled file `path` as the new current version of `module`: checks that the
/// file is complete, stages it, checks with `unchanged` that the file did not move while it
/// was copied, makes it current and deals with the previous version.
fn reload(
    node: &Node,
    module: &str,
    path: &Path,
    settled_at: Instant,
    options: &WatchOptions,
    unchanged: impl FnOnce() -> bool,
) -> Result<Reloaded, ReloadError> {
    let code = node.code();
    check_complete(path).map_err(|kind| LoadError {
        module: module.to_owned(),
        path: path.to_owned(),
        kind,
    })?;
    let old_vsn = code.current_vsn(module);
    let staged = code.load_object_code(module, path)?;
    if !unchanged() {
        code.drop_staged(module);
        return Err(ReloadError::Changed { file: path.to_owned() });
    }
    let current = |e: CodeServerError| {
        code.drop_staged(module);
        ReloadError::Current { module: module.to_owned(), error: Box::new(e) }
    };
    let (purged, mut migrated, mut brutal) =
        match code.load(module, PurgeMethod::SoftPurge, PurgeMethod::SoftPurge) {
            Ok(purged) => (purged, Vec::new(), false),
            Err(CodeServerError::OldProcesses { holders, .. }) => {
                // The version before the current one is still in use (left by an earlier
                // reload whose purge could not finish): clear it the same way first.
                log::info!(
                    "watch: {module}: older code still held by {} holder(s); clearing it",
                    holders.len()
                );
                let (_, migrated, brutal) = clear_old(node, module, options);
                let purged = code
                    .load(module, PurgeMethod::SoftPurge, PurgeMethod::SoftPurge)
                    .map_err(current)?;
                (purged, migrated, brutal)
            }
            Err(e) => return Err(current(e)),
        };
    let to_current = settled_at.elapsed();
    log::debug!(
        "watch: {module} {} current {:.1} ms after {} settled",
        staged.vsn,
        to_current.as_secs_f64() * 1e3,
        path.display()
    );
    let old_code = match purged {
        Purged::Pending { .. } => {
            let (purged, now_migrated, now_brutal) = clear_old(node, module, options);
            migrated.extend(now_migrated);
            brutal |= now_brutal;
            purged
        }
        other => other,
    };
    Ok(Reloaded {
        module: module.to_owned(),
        file: path.to_owned(),
        old_vsn,
        new_vsn: staged.vsn,
        to_current,
        migrated,
        old_code,
        brutal_purge: brutal,
        elapsed: settled_at.elapsed(),
    })
}

/// Moves the processes off the old version of `module`, then purges it: softly as soon as
/// no thread holds it, brutally once [`WatchOptions::purge_timeout`] has passed. Returns
/// the purge's outcome, the processes migrated, and whether the purge was brutal.
fn clear_old(node: &Node, module: &str, options: &WatchOptions) -> (Purged, Vec<Pid>, bool) {
    let deadline = Instant::now() + options.purge_timeout;
    let migrated = migrate_processes(node, module, options.process_timeout);
    // The code server has no signal for "the last holder left", and holders are threads in
    // the middle of a call: a short, growing pause between tries finds them gone quickly.
    let mut pause = Duration::from_millis(1);
    loop {
        match node.code().soft_purge(module) {
            Ok(purged) => return (purged, migrated, false),
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    log::warn!(
                        "watch: {module}: {e} after {:?}; purging it brutally",
                        options.purge_timeout
                    );
                    return (node.purge(module), migrated, true);
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// The processes running `module` whose state still belongs to its old version.
fn on_old_code(node: &Node, module: &str) -> Vec<Pid> {
    let running: HashSet<Pid> = node
        .processes()
        .into_iter()
        .filter(|p| p.module == module)
        .map(|p| p.pid)
        .chain(node.processes_running(module))
        .collect();
    let Ok(holders) = node.code().holders(module) else { return Vec::new() };
    let mut pids: Vec<Pid> = holders
        .old
        .iter()
        .flat_map(|old| old.holders.iter())
        .filter_map(|h| h.process.map(Pid))
        .filter(|pid| running.contains(pid))
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

/// `suspend`, `code_change` up and `resume` for the processes on the old version of
/// `module`; returns those whose state moved.
fn migrate_processes(node: &Node, module: &str, timeout: Duration) -> Vec<Pid> {
    let candidates = on_old_code(node, module);
    if candidates.is_empty() {
        return Vec::new();
    }
    let suspended: Vec<Pid> = node
        .suspend_many(&candidates, timeout)
        .into_iter()
        .filter_map(|(pid, r)| match r {
            Ok(()) => Some(pid),
            Err(e) => {
                log::warn!("watch: {module}: cannot suspend {pid}: {e}");
                None
            }
        })
        .collect();
    // A process that handled a message before it was suspended moved to the new version on
    // its own; a second code_change would convert its state from the version it has.
    let still_old: HashSet<Pid> = on_old_code(node, module).into_iter().collect();
    let to_change: Vec<Pid> = suspended.iter().copied().filter(|p| still_old.contains(p)).collect();
    let mut migrated = Vec::new();
    for (pid, r) in node.change_code_many(&to_change, ChangeMode::Up, &Term::List(vec![]), timeout)
    {
        match r {
            Ok(()) => migrated.push(pid),
            // A failed code_change crashes the process; its supervisor restarts it.
            Err(e) => log::warn!("watch: {module}: code_change of {pid} failed: {e}"),
        }
    }
    for pid in suspended {
        // One that crashed in code_change is gone: nothing to resume.
        let _ = node.resume(pid);
    }
    migrated
}

/// Checks that `path` is a complete ELF shared object: an ELF header for this target, and
/// no segment, section or header table described past the end of the file.
fn check_complete(path: &Path) -> Result<(), LoadErrorKind> {
    crate::loader::check_elf(path)?;
    let file = File::open(path).map_err(io_kind)?;
    let len = file.metadata().map_err(LoadErrorKind::Io)?.len();
    match described_len(&ReadCache::new(file)) {
        Ok(needed) if needed <= len => Ok(()),
        Ok(needed) => Err(LoadErrorKind::NotSharedObject(format!(
            "truncated: its headers describe {needed} bytes, the file has {len}"
        ))),
        Err(why) => Err(LoadErrorKind::NotSharedObject(format!("incomplete or malformed: {why}"))),
    }
}

/// How long the ELF file in `data` says it is: the end of its furthest segment or section.
/// Parsing also reads the program and section header tables, so a file cut inside them
/// fails here.
fn described_len<'data, R: object::ReadRef<'data>>(data: R) -> Result<u64, object::Error> {
    let elf = object::File::parse(data)?;
    let segments = elf.segments().map(|s| s.file_range());
    let sections = elf.sections().filter_map(|s| s.file_range());
    Ok(segments
        .chain(sections)
        .map(|(offset, size)| offset.saturating_add(size))
        .max()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_specs_parse_and_refuse_paths() {
        let m: WatchedModule = "greeter=libgreeter_v1.so".parse().expect("valid");
        assert_eq!(m, WatchedModule::new("greeter", "libgreeter_v1.so"));
        for bad in ["greeter", "=libgreeter.so", "greeter=", "greeter=deps/libgreeter.so", "g=.."] {
            let err = bad.parse::<WatchedModule>().unwrap_err();
            assert!(matches!(err, WatchError::BadModule { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn a_cut_elf_file_describes_more_than_it_has() {
        // The test executable stands in for any linker output: whole, it describes no
        // byte past its end; cut anywhere, it does (or no longer parses).
        let exe = std::env::current_exe().expect("test executable");
        let bytes = std::fs::read(&exe).expect("read test executable");
        let whole = described_len(bytes.as_slice()).expect("parse");
        assert!(whole <= bytes.len() as u64);
        for cut in [bytes.len() - 1, bytes.len() / 2, 4096, 64] {
            let cut_bytes = &bytes[..cut];
            // A parse error is just as good: the cut file is refused either way.
            if let Ok(needed) = described_len(cut_bytes) {
                assert!(needed > cut as u64, "cut at {cut}: needs {needed}");
            }
        }
    }

    #[test]
    fn only_content_changes_count() {
        assert!(changes_content(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(changes_content(&EventKind::Create(notify::event::CreateKind::File)));
    }
}
