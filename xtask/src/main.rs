//! `cargo xtask`: project automation for hotcode.
//!
//! This is a plain binary crate following the cargo-xtask pattern: the
//! workspace alias `cargo xtask` (see `.cargo/config.toml`) runs it, and each
//! subcommand lives in its own module. Run `cargo xtask help` for the list.
//!
//! Plugins are discovered from `cargo metadata`: every workspace package with
//! a `[package.metadata.hotcode]` table (see [`plugins`]).

mod bench;
mod build;
mod cmd;
mod demo;
mod dist;
mod examples;
mod plugins;
mod project;
mod test;
mod tools;
mod watch;

use std::fmt;
use std::process::ExitCode;

/// Usage text printed by `cargo xtask help` and on argument errors.
pub const USAGE: &str = "\
cargo xtask: project automation for hotcode

USAGE:
    cargo xtask <COMMAND> [ARGS...]

COMMANDS:
    build [--release]   Build every plugin crate (fixtures included) with one `cargo build`
    dist                Release-build the plugins, assemble target/dist/lib/<app>-<vsn>/ and the
                        example release roots target/dist/<root>/ listed in relups/examples.txt
    test [ARGS...]      Install etcd and protoc if missing (as root, apt-get), build the
                        plugins (debug), then `cargo test --workspace --features
                        hotcode/cluster [ARGS...]` with HOTCODE_PLUGIN_DIR pointing at the
                        prebuilt plugins
    demo [ARGS...]      Run `dist`, then the hotcode `demo` example against target/dist
    bench [ARGS...]     Run the benchmarks (`cargo bench -p hotcode --features cluster [ARGS...]`), write
                        target/bench-summary.json and print it against the targets
    watch PLUGIN        Rebuild plugin package PLUGIN (debug) whenever a file in its src/
                        changes, until Ctrl-C; pair it with `hotcode watch target/debug ...`
    help                Print this message

Plugins are the workspace packages with a [package.metadata.hotcode] table
(module, app, vsn, and optionally fixture = true for test-only plugins).

ENVIRONMENT:
    CARGO               cargo binary to use (default: `cargo`)
    CARGO_TARGET_DIR    target directory (default: <workspace>/target)

The workspace is the checkout `cargo xtask` runs in (or, run by hand, the one
holding the current directory), found at run time: a copy of a checkout that
kept its target/ builds and runs in the copy.

EXAMPLES:
    cargo xtask build --release
    cargo xtask test -- --nocapture
    cargo xtask watch greeter-v1
";

/// An error in the command line itself: reported with the usage text and
/// exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Fails with a [`UsageError`] if `args` is not empty; `cmd` names the
/// subcommand in the message.
pub fn no_args(cmd: &str, args: &[String]) -> anyhow::Result<()> {
    match args.first() {
        None => Ok(()),
        Some(arg) => Err(UsageError(format!("`{cmd}` takes no arguments (got `{arg}`)")).into()),
    }
}

/// Returns true if `args` is exactly a request for help.
pub fn wants_help(args: &[String]) -> bool {
    matches!(args, [a] if a == "-h" || a == "--help")
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            if let Some(usage) = err.downcast_ref::<UsageError>() {
                eprintln!("xtask: error: {usage}\n");
                eprint!("{USAGE}");
                return ExitCode::from(2);
            }
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line and dispatches to the subcommand.
fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    if matches!(cmd.as_str(), "help" | "-h" | "--help") {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    // The checkout this run is about, found now: never the one xtask was built in.
    project::init()?;
    match cmd.as_str() {
        "build" => build::run(rest),
        "dist" => dist::run(rest),
        "test" => test::run(rest),
        "demo" => demo::run(rest),
        "bench" => bench::run(rest),
        "watch" => watch::run(rest),
        other => Err(UsageError(format!("unknown subcommand `{other}`")).into()),
    }
}
