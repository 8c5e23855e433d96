//! A plugin's `log` records reach the host's logger: under the target `<module>@<vsn>`, at
//! the host's level (changed at run time too), never formatted when the host would drop
//! them, a panicking host logger kept from unwinding into the plugin, and nothing that
//! keeps the library mapped after it is unloaded.
//!
//! The host's logger and level are process-wide, and the other tests of this binary set
//! theirs (`env_logger`), so the test runs in a child process of this binary with a logger
//! of its own that records what it is given. (`hotcode boot`'s log is checked in `cli.rs`.)

use std::sync::Mutex;

use hotcode::{CodeServer, Purged};
use log::{Level, LevelFilter, Log, Metadata, Record};
use plugin_api::interfaces::Greeter;

use crate::{SoftPurge, fixtures, mapped};

/// Set in the child process of the test below.
const CHILD_ENV: &str = "HOTCODE_TEST_PLUGIN_LOGS_CHILD";

/// One record as the host's logger saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    level: Level,
    target: String,
    message: String,
    module_path: Option<String>,
    file: Option<String>,
}

/// The child's logger: keeps the `chatty` module's records, filters the target
/// `chatty@0::muted` out (as `RUST_LOG=...,chatty@0::muted=off` would), and panics on a
/// message that mentions `boom`.
struct Capture {
    seen: Mutex<Vec<Seen>>,
}

static CAPTURE: Capture = Capture { seen: Mutex::new(Vec::new()) };

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() != "chatty@0::muted"
    }

    fn log(&self, record: &Record<'_>) {
        if !record.target().starts_with("chatty") || !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        assert!(!message.contains("boom"), "the host's logger panics on {message:?}");
        self.seen.lock().unwrap().push(Seen {
            level: record.level(),
            target: record.target().to_owned(),
            message,
            module_path: record.module_path().map(str::to_owned),
            file: record.file().map(str::to_owned),
        });
    }

    fn flush(&self) {}
}

/// The records seen since the last call, as `(level, target, message)`.
fn take() -> Vec<(Level, String, String)> {
    std::mem::take(&mut *CAPTURE.seen.lock().unwrap())
        .into_iter()
        .map(|s| (s.level, s.target, s.message))
        .collect()
}

fn record(level: Level, target: &str, message: &str) -> (Level, String, String) {
    (level, target.to_owned(), message.to_owned())
}

/// The child: everything runs here, with `CAPTURE` as the host's logger.
fn child() {
    log::set_logger(&CAPTURE).expect("the child's only logger");
    log::set_max_level(LevelFilter::Info);
    let server = CodeServer::new().expect("code server");
    server
        .load_object_code("chatty", fixtures::plugin("fixture-chatty"))
        .expect("load_object_code");
    server.load("chatty", SoftPurge, SoftPurge).expect("load");
    let chatty = server.handle::<Greeter>("chatty").expect("handle");
    let greet = |name: &str| chatty.call(|g| g.greet(name.into())).expect("greet");
    let formatted = || chatty.call(|g| g.bump()).expect("bump");

    // At info: the info records, under the module's name and vsn; the crate's own
    // module path and file come along. The debug record and the record the host's logger
    // filters out by target were never formatted.
    assert_eq!(greet("joe"), "logged");
    let seen = CAPTURE.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].module_path.as_deref(), Some("fixture_chatty"));
    assert!(seen[0].file.as_deref().is_some_and(|f| f.ends_with("chatty/src/lib.rs")), "{seen:?}");
    assert_eq!(seen[1].module_path.as_deref(), Some("fixture_chatty::inner"));
    assert_eq!(
        take(),
        [
            record(Level::Info, "chatty@0", "hello, joe"),
            record(Level::Info, "chatty@0::inner", "inner greets joe"),
        ]
    );
    assert_eq!(formatted(), 0, "a record the host drops is never formatted");

    // The host turns debug on after the load: the plugin follows at once.
    log::set_max_level(LevelFilter::Debug);
    greet("ann");
    assert_eq!(
        take(),
        [
            record(Level::Info, "chatty@0", "hello, ann"),
            record(Level::Debug, "chatty@0", "debug detail: tattle"),
            record(Level::Info, "chatty@0::inner", "inner greets ann"),
        ]
    );
    assert_eq!(formatted(), 1, "only the debug record was formatted, the muted one never");

    // And back to info.
    log::set_max_level(LevelFilter::Info);
    greet("bob");
    assert_eq!(take().len(), 2);
    assert_eq!(formatted(), 1);

    // A host logger that panics: the panic stays in the host, the plugin call goes on.
    assert_eq!(greet("boom"), "logged");
    take();
    greet("sue");
    assert_eq!(take()[0], record(Level::Info, "chatty@0", "hello, sue"));

    // Logging left nothing behind that pins the library: it unloads, and the host's logger
    // goes on without it.
    let info = server.status().modules[0].current.clone().expect("current chatty");
    drop(chatty);
    assert_eq!(server.remove("chatty", SoftPurge, SoftPurge).expect("remove"), Purged::Unloaded);
    assert!(!mapped(&info), "chatty left the address space");
    log::info!(target: "chatty-after-unload", "the host still logs");
    assert_eq!(take(), [record(Level::Info, "chatty-after-unload", "the host still logs")]);
}

#[test]
fn a_plugins_log_records_reach_the_host_logger_at_the_host_level() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "plugin_logs::a_plugins_log_records_reach_the_host_logger_at_the_host_level",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        // The child panics in its logger on purpose. With backtraces on, std's symboliser
        // would map the file of every library on the stack, chatty's included, into a cache
        // of its own: chatty would then stay mapped for a reason that is not logging's.
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed: {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}\n{stderr}");
}
