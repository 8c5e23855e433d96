//! hotcode: Erlang/OTP-style hot code upgrades for native Rust.
//!
//! A long-running service loads parts of itself as *modules*: `cdylib` plugins built
//! against [`plugin_api`]. Like OTP's code server, hotcode keeps up to two versions of
//! each module, *current* and *old*. Threads call modules through [`Handle`]s; each call
//! enters the version that is current when it starts and holds it until it returns, so an
//! upgrade never pulls code out from under a running call. Old code is unloaded once no
//! thread holds it, and hotcode checks in `/proc/self/maps` that it really left.
//!
//! ```ignore
//! let server = hotcode::CodeServer::new()?;
//! server.load_object_code("greeter", "lib/greeter-1/greeter.so")?;
//! server.load("greeter", PurgeMethod::SoftPurge, PurgeMethod::SoftPurge)?;
//! let greeter = server.handle::<plugin_api::interfaces::Greeter>("greeter")?;
//! assert_eq!(greeter.call(|g| g.greet("joe".into()))?, "hello, joe");
//!
//! // Upgrade: stage version 2, then make it current. Calls in flight finish in version 1.
//! server.load_object_code("greeter", "lib/greeter-2/greeter.so")?;
//! server.load("greeter", PurgeMethod::SoftPurge, PurgeMethod::SoftPurge)?;
//! ```
//!
//! # The layers
//!
//! The crate is built in layers, each a folder, each allowed to use only the layers below
//! it (an architecture test, `host/tests/it/architecture.rs`, fails on an upward import):
//!
//! 1. [`code`]: loading, holding and unloading module versions: the [`code::loader`] (the
//!    only code that opens and closes libraries), the per-thread hold slots, the
//!    [`CodeServer`] with OTP's current/old slots, and the [`Handle`] call path.
//! 2. [`release`]: OTP's release files (relup, `.appup`, `.app`, `.rel`, RELEASES) read and
//!    written as data. It stands beside the code layer and knows nothing of it.
//! 3. [`runtime`]: processes, supervisors, applications and the [`Node`], on the code layer.
//! 4. [`release_handler`]: moving a running node between releases: check, install,
//!    make_permanent, unpack, remove.
//! 5. [`front`]: the ways in: the control socket, watch mode, the service example. The
//!    `hotcode` binary is a front too (`host/src/cli/`).

pub mod code;
pub mod front;
pub mod release;
pub mod release_handler;
pub mod runtime;

// The fronts' modules at the paths the README has always shown (`hotcode::watch::Watcher`).
#[cfg(feature = "cluster")]
pub use front::cluster;
#[cfg(feature = "cluster")]
pub use front::fleet;
pub use front::{control, scaffold, service, watch};

pub use code::async_call::AsyncCall;
pub use code::code_server::{
    CodeServer, Config, HeldVersion, Holder, ModuleHolders, ModuleStatus, PurgeMethod, Purged,
    Status, VersionInfo,
};
pub use code::error::{ApplyError, CallError, CodeServerError, LoadError, LoadErrorKind};
pub use code::handle::Handle;
pub use code::hold::{MAX_DEPTH, ThreadInfo};
pub use code::reaper::LeakedLibrary;
pub use runtime::application::{AppError, RestartType, RunningApp};
pub use runtime::bounded::{Overrun, Timeouts};
pub use runtime::node::{Abandoned, Monitor, Node, NodeRef, PreflightFailure};
pub use runtime::process::{ChangeMode, Dest, Pid, ProcessError, ProcessInfo, ProcessKind};
pub use runtime::tree::{SupervisionTree, TreeNode};
