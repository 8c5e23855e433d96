//! The runtime layer: OTP's processes, supervisors, applications and the node (SPEC §4).
//!
//! This layer gives the code layer's versions their OTP meaning: [`process`] (gen_server
//! processes, their mailbox, system messages and state migration between versions),
//! `scheduler` (the worker pool that runs gen_server processes),
//! [`supervisor`] (child specs, restart strategies, shutdown), [`bounded`] (plugin calls
//! with a deadline: the caller stops waiting, the call's thread is abandoned), [`application`] (the
//! application controller, `.app` specs, included applications) and [`node`] (the process
//! table, registered names, monitors, and the tree walk that finds the processes running a
//! module).
//!
//! **May use:** the code layer, and the release layer's file vocabulary (`AppSpec`, read
//! from `.app` files). Never the release handler or the fronts.
//!
//! **Cycles inside the layer, and why they stay:** a node is its process table, and a
//! process reports its own exit to that table (`process` → `node`), while the node starts
//! and stops processes (`node` → `process`). Supervisors and the application controller are
//! processes of that node and call back into it the same way; a gen_server queues itself on
//! the scheduler, whose workers run it (`process` ↔ `scheduler`). These five are one
//! runtime, as ERTS's process table and schedulers are; the rule that keeps the cycle safe is that no
//! lock of the node is held while a process starts or stops (ARCHITECTURE.md).

pub mod application;
pub mod bounded;
pub mod node;
pub mod process;
pub(crate) mod scheduler;
pub mod supervisor;
pub mod tree;
