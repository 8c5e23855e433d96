//! `cargo xtask bench [ARGS...]`: builds every plugin in release mode, then runs
//! `cargo bench -p hotcode [ARGS...]` with `HOTCODE_PLUGIN_DIR` pointing at them, and exits
//! with its exit code.
//!
//! The machine-readable summary `target/bench-summary.json` is produced by the
//! benchmarks themselves (the `hotcode` crate's bench targets), not by this
//! subcommand: xtask only drives cargo and passes the arguments through.

use std::process::ExitCode;

use anyhow::Result;

use crate::build;
use crate::cmd;
use crate::project::Profile;
use crate::test::PLUGIN_DIR_VAR;

/// Entry point of the `bench` subcommand; `args` go to `cargo bench` verbatim.
pub fn run(args: &[String]) -> Result<ExitCode> {
    build::build(Profile::Release)?;
    let mut cargo = cmd::cargo();
    cargo
        .args(["bench", "-p", "hotcode"])
        .args(args)
        .env(PLUGIN_DIR_VAR, Profile::Release.out_dir());
    let status = cmd::status(&mut cargo)?;
    Ok(cmd::exit_code(status))
}
