//! The one stable boundary between the hotcode host and its plugins.
//!
//! A hotcode plugin is a `cdylib` that exports one module: a name, a version string, a
//! behaviour and a function table, described by a [`ModuleDescriptor`] behind the one
//! exported symbol [`MODULE_SYMBOL`]. The host loads each version of a module from its own
//! copy of the file, checks the descriptor before it trusts it, and calls the table through
//! versioned handles. This crate is everything both sides must agree on, and nothing else:
//!
//! - [`abi`]: the frozen header, the descriptor, and the error type that crosses calls;
//! - [`interface!`]: declare a typed interface (table + safe host methods + plugin trait);
//! - [`export_module!`]: the one macro a plugin author writes;
//! - [`term`]: [`Term`], the version-independent value that carries state and messages;
//! - [`behaviour`]: gen_server, supervisor and application callbacks (OTP behaviours);
//! - [`callback`]: lending a host closure to a plugin for the length of one call;
//! - [`services`]: what the host lends every plugin at load ([`HostServices`]), through
//!   which a plugin's [`log`] records reach the host's logger.
//!
//! Architecture invariant: this crate knows nothing of the host. It has no loader, no
//! threads and no global state besides the plugin's panic hook and its log forwarder (which
//! keeps the host's [`HostServices`] reference, never the other way round).
//!
//! A plugin depends on this crate only, and needs no `unsafe` of its own:
//!
//! ```ignore
//! use plugin_api::abi_stable::std_types::{RStr, RString};
//! use plugin_api::interfaces::{Greeter, GreeterImpl};
//!
//! struct V1;
//! impl GreeterImpl for V1 {
//!     fn greet(name: RStr<'_>) -> RString {
//!         plugin_api::log::debug!("greeting {name}"); // the host's log, target `greeter@1`
//!         format!("hello, {name}").into()
//!     }
//!     // ...
//! }
//!
//! plugin_api::export_module! { name: "greeter", vsn: "1", library: Greeter = V1 }
//! ```

pub mod abi;
pub mod behaviour;
pub mod callback;
pub mod export;
pub mod future;
pub mod interface;
pub mod interfaces;
mod log_forward;
pub mod services;
pub mod term;

pub use abi::{
    ABI_VERSION, APPLY_SYMBOL_PREFIX, Behaviour, ExportedFn, InterfaceExport, MAGIC, MODULE_SYMBOL,
    ModuleDescriptor, ModuleHeader, PANIC_UNWIND_SYMBOL, PanicStrategy, PluginError,
    PluginErrorKind, RPluginError, TablePtr,
};
pub use callback::Callback;
pub use export::__private;
pub use future::{FfiFuture, FfiPoll, FfiWaker};
pub use interface::{Interface, IntoHost};
pub use services::{HostServices, LogLevel, LogLevelFilter, LogRecord};
pub use term::{RTerm, RTermRef, Term};

/// The abi_stable crate this boundary is built on, for plugins that need its types.
pub use abi_stable;

/// The `log` crate: a plugin logs with `plugin_api::log::info!(...)` and friends, and the
/// records reach the host's logger (see [`export_module!`]'s docs).
pub use log;
