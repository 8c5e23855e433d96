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
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use notify::{RecursiveMode, Watcher as _};

use crate::code::code_server::Purged;
use crate::code::error::{CodeServerError, LoadError};
use crate::runtime::node::Node;
use crate::runtime::process::Pid;

mod settle;
mod worker;

use settle::{Tracked, fingerprint, io_kind};
use worker::{Worker, reload};

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
}
