//! The watcher's thread: it follows filesystem events, looks at each watched file until it
//! settles, and reloads it: stage, make current, move the processes, purge the old version.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use plugin_api::Term;

use super::settle::{
    RawEvent, Tracked, changes_content, check_complete, fingerprint, names_content_change,
};
use super::{ReloadError, Reloaded, WatchEvent, WatchOptions};
use crate::code::code_server::{PurgeMethod, Purged};
use crate::code::error::{CodeServerError, LoadError};
use crate::runtime::node::Node;
use crate::runtime::process::{ChangeMode, Pid};

/// The watcher thread's state.
pub(super) struct Worker {
    pub(super) node: Arc<Node>,
    pub(super) options: WatchOptions,
    pub(super) tracked: Vec<Tracked>,
    pub(super) raw: Receiver<RawEvent>,
    pub(super) stop: Receiver<()>,
    pub(super) events: Sender<WatchEvent>,
}

/// How long the thread waits when nothing is settling; any event wakes it sooner.
pub(super) const IDLE: Duration = Duration::from_secs(3600);

impl Worker {
    pub(super) fn run(mut self) {
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
    pub(super) fn note(&mut self, event: RawEvent) {
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
    pub(super) fn step_due(&mut self) {
        let now = Instant::now();
        for at in 0..self.tracked.len() {
            if self.tracked[at].due(self.options.quiet).is_some_and(|due| due <= now) {
                self.step(at);
            }
        }
    }

    pub(super) fn step(&mut self, at: usize) {
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

/// Loads the settled file `path` as the new current version of `module`: checks that the
/// file is complete, stages it, checks with `unchanged` that the file did not move while it
/// was copied, makes it current and deals with the previous version.
pub(super) fn reload(
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
pub(super) fn clear_old(
    node: &Node,
    module: &str,
    options: &WatchOptions,
) -> (Purged, Vec<Pid>, bool) {
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
pub(super) fn on_old_code(node: &Node, module: &str) -> Vec<Pid> {
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
pub(super) fn migrate_processes(node: &Node, module: &str, timeout: Duration) -> Vec<Pid> {
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
                // One still inside a callback stays suspended unless told otherwise.
                let _ = node.resume(pid);
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
