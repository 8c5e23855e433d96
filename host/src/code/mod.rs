//! The code layer: loading, holding and unloading module versions (SPEC §2, §3).
//!
//! This layer owns everything between a `.so` file on disk and a call into it: the
//! [`loader`] (the only code that opens and closes libraries, with the ELF, layout and
//! integrity checks), `scratch` (the private directory of the copies the loader maps, and
//! cleaning up what dead processes left), [`elf`] (inspecting a file without loading it),
//! [`maps`] (is a library really gone from `/proc/self/maps`?), `membarrier` (the asymmetric fence), `hold` (the
//! per-thread hold slots and the scan), `version` (a loaded version's host-owned metadata),
//! `reaper` (unloading retired versions once their last holder leaves), [`code_server`]
//! (OTP's current and old slots: load, remove, purge, soft_purge, holders), [`handle`]
//! (the call path), [`async_call`] (the future of an async call, which owns its hold on
//! the version) and `services` (the table of host functions every loaded module gets,
//! through which plugin log records reach the host's logger and plugins await the host's
//! timer).
//!
//! **May use:** nothing else in this crate. Processes, releases and the fronts are built on
//! top of it; it knows none of them.
//!
//! **Cycles inside the layer, and why they stay:** `hold` and `reaper` call each other
//! because the last holder of a retired version unloads it as it leaves (`hold` →
//! `reaper::on_release`), while the reaper decides by scanning the slots (`reaper` →
//! `hold::scan`); splitting them would put the hand-over between "released" and "unloaded"
//! behind an indirection on the call path. `code_server` and `handle` know each other
//! because a handle is a typed view of one code-server entry. `error` names `Holder`, the
//! code server's answer to "who holds it", in `old_processes` errors.

pub mod async_call;
pub mod code_server;
pub mod elf;
pub mod error;
pub mod handle;
pub(crate) mod hold;
pub mod loader;
pub mod maps;
mod membarrier;
pub(crate) mod reaper;
mod scratch;
mod services;
pub mod trust;
pub(crate) mod version;
