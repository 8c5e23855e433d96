//! What the host lends every plugin: the [`HostServices`] table, and the log records that
//! cross it.
//!
//! The host hands each loaded module a `&'static HostServices` in the descriptor's
//! `on_load` call. The table lives in the host's own image and its functions are the host's,
//! so they outlive every plugin; a plugin may keep the reference for as long as it is loaded.
//! The other direction never happens: nothing that crosses this table is kept by the host
//! after the call returns. A [`LogRecord`]'s strings are the plugin's, borrowed for the
//! length of one [`HostServices::log`] call, and the host's logger sees them as a
//! `log::Record` whose lifetime ends with that call (never through its `'static` accessors).
//!
//! The table is part of [`ModuleDescriptor`](crate::ModuleDescriptor)'s layout (its
//! `on_load` takes a reference to it), so the loader's layout check covers it: a plugin
//! built against another table is refused before `on_load` runs. Like the descriptor, it is a
//! plain `#[repr(C)]` struct, not one of abi_stable's prefix types; a new service is an
//! [`ABI_VERSION`](crate::ABI_VERSION) bump.
//!
//! Logging, as a plugin sees it: `plugin_api::log::info!(...)` (or the `log` crate's macros
//! through any path) in plugin code reaches the host's logger. Each plugin has its own copy of
//! the `log` crate and its statics; `on_load` sets that copy's logger to one that forwards
//! to this table (see the `__private` runtime of [`export_module!`](crate::export_module)).

use abi_stable::StableAbi;
use abi_stable::std_types::{ROption, RStr};

/// A log record's level; the same order and numbers as `log::Level` (`Error` = 1 is the
/// most severe).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `log::Level::Error`.
    Error = 1,
    /// `log::Level::Warn`.
    Warn = 2,
    /// `log::Level::Info`.
    Info = 3,
    /// `log::Level::Debug`.
    Debug = 4,
    /// `log::Level::Trace`.
    Trace = 5,
}

impl From<log::Level> for LogLevel {
    fn from(level: log::Level) -> LogLevel {
        match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        }
    }
}

impl From<LogLevel> for log::Level {
    fn from(level: LogLevel) -> log::Level {
        match level {
            LogLevel::Error => log::Level::Error,
            LogLevel::Warn => log::Level::Warn,
            LogLevel::Info => log::Level::Info,
            LogLevel::Debug => log::Level::Debug,
            LogLevel::Trace => log::Level::Trace,
        }
    }
}

/// The most verbose level the host keeps; the same order and numbers as `log::LevelFilter`
/// (`Off` = 0 keeps nothing).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevelFilter {
    /// `log::LevelFilter::Off`: no record is kept.
    Off = 0,
    /// `log::LevelFilter::Error`.
    Error = 1,
    /// `log::LevelFilter::Warn`.
    Warn = 2,
    /// `log::LevelFilter::Info`.
    Info = 3,
    /// `log::LevelFilter::Debug`.
    Debug = 4,
    /// `log::LevelFilter::Trace`: every record passes this check.
    Trace = 5,
}

impl LogLevelFilter {
    /// Whether a record of `level` passes this filter.
    pub fn allows(self, level: LogLevel) -> bool {
        level as u8 <= self as u8
    }
}

impl From<log::LevelFilter> for LogLevelFilter {
    fn from(filter: log::LevelFilter) -> LogLevelFilter {
        match filter {
            log::LevelFilter::Off => LogLevelFilter::Off,
            log::LevelFilter::Error => LogLevelFilter::Error,
            log::LevelFilter::Warn => LogLevelFilter::Warn,
            log::LevelFilter::Info => LogLevelFilter::Info,
            log::LevelFilter::Debug => LogLevelFilter::Debug,
            log::LevelFilter::Trace => LogLevelFilter::Trace,
        }
    }
}

/// One log record from a plugin, formatted, borrowed for one [`HostServices::log`] call.
#[repr(C)]
#[derive(StableAbi)]
pub struct LogRecord<'a> {
    /// The record's level.
    pub level: LogLevel,
    /// The record's target as the host shows it: `<module>@<vsn>`, then the rest of the
    /// plugin's own target (see [`export_module!`](crate::export_module)'s docs).
    pub target: RStr<'a>,
    /// The formatted message.
    pub message: RStr<'a>,
    /// The Rust module path of the plugin code that logged, if known (e.g. `ch3_v1::state`).
    pub module_path: ROption<RStr<'a>>,
    /// The source file of the plugin code that logged, if known.
    pub file: ROption<RStr<'a>>,
    /// The source line, if known.
    pub line: ROption<u32>,
}

/// The functions the host lends every plugin, passed to the descriptor's `on_load`.
///
/// Every function is the host's, catches any panic of the host's logger before it could
/// unwind into the plugin, and keeps nothing it was given after it returns.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostServices {
    /// The host's maximum log level right now (`log::max_level()` on the host side): one
    /// atomic load, asked before a plugin does any work for a record, so that a plugin follows
    /// the host's level even when the host changes it after the plugin was loaded.
    pub max_level: extern "C" fn() -> LogLevelFilter,
    /// Whether the host's logger would keep a record of this level and target (the host's
    /// `log::logger().enabled(..)`, behind its max level). A plugin asks before it formats a
    /// record's message.
    pub log_enabled: extern "C" fn(level: LogLevel, target: RStr<'_>) -> bool,
    /// Hands one formatted record to the host's logger.
    pub log: extern "C" fn(record: &LogRecord<'_>),
    /// Flushes the host's logger.
    pub log_flush: extern "C" fn(),
    /// A future, made and polled by the host on its own runtime, that completes after
    /// `millis` milliseconds (what [`sleep`](crate::future::sleep) awaits). The plugin polls
    /// it under the waker the host lent and drops it through its own table.
    pub sleep_ms: extern "C" fn(millis: u64) -> crate::future::FfiFuture<()>,
}
