//! The runtime's schedulers: a pool of worker threads that run gen_server processes.
//!
//! One pool per OS process (as ERTS has one set of schedulers per VM), started on first
//! use with one worker per core. A process is queued when it becomes runnable (see
//! [`Pcb`]); a worker takes the oldest queued process, runs it for at most [`BUDGET`]
//! messages, and queues it again at the back if more is waiting, so a busy process cannot
//! starve the others. A worker that finds the queue empty yields the core a few times,
//! looking again each time, before it sleeps (as ERTS schedulers spin before they sleep): a
//! request that follows its caller's previous answer then finds a worker awake.
//!
//! A callback may block (a call to another process, I/O, a sleep); the pool must not stall
//! for it. A monitor thread looks every [`GROW_AFTER`]: when processes are queued, no worker
//! is idle and no worker took a process off the queue since its last look, every worker is
//! stuck in a callback, and the monitor starts another worker (up to [`MAX_WORKERS`]).
//! Workers beyond the first set retire after [`RETIRE_AFTER`] without work. A callback that
//! runs longer than [`STUCK_AFTER`] is reported once (logged, naming the process): it ties
//! up its worker, and the version it runs stays loaded (its worker's hold slot keeps it)
//! until it returns, as a thread inside plugin code always does.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::runtime::process::Pcb;

/// How many messages a worker handles for one process before it queues it again.
pub(crate) const BUDGET: usize = 64;
/// How long every worker may be stuck, with processes waiting, before the pool grows.
pub(crate) const GROW_AFTER: Duration = Duration::from_millis(10);
/// How long a worker beyond the first set waits for work before it retires.
pub(crate) const RETIRE_AFTER: Duration = Duration::from_secs(2);
/// How long one run of a process may last before it is reported as stuck.
pub(crate) const STUCK_AFTER: Duration = Duration::from_secs(10);
/// How many times an idle worker yields, looking for work, before it sleeps.
const SPINS: usize = 64;
/// The most workers the pool grows to.
pub(crate) const MAX_WORKERS: usize = 1024;

struct Queue {
    ready: VecDeque<Arc<Pcb>>,
    /// Workers waiting for work.
    idle: usize,
    /// Workers alive.
    workers: usize,
}

/// What one worker is doing, for the monitor.
struct WorkerState {
    /// When its current run started (milliseconds since the pool started, plus one); 0 when
    /// it is not running a process.
    since: AtomicU64,
    /// The pid it runs.
    pid: AtomicU64,
    /// Whether its current run was reported as stuck.
    reported: AtomicBool,
}

/// The worker pool. See the [module docs](self).
pub(crate) struct Scheduler {
    queue: Mutex<Queue>,
    work: Condvar,
    /// How many workers the pool keeps when idle: one per core.
    base: usize,
    /// How many runs workers have started: the monitor's sign of progress.
    taken: AtomicU64,
    /// How many processes are queued (`queue.ready`'s length, read without the lock by
    /// workers looking for work before they sleep).
    queued: AtomicUsize,
    /// Whether the pool was reported as full (once).
    full_reported: AtomicBool,
    started: Instant,
    states: Mutex<Vec<Arc<WorkerState>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section below leaves its data consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static SCHEDULER: OnceLock<&'static Scheduler> = OnceLock::new();

/// The pool, started on first use.
pub(crate) fn get() -> &'static Scheduler {
    SCHEDULER.get_or_init(|| {
        let base = std::thread::available_parallelism().map_or(2, |n| n.get());
        let sched: &'static Scheduler = Box::leak(Box::new(Scheduler {
            queue: Mutex::new(Queue { ready: VecDeque::new(), idle: 0, workers: 0 }),
            work: Condvar::new(),
            base,
            taken: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            full_reported: AtomicBool::new(false),
            started: Instant::now(),
            states: Mutex::new(Vec::new()),
        }));
        for _ in 0..base {
            sched.start_worker();
        }
        let spawned = std::thread::Builder::new()
            .name("hotcode-sched-monitor".to_owned())
            .spawn(move || sched.monitor());
        if let Err(e) = spawned {
            log::error!("scheduler: cannot start its monitor ({e}); a blocked pool will not grow");
        }
        sched
    })
}

impl Scheduler {
    /// Queues a process its caller has just claimed (`SCHEDULED`), waking an idle worker.
    pub(crate) fn push(&self, pcb: Arc<Pcb>) {
        let mut q = lock(&self.queue);
        q.ready.push_back(pcb);
        self.queued.fetch_add(1, Ordering::Relaxed);
        if q.idle > 0 {
            self.work.notify_one();
        }
    }

    /// Queues processes their caller has just claimed, under one lock, waking as many
    /// idle workers as there is work for.
    pub(crate) fn push_many(&self, pcbs: Vec<Arc<Pcb>>) {
        if pcbs.is_empty() {
            return;
        }
        let n = pcbs.len();
        let mut q = lock(&self.queue);
        q.ready.extend(pcbs);
        self.queued.fetch_add(n, Ordering::Relaxed);
        for _ in 0..q.idle.min(n) {
            self.work.notify_one();
        }
    }

    /// How many workers are alive now.
    pub(crate) fn workers(&self) -> usize {
        lock(&self.queue).workers
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn start_worker(&'static self) -> bool {
        let state = Arc::new(WorkerState {
            since: AtomicU64::new(0),
            pid: AtomicU64::new(0),
            reported: AtomicBool::new(false),
        });
        lock(&self.queue).workers += 1;
        let mine = Arc::clone(&state);
        let spawned = std::thread::Builder::new()
            .name("hotcode-sched".to_owned())
            .spawn(move || self.work_loop(&mine));
        match spawned {
            Ok(_) => {
                lock(&self.states).push(state);
                true
            }
            Err(e) => {
                lock(&self.queue).workers -= 1;
                log::error!("scheduler: cannot start a worker: {e}");
                false
            }
        }
    }

    fn work_loop(&self, state: &Arc<WorkerState>) {
        while let Some(pcb) = self.take() {
            self.taken.fetch_add(1, Ordering::Relaxed);
            state.pid.store(pcb.pid_number(), Ordering::Relaxed);
            state.reported.store(false, Ordering::Relaxed);
            state.since.store(self.now_ms(), Ordering::Relaxed);
            let again = catch_unwind(AssertUnwindSafe(|| pcb.run(BUDGET))).unwrap_or_else(|_| {
                log::error!("scheduler: running <0.{}.0> panicked in the host", pcb.pid_number());
                // Even the bookkeeping must not take the worker down with it.
                if catch_unwind(AssertUnwindSafe(|| pcb.crashed())).is_err() {
                    log::error!("scheduler: <0.{}.0>: its exit panicked too", pcb.pid_number());
                }
                false
            });
            state.since.store(0, Ordering::Relaxed);
            if again {
                self.push(pcb);
            }
        }
        lock(&self.states).retain(|s| !Arc::ptr_eq(s, state));
    }

    /// The next process to run; `None` when this worker retires.
    fn take(&self) -> Option<Arc<Pcb>> {
        let mut q = lock(&self.queue);
        loop {
            if let Some(pcb) = q.ready.pop_front() {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                return Some(pcb);
            }
            // Before sleeping, look for work a little while, yielding the core: a request
            // that comes right after its caller's previous answer then needs no wake-up.
            drop(q);
            for _ in 0..SPINS {
                if self.queued.load(Ordering::Relaxed) > 0 {
                    break;
                }
                std::thread::yield_now();
            }
            q = lock(&self.queue);
            if !q.ready.is_empty() {
                continue;
            }
            q.idle += 1;
            let (guard, waited) =
                self.work.wait_timeout(q, RETIRE_AFTER).unwrap_or_else(|p| p.into_inner());
            q = guard;
            q.idle -= 1;
            // Retire only while `base` other workers are free: workers stuck in callbacks
            // do not count, or the pool would shrink to them and stall.
            if waited.timed_out()
                && q.ready.is_empty()
                && q.workers > self.base
                && q.idle >= self.base
            {
                q.workers -= 1;
                return None;
            }
        }
    }

    fn monitor(&'static self) {
        let mut last = self.taken.load(Ordering::Relaxed);
        loop {
            std::thread::sleep(GROW_AFTER);
            let taken = self.taken.load(Ordering::Relaxed);
            let (grow, full) = {
                let q = lock(&self.queue);
                let stalled = !q.ready.is_empty() && q.idle == 0 && taken == last;
                (stalled && q.workers < MAX_WORKERS, stalled && q.workers >= MAX_WORKERS)
            };
            last = taken;
            if full && !self.full_reported.swap(true, Ordering::Relaxed) {
                log::error!(
                    "scheduler: all {MAX_WORKERS} workers are inside callbacks with processes \
                     waiting; the pool grows no further, and those processes wait"
                );
            }
            if grow && self.start_worker() {
                log::info!(
                    "scheduler: every worker is inside a callback with processes waiting; \
                     started another ({} now)",
                    self.workers()
                );
            }
            self.report_stuck();
        }
    }

    fn report_stuck(&self) {
        let now = self.now_ms();
        let stuck_ms = u64::try_from(STUCK_AFTER.as_millis()).unwrap_or(u64::MAX);
        for state in lock(&self.states).iter() {
            let since = state.since.load(Ordering::Relaxed);
            if since != 0
                && now.saturating_sub(since) > stuck_ms
                && !state.reported.swap(true, Ordering::Relaxed)
            {
                log::error!(
                    "scheduler: <0.{}.0> has been inside one callback for over {STUCK_AFTER:?}; \
                     it ties up a worker, and the version it runs stays loaded until it returns",
                    state.pid.load(Ordering::Relaxed)
                );
            }
        }
    }
}
