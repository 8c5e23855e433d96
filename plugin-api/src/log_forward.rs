//! The plugin side of logging: the logger a plugin's own `log` crate forwards to the host.
//!
//! A `cdylib` links its own copy of the `log` crate, with its own logger and max-level
//! statics, which the host's `log::set_logger` never reaches. So `on_load` sets this copy's
//! logger, once, to [`Forward`], which hands records to the host through its
//! [`HostServices`] table. The plugin's own `log::max_level()` is left at the most verbose
//! level its build allows; the host's level is asked per record instead
//! ([`HostServices::max_level`], one atomic load on the host side), so a plugin follows the
//! host's level even when the host changes it after the load. For each record the forwarder:
//!
//! 1. drops it if the host's max level does (no work done at all);
//! 2. builds the host-side target and asks the host's logger whether it wants the record
//!    ([`HostServices::log_enabled`]: per-target filters such as `RUST_LOG=ch3=debug`);
//! 3. only then formats the message (a record the host would drop is never formatted), and
//!    hands it over ([`HostServices::log`]).
//!
//! The target the host sees is the module's name and vsn, `<module>@<vsn>` (e.g. `ch3@1`),
//! followed by the rest of the plugin's own target: a record from the crate's root module
//! gets `ch3@1`, one from its module `state` gets `ch3@1::state` (the crate name, which
//! carries the package's version suffix, is dropped), and one with an explicit
//! `target: "audit"` gets `ch3@1::audit`. A host filter on `ch3` thus matches every version
//! of the module, one on `ch3@2` a single version.
//!
//! Nothing here registers a thread-local destructor (the invariant of
//! [`export`](crate::export)): the forwarder is a `static` behind a `OnceLock`, and a
//! message is formatted into a plain `String`, freed by the plugin before the call returns.

use std::borrow::Cow;
use std::sync::OnceLock;

use abi_stable::std_types::RStr;

use crate::services::{HostServices, LogLevel, LogRecord};

/// The logger a plugin's `log` crate calls: forwards to the host's table.
struct Forward {
    /// The host's services; the host's statics, which outlive this plugin.
    host: &'static HostServices,
    /// `<module>@<vsn>`: the host-side target of the crate's root module.
    prefix: &'static str,
    /// The plugin crate's name (the first segment of its module paths), e.g. `ch3_v1`.
    crate_name: &'static str,
}

/// This plugin's one forwarder (each loaded copy of a plugin has its own statics).
static FORWARD: OnceLock<Forward> = OnceLock::new();

/// Sets this plugin's `log` logger to the forwarder, once per loaded copy.
///
/// `prefix` is `<module>@<vsn>`; `module_path` is any module path of the plugin crate (the
/// `export_module!` site's), of which only the crate name is kept.
pub(crate) fn install(
    host: &'static HostServices,
    prefix: &'static str,
    module_path: &'static str,
) {
    let crate_name = module_path.split("::").next().unwrap_or(module_path);
    let forward = FORWARD.get_or_init(|| Forward { host, prefix, crate_name });
    // Fails only if this copy's logger is already set (a second `on_load`): keep that one.
    if log::set_logger(forward).is_ok() {
        log::set_max_level(log::STATIC_MAX_LEVEL);
    }
}

impl Forward {
    /// Whether the host's max level, right now, lets a record of `level` through.
    fn level_passes(&self, level: LogLevel) -> bool {
        (self.host.max_level)().allows(level)
    }

    /// The host-side target of a record whose plugin-side target is `target`.
    fn target<'a>(&self, target: &'a str) -> Cow<'a, str> {
        if target == self.crate_name {
            return Cow::Borrowed(self.prefix);
        }
        match target.strip_prefix(self.crate_name) {
            Some(rest) if rest.starts_with("::") => Cow::Owned(format!("{}{rest}", self.prefix)),
            _ => Cow::Owned(format!("{}::{target}", self.prefix)),
        }
    }
}

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let level = LogLevel::from(metadata.level());
        if !self.level_passes(level) {
            return false;
        }
        let target = self.target(metadata.target());
        (self.host.log_enabled)(level, RStr::from_str(&target))
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = LogLevel::from(record.level());
        if !self.level_passes(level) {
            return;
        }
        let target = self.target(record.target());
        if !(self.host.log_enabled)(level, RStr::from_str(&target)) {
            return;
        }
        // Formatting runs the plugin's `Display` impls: only for records the host keeps.
        let message: Cow<'_, str> = match record.args().as_str() {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(record.args().to_string()),
        };
        let record = LogRecord {
            level,
            target: RStr::from_str(&target),
            message: RStr::from_str(&message),
            module_path: record.module_path().map(RStr::from_str).into(),
            file: record.file().map(RStr::from_str).into(),
            line: record.line().into(),
        };
        (self.host.log)(&record);
    }

    fn flush(&self) {
        (self.host.log_flush)();
    }
}
