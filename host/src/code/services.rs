//! The host's side of [`HostServices`]: the table every loaded module gets in `on_load`.
//!
//! The table is a `static` of the host and its functions are the host's, so every pointer a
//! plugin keeps into it outlives the plugin. Nothing flows the other way: each function uses
//! what the plugin passed only until it returns. A [`LogRecord`]'s strings become a
//! `log::Record` borrowed for one `log::logger().log` call, given through the builder's
//! borrowing setters (never `module_path_static`/`file_static`), so no logger can keep a
//! pointer into a library that may be unloaded later.
//!
//! Each function is `extern "C"` and called from plugin code: a panic in the host's logger
//! is caught here (and the record dropped) rather than unwind into the plugin's frames,
//! which would abort the node.
//!
//! A plugin asks [`HostServices::max_level`] before anything else, on every record: it is
//! `log::max_level()`, one atomic load, so changing the host's level at run time changes
//! what every loaded plugin logs, without telling them.

use std::panic::{self, AssertUnwindSafe};

use plugin_api::abi_stable::std_types::RStr;
use plugin_api::{FfiFuture, HostServices, LogLevel, LogLevelFilter, LogRecord};

/// The one table, handed to every module version at load.
pub(crate) static HOST_SERVICES: HostServices =
    HostServices { max_level, log_enabled, log: log_record, log_flush, sleep_ms };

/// [`HostServices::sleep_ms`]: a host future on tokio's timer. The tokio `Sleep` is made at
/// the first poll, so on the thread of the runtime that polls it (a plugin never names the
/// runtime); polled outside a tokio runtime it panics in the host's poll, which crosses as
/// [`FfiPoll::Panicked`](plugin_api::FfiPoll::Panicked) and fails the plugin's call.
extern "C" fn sleep_ms(millis: u64) -> FfiFuture<()> {
    FfiFuture::new(async move {
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
    })
}

/// [`HostServices::max_level`]: the host's `log::max_level()`.
extern "C" fn max_level() -> LogLevelFilter {
    // An atomic load cannot panic; caught all the same, like every entry from a plugin.
    panic::catch_unwind(|| LogLevelFilter::from(log::max_level())).unwrap_or(LogLevelFilter::Off)
}

/// [`HostServices::log_enabled`]: whether the host's logger wants this record.
extern "C" fn log_enabled(level: LogLevel, target: RStr<'_>) -> bool {
    panic::catch_unwind(AssertUnwindSafe(|| {
        let level = log::Level::from(level);
        level <= log::max_level()
            && log::logger()
                .enabled(&log::Metadata::builder().level(level).target(target.as_str()).build())
    }))
    .unwrap_or(false)
}

/// [`HostServices::log`]: one record to the host's logger, borrowed for this call only.
extern "C" fn log_record(record: &LogRecord<'_>) {
    let _ = panic::catch_unwind(AssertUnwindSafe(|| {
        let level = log::Level::from(record.level);
        if level > log::max_level() {
            return;
        }
        // One expression: `format_args!` borrows only until the end of the statement.
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(record.target.as_str())
                .args(format_args!("{}", record.message.as_str()))
                .module_path(record.module_path.as_ref().map(|p| p.as_str()).into_option())
                .file(record.file.as_ref().map(|f| f.as_str()).into_option())
                .line(record.line.into_option())
                .build(),
        );
    }));
}

/// [`HostServices::log_flush`]: flushes the host's logger.
extern "C" fn log_flush() {
    let _ = panic::catch_unwind(AssertUnwindSafe(|| log::logger().flush()));
}
