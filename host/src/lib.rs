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
//! The pieces, bottom up: [`loader`] (the only code that opens and closes libraries),
//! [`maps`] (is it gone?), `hold` (per-thread hold slots and the membarrier protocol),
//! `reaper` (unloading retired versions when their last holder leaves), [`code_server`]
//! (current/old slots and OTP's load/remove/purge), [`handle`] (the call path).

pub mod application;
pub mod code_server;
pub mod control;
pub mod elf;
pub mod error;
pub mod handle;
mod hold;
pub mod loader;
pub mod maps;
mod membarrier;
pub mod node;
pub mod process;
mod reaper;
pub mod release;
pub mod release_handler;
pub mod service;
pub mod supervisor;
mod version;
pub mod watch;

pub use application::{AppError, RestartType, RunningApp};
pub use code_server::{
    CodeServer, Config, HeldVersion, Holder, ModuleHolders, ModuleStatus, PurgeMethod, Purged,
    Status, VersionInfo,
};
pub use error::{ApplyError, CallError, CodeServerError, LoadError, LoadErrorKind};
pub use handle::Handle;
pub use hold::{MAX_DEPTH, ThreadInfo};
pub use node::{Abandoned, Monitor, Node, NodeRef};
pub use process::{ChangeMode, Dest, Pid, ProcessError, ProcessInfo, ProcessKind};
pub use reaper::LeakedLibrary;
