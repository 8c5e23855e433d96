//! Fleets (feature `cluster`, SPEC §12): the release operations an etcd cluster's nodes run
//! for a rollout, and the rollout itself.
//!
//! - [`agent`]: on each node booted with `--cluster`, a thread that runs the ops queued
//!   for the node (`hotcode-cluster`'s [`ops`](hotcode_cluster::ops)) through the node's
//!   control socket, as `hotcode ctl` would, and answers each one once.
//! - [`rollout`]: `hotcode fleet install VSN`: the canary, then waves of at most N nodes,
//!   a health gate after each wave, `make_permanent` only for a wave that passed it, and on
//!   failure a rollback or a pause (then `promote`, `abort` or `rollback`). One rollout at
//!   a time per cluster, its record in etcd.
//! - [`gate`]: the health gate: a command, or a `gen_server` call through a node's control
//!   socket.
//!
//! **Architecture Invariant:** this module drives nodes only through etcd and their
//! control sockets: it never reaches into a release handler, so a fleet of separate
//! processes on separate machines behaves as the tests' fleet does.

pub mod agent;
pub mod gate;
pub mod rollout;
