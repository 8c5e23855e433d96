//! The fronts: the ways in from outside the node.
//!
//! `cluster` (feature `cluster`: a node's place in an etcd cluster, for `sync_nodes` and
//! fleets), `fleet` (feature `cluster`: the ops a node runs for its fleet, and rolling
//! upgrades in waves), [`control`] (the control socket between `hotcode boot` and `hotcode ctl`), [`watch`]
//! (the developer loop: reload a module whenever its library is rebuilt), [`scaffold`]
//! (`hotcode new`: a service to start from) and [`service`] (the service example's TCP
//! front end and its load generator). The `hotcode` binary
//! (`host/src/cli/`) is a front too, as a crate of its own.
//!
//! **May use:** every layer below: the release handler, the runtime, the code layer and the
//! release files. Nothing below imports a front.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod control;
#[cfg(feature = "cluster")]
pub mod fleet;
pub mod scaffold;
pub mod service;
pub mod watch;
