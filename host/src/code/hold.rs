//! Per-thread hold slots: which version each thread is inside, with no shared write.
//!
//! Every thread that calls plugin code owns a [`ThreadRecord`]: a small stack of slots, one
//! per nesting level, each naming the [`VersionCell`] the thread entered at that level.
//! Only the owning thread writes its slots; the code server reads them all when it needs to
//! know who holds a version. The protocol:
//!
//! - **enter**: read `current`, store it in the next slot (relaxed), compiler fence, read
//!   `current` again. If it changed, clear the slot (running the release check below) and
//!   retry; if it is null the module is not loaded.
//! - **release**: clear the slot (release), compiler fence, then read the version's
//!   `reap` flag; if set, tell the reaper this thread let go.
//! - **scan** (code server): publish the change first (new `current`, or the `reap` flag),
//!   then [`membarrier::purger_fence`], then read every slot (acquire).
//!
//! The fence pairs make each side see the other's write (see [`membarrier`]): a caller
//! that the scan missed re-reads `current` after the change and backs off; a releaser the
//! scan still saw reads the `reap` flag after it was set and wakes the reaper. Version
//! cells are type-stable (never freed, only recycled), so reading a cell through a stale
//! pointer is always a read of valid memory; every decision is re-validated under the
//! reaper's lock.
//!
//! Futures returned by async calls hold their version in an entry of their own
//! ([`FutureHold`]), which the scan reads too; see "Holds owned by futures" below. So do
//! processes' states, through their pins; see "Process state pins" below.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crossbeam::utils::CachePadded;

use crate::code::membarrier;

/// How deeply calls may nest on one thread (host → plugin → host → plugin ...).
pub const MAX_DEPTH: usize = 32;

/// The part of a loaded version that callers touch: type-stable, recycled, never freed.
///
/// `table` is the version's function table, set before the cell is published as current
/// and cleared after the version is unloaded. `reap` asks the last releaser to wake the
/// reaper. `full_fence` caches, next to the table the caller reads anyway, whether callers
/// must fence for themselves (see [`membarrier`]). Aligned to its own cache-line pair:
/// callers read it on every call, so no unrelated, written data may share its line.
#[repr(align(128))]
pub(crate) struct VersionCell {
    table: AtomicPtr<c_void>,
    reap: AtomicBool,
    /// [`membarrier::callers_need_full_fence`] when the cell was acquired. That flag only
    /// ever goes from true to false, so a cell's copy is never false while the flag is true:
    /// any value a caller reads, even through a stale pointer to a recycled cell, is safe.
    full_fence: AtomicBool,
    /// The id of the version using this cell, for logs; 0 when free.
    id: AtomicU64,
}

static CELL_POOL: Mutex<Vec<&'static VersionCell>> = Mutex::new(Vec::new());

impl VersionCell {
    /// Takes a free cell (or makes one) for version `id` with function table `table`.
    pub(crate) fn acquire(id: u64, table: *const c_void) -> &'static VersionCell {
        // Registered before the cell caches the fence mode, so that it caches the cheap one.
        membarrier::init();
        let cell = lock(&CELL_POOL).pop().unwrap_or_else(|| {
            Box::leak(Box::new(VersionCell {
                table: AtomicPtr::new(ptr::null_mut()),
                reap: AtomicBool::new(false),
                full_fence: AtomicBool::new(true),
                id: AtomicU64::new(0),
            }))
        });
        cell.full_fence.store(membarrier::callers_need_full_fence(), Ordering::Relaxed);
        cell.table.store(table.cast_mut(), Ordering::Relaxed);
        cell.reap.store(false, Ordering::Relaxed);
        cell.id.store(id, Ordering::Relaxed);
        cell
    }

    /// Returns a cell to the pool. The caller has established (by a scan after the cell
    /// stopped being reachable as `current`) that no thread holds it.
    pub(crate) fn recycle(&'static self) {
        self.table.store(ptr::null_mut(), Ordering::Relaxed);
        self.reap.store(false, Ordering::Relaxed);
        self.id.store(0, Ordering::Relaxed);
        lock(&CELL_POOL).push(self);
    }

    /// The function table; valid while the caller holds this cell.
    #[inline(always)]
    pub(crate) fn table(&self) -> *const c_void {
        self.table.load(Ordering::Relaxed)
    }

    /// The caller's half of the fence protocol, in the mode this cell cached.
    #[inline(always)]
    fn caller_fence(&self) {
        membarrier::caller_fence_with(self.full_fence.load(Ordering::Relaxed));
    }

    /// Asks whoever releases this cell last to wake the reaper. The caller must follow
    /// with [`scan`] (which fences) before trusting that no releaser was missed.
    pub(crate) fn request_reap(&self) {
        self.reap.store(true, Ordering::SeqCst);
    }

    pub(crate) fn as_ptr(&'static self) -> *mut VersionCell {
        self as *const VersionCell as *mut VersionCell
    }
}

/// Who a thread is, for `holders` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The thread's name, or `<unnamed>`.
    pub name: String,
    /// The kernel thread id.
    pub tid: i32,
}

/// One thread's hold slots, padded so no two threads share a cache line.
///
/// Aligned to 128 bytes, so the low 7 bits of its address are free to carry the thread's
/// nesting depth in [`TOP`].
#[repr(align(128))]
pub(crate) struct ThreadRecord {
    slots: CachePadded<[AtomicPtr<VersionCell>; MAX_DEPTH]>,
    info: ThreadInfo,
    /// Non-zero while the thread runs a hotcode process (a runtime worker inside one of its
    /// callbacks, or a supervisor's own thread): its process id.
    process: AtomicU64,
}

impl ThreadRecord {
    pub(crate) fn info(&self) -> &ThreadInfo {
        &self.info
    }
    pub(crate) fn process(&self) -> Option<u64> {
        match self.process.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }
}

/// Every live thread that has ever called through a handle.
static REGISTRY: Mutex<Vec<Arc<ThreadRecord>>> = Mutex::new(Vec::new());

/// The bits of a [`TOP`] word that hold the nesting depth.
const DEPTH_MASK: usize = 127;
const _: () = assert!(std::mem::align_of::<ThreadRecord>() > DEPTH_MASK && MAX_DEPTH <= DEPTH_MASK);

thread_local! {
    /// The calling thread's one word on the call path: its record's address plus its
    /// current nesting depth (the record is aligned past [`DEPTH_MASK`]), or 0 before the
    /// thread registered. Const-initialised and free of drop glue, so reaching it is a plain
    /// TLS access; a call reads it once on entry and writes it once on entry and on return.
    static TOP: Cell<usize> = const { Cell::new(0) };
    /// Owns this thread's registration; its destructor unregisters the thread at exit.
    static REGISTRATION: RefCell<Option<Registration>> = const { RefCell::new(None) };
}

struct Registration(Arc<ThreadRecord>);

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = TOP.try_with(|top| top.set(0));
        lock(&REGISTRY).retain(|r| !Arc::ptr_eq(r, &self.0));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data half-updated (each critical
    // section is a single push, retain or scan), so a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a thread could not enter a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnterError {
    /// The module has no current version.
    NotLoaded,
    /// Calls nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The thread is exiting and can no longer hold versions.
    ThreadExiting,
}

#[cold]
#[inline(never)]
fn register() -> Result<*const ThreadRecord, EnterError> {
    membarrier::init();
    let thread = std::thread::current();
    let record = Arc::new(ThreadRecord {
        slots: CachePadded::new(std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut()))),
        info: ThreadInfo {
            name: thread.name().unwrap_or("<unnamed>").to_owned(),
            // SAFETY: gettid has no preconditions.
            tid: unsafe { libc::gettid() },
        },
        process: AtomicU64::new(0),
    });
    let raw = Arc::as_ptr(&record);
    REGISTRATION
        .try_with(|reg| {
            lock(&REGISTRY).push(Arc::clone(&record));
            *reg.borrow_mut() = Some(Registration(record));
        })
        .map_err(|_| EnterError::ThreadExiting)?;
    TOP.with(|top| top.set(raw as usize));
    Ok(raw)
}

/// This thread's [`TOP`] word, registering the thread first if needed.
#[inline(always)]
fn top() -> Result<usize, EnterError> {
    let word = TOP.with(Cell::get);
    if word == 0 { register().map(|record| record as usize) } else { Ok(word) }
}

fn own_record() -> Result<*const ThreadRecord, EnterError> {
    top().map(|word| (word & !DEPTH_MASK) as *const ThreadRecord)
}

/// The slot a [`TOP`] word names: its record's slot at its depth.
///
/// # Safety
/// `word` is this thread's non-zero TOP word with a depth below [`MAX_DEPTH`].
#[inline(always)]
unsafe fn slot_of(word: usize) -> &'static AtomicPtr<VersionCell> {
    let record = (word & !DEPTH_MASK) as *const ThreadRecord;
    // SAFETY: the caller's contract: the record is this thread's own, kept alive by its
    // registration until the thread exits (and a hold never leaves its thread), and the
    // depth is in bounds.
    unsafe { (*record).slots.get_unchecked(word & DEPTH_MASK) }
}

/// Marks the calling thread as running hotcode process `pid` in `holders` reports (0: none).
pub(crate) fn set_current_process(pid: u64) {
    if let Ok(record) = own_record() {
        // SAFETY: the record is owned by this thread's registration, alive until thread exit.
        unsafe { &*record }.process.store(pid, Ordering::Relaxed);
    }
}

// --- Process state pins. ---
//
// A process's state was made by one version of its module, and holds that version for as
// long as the state exists (OTP's check_process_code would say so), between callbacks as
// well as during them. A process is not a thread (the runtime's workers run many), so the
// pin is not in a thread's record but in the shared `PINS` table, one entry per process
// with a state, keyed by a process-wide unique key. Its protocol:
//
// - **pin / move**: made while the process's worker holds the new version in a slot, under
//   `PINS`' lock; the old version (if any) is released through its own slot hold after.
// - **unpin**: the entry is removed under the lock, then the cell's `reap` flag is read; a
//   scan that saw the entry took the lock before the removal, after the purger set the
//   flag, so the flag is seen and the reaper woken.
// - **scan**: after the thread slots, under the lock (see [`scan`]).

/// One process's state pin.
struct Pin {
    /// The process's pid, for `holders` reports.
    pid: u64,
    cell: &'static VersionCell,
}

/// Hashes the runtime's own sequential `u64` keys (pin keys, pids) with one multiply: they
/// are never chosen from outside, so SipHash's flood resistance buys nothing on these
/// tables, which every migration and every process look-up touches.
#[derive(Default, Clone, Copy)]
pub(crate) struct SeqKeyHasher(u64);

impl std::hash::Hasher for SeqKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses for its control bytes,
        // depend on every bit of the key.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by the runtime's sequential `u64` keys (see [`SeqKeyHasher`]).
pub(crate) type SeqKeyMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<SeqKeyHasher>>;

static PINS: Mutex<Option<SeqKeyMap<u64, Pin>>> = Mutex::new(None);
static NEXT_PIN: AtomicU64 = AtomicU64::new(1);

/// A key for one process's state pin, unique in this OS process (pids repeat across nodes).
pub(crate) fn pin_key() -> u64 {
    NEXT_PIN.fetch_add(1, Ordering::Relaxed)
}

/// Pins `hold`'s version as the one the state of process `pid` (pin `key`) belongs to,
/// replacing any earlier pin of that key. The caller must be holding that version (so there
/// is no instant at which neither the hold nor the pin covers it).
pub(crate) fn pin_process(key: u64, pid: u64, hold: &Hold) {
    lock(&PINS).get_or_insert_with(Default::default).insert(key, Pin { pid, cell: hold.cell });
}

/// Drops pin `key` (after its state was dropped), waking the reaper if the pinned version
/// was waiting for it.
pub(crate) fn unpin_process(key: u64) {
    let removed = lock(&PINS).as_mut().and_then(|pins| pins.remove(&key));
    if let Some(pin) = removed
        && pin.cell.reap.load(Ordering::SeqCst)
    {
        crate::code::reaper::on_release(pin.cell);
    }
}

/// Enters `cell`'s version on this thread without checking that it is current. `None` if
/// calls nest too deeply or the thread is exiting.
///
/// # Safety
///
/// `cell`'s version must be kept loaded until the hold is published: a pin of the
/// caller's in the pin table ([`pin_process`]) does that. Without one, the version could be
/// unloaded and its cell reused before the hold counts.
pub(crate) unsafe fn enter_cell(cell: &'static VersionCell) -> Option<Hold> {
    let word = top().ok()?;
    if word & DEPTH_MASK >= MAX_DEPTH {
        return None;
    }
    // SAFETY: this thread's own word, depth below MAX_DEPTH (checked above).
    let slot = unsafe { slot_of(word) };
    // No re-check against `current` is needed: the pin already keeps the version loaded
    // and visible to every scan, and the hold is published before the pin can move.
    slot.store(cell.as_ptr(), Ordering::Relaxed);
    cell.caller_fence();
    TOP.with(|top| top.set(word + 1));
    Some(Hold { word, cell, _not_send: PhantomData })
}

/// A held version: while it lives, the thread is inside `cell`'s version and the version
/// cannot be unloaded. Not `Send`: it describes the thread that made it.
///
/// Two words, so a call keeps little across the plugin call: the thread's [`TOP`] word at
/// entry (which names the slot, and is restored on release) and the cell.
pub(crate) struct Hold {
    word: usize,
    cell: &'static VersionCell,
    _not_send: PhantomData<*const ()>,
}

impl Hold {
    /// The held cell.
    #[inline(always)]
    pub(crate) fn cell(&self) -> &'static VersionCell {
        self.cell
    }

    /// The held version's function table, as `I`.
    ///
    /// # Safety
    /// The held version must export `I` (its layout checked against `I` at load).
    pub(crate) unsafe fn table<I>(&self) -> &I {
        // SAFETY: the caller's contract; the table lives in the library's static memory,
        // which stays mapped at least as long as this hold.
        unsafe { &*(self.cell.table() as *const I) }
    }
}

/// Enters the version `current` points at, holding it until the returned [`Hold`] drops.
///
/// The success path is one TLS read and write, a slot store, a compiler fence and two reads
/// of `current`; registration and every error are out of line.
#[inline(always)]
pub(crate) fn enter(current: &AtomicPtr<VersionCell>) -> Result<Hold, EnterError> {
    let mut word = TOP.with(Cell::get);
    if word == 0 {
        word = register()? as usize;
    }
    if word & DEPTH_MASK >= MAX_DEPTH {
        return Err(too_deep());
    }
    // SAFETY: this thread's own non-zero word, depth below MAX_DEPTH (checked above).
    let slot = unsafe { slot_of(word) };
    loop {
        let cell = current.load(Ordering::Acquire);
        if cell.is_null() {
            return Err(not_loaded());
        }
        // SAFETY: cells are leaked and never freed (type-stable), so the pointer read from
        // `current` is valid for 'static; `current` only ever holds cell pointers.
        let cell: &'static VersionCell = unsafe { &*cell };
        slot.store(cell.as_ptr(), Ordering::Relaxed);
        cell.caller_fence();
        if ptr::eq(current.load(Ordering::Acquire), cell) {
            TOP.with(|top| top.set(word + 1));
            return Ok(Hold { word, cell, _not_send: PhantomData });
        }
        // `current` moved between our read and our publication: back off. A purger may
        // have seen our slot and be waiting for us, so release the same way a call does.
        release(slot, cell);
    }
}

#[cold]
#[inline(never)]
fn too_deep() -> EnterError {
    EnterError::TooDeep
}

#[cold]
#[inline(never)]
fn not_loaded() -> EnterError {
    EnterError::NotLoaded
}

#[inline(always)]
fn release(slot: &AtomicPtr<VersionCell>, cell: &'static VersionCell) {
    slot.store(ptr::null_mut(), Ordering::Release);
    cell.caller_fence();
    if cell.reap.load(Ordering::Relaxed) {
        crate::code::reaper::on_release(cell);
    }
}

impl Drop for Hold {
    #[inline(always)]
    fn drop(&mut self) {
        TOP.with(|top| top.set(self.word));
        // SAFETY: `word` is this thread's TOP word from when the hold was made (a Hold
        // never leaves its thread), with a depth below MAX_DEPTH.
        release(unsafe { slot_of(self.word) }, self.cell);
    }
}

// --- Holds owned by futures. ---
//
// A call that returns a future (`Handle::call_async`) holds the version it entered until
// the future is gone, across await points and threads: not in a thread's slot, but in an
// entry of the process-wide `FUTURES` registry that the future's host-side wrapper owns
// (like a process's pin). Its protocol:
//
// - **hand-over**: the call enters through its thread's slot as usual; while that slot
//   still holds the version, the entry is pushed under `FUTURES`' lock; only then is the
//   slot released. A scan that took the lock before the push still sees the slot (by the
//   fence protocol above); one that took it after sees the entry.
// - **release**: the plugin's future is dropped first (in its version, still held), then
//   the entry is removed under the lock, then the cell's `reap` flag is read: the purger
//   set it before its scan took the lock, so a releaser whose removal followed that scan
//   sees it, and wakes the reaper.
// - **cancel** (a brutal purge): the wrappers holding a purged cell are told to drop their
//   plugin futures now; each then releases as above.

/// The host-side owner of a future hold: what a brutal purge asks to give up.
pub(crate) trait FutureHolder: Send + Sync {
    /// Drops the plugin's future (in its version) and releases the hold; the future's
    /// wrapper then reports the call as purged.
    fn cancel(&self);
}

struct FutureEntry {
    id: u64,
    cell: &'static VersionCell,
    /// The thread that started the call, for `holders` reports.
    started_on: ThreadInfo,
    holder: Weak<dyn FutureHolder>,
}

static FUTURES: Mutex<Vec<FutureEntry>> = Mutex::new(Vec::new());
static NEXT_FUTURE: AtomicU64 = AtomicU64::new(1);

/// A version held by a future: registered while it lives, released when it drops. `Send`:
/// it belongs to a future, not a thread.
pub(crate) struct FutureHold {
    id: u64,
    cell: &'static VersionCell,
}

impl FutureHold {
    /// Hands `hold`'s version over to a future hold owned by `holder`. The caller keeps
    /// `hold` until this returns (see the hand-over above).
    pub(crate) fn take_over(hold: &Hold, holder: Weak<dyn FutureHolder>) -> FutureHold {
        let id = NEXT_FUTURE.fetch_add(1, Ordering::Relaxed);
        let thread = std::thread::current();
        let started_on = ThreadInfo {
            name: thread.name().unwrap_or("<unnamed>").to_owned(),
            // SAFETY: gettid has no preconditions.
            tid: unsafe { libc::gettid() },
        };
        lock(&FUTURES).push(FutureEntry { id, cell: hold.cell, started_on, holder });
        FutureHold { id, cell: hold.cell }
    }
}

impl Drop for FutureHold {
    fn drop(&mut self) {
        {
            let mut futures = lock(&FUTURES);
            if let Some(at) = futures.iter().position(|f| f.id == self.id) {
                futures.swap_remove(at);
            }
        }
        if self.cell.reap.load(Ordering::SeqCst) {
            crate::code::reaper::on_release(self.cell);
        }
    }
}

/// Cancels the futures `ids` (found holding `cell` by a scan) for a brutal purge: each drops its plugin future in
/// its version and releases its hold. Returns how many were cancelled. Must not be called
/// with the reaper's lock held (the last release unloads through it).
pub(crate) fn cancel_futures(cell: &'static VersionCell, ids: &[u64]) -> usize {
    let holders: Vec<Arc<dyn FutureHolder>> = lock(&FUTURES)
        .iter()
        .filter(|f| std::ptr::eq(f.cell, cell) && ids.contains(&f.id))
        .filter_map(|f| f.holder.upgrade())
        .collect();
    for holder in &holders {
        holder.cancel();
    }
    holders.len()
}

/// The thread name of a holder that is a process's state pin, outside any callback.
pub(crate) const BETWEEN_CALLBACKS: &str = "<between callbacks>";

/// One thread (or future) found holding a version.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// Which of the scanned cells it holds (index into the `cells` argument).
    pub(crate) which: usize,
    /// The thread, or for a future the thread that started it.
    pub(crate) thread: ThreadInfo,
    pub(crate) process: Option<u64>,
    /// The future's id, when the holder is an in-flight async call.
    pub(crate) future: Option<u64>,
}

/// Finds every thread holding any of `cells`, after making every earlier publication of
/// the caller visible (see the module docs). Each (thread, cell) pair appears once.
pub(crate) fn scan(cells: &[&'static VersionCell]) -> Vec<Found> {
    membarrier::init();
    membarrier::purger_fence();
    let wanted: Vec<*mut VersionCell> = cells.iter().map(|c| c.as_ptr()).collect();
    let mut found = Vec::new();
    for record in lock(&REGISTRY).iter() {
        for (which, want) in wanted.iter().enumerate() {
            if record.slots.iter().any(|s| s.load(Ordering::Acquire) == *want) {
                found.push(Found {
                    which,
                    thread: record.info().clone(),
                    process: record.process(),
                    future: None,
                });
            }
        }
    }
    let on_threads = found.len();
    if let Some(pins) = lock(&PINS).as_ref() {
        for pin in pins.values() {
            let Some(which) = wanted.iter().position(|w| *w == pin.cell.as_ptr()) else {
                continue;
            };
            // A process inside a callback was found on its worker's thread already.
            if found[..on_threads].iter().any(|f| f.which == which && f.process == Some(pin.pid)) {
                continue;
            }
            found.push(Found {
                which,
                thread: ThreadInfo { name: BETWEEN_CALLBACKS.to_owned(), tid: 0 },
                process: Some(pin.pid),
                future: None,
            });
        }
    }
    for entry in lock(&FUTURES).iter() {
        if let Some(which) = wanted.iter().position(|w| *w == entry.cell.as_ptr()) {
            found.push(Found {
                which,
                thread: entry.started_on.clone(),
                process: None,
                future: Some(entry.id),
            });
        }
    }
    found
}
