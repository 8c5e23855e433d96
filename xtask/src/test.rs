//! `cargo xtask test [ARGS...]`: builds every plugin (debug), then runs
//! `cargo test --workspace [ARGS...]` with `HOTCODE_PLUGIN_DIR` set to the
//! absolute path of `target/debug`, so the tests load the prebuilt plugins
//! instead of rebuilding them. Exits with cargo test's exit code.

use std::process::ExitCode;

use anyhow::Result;

use crate::build;
use crate::cmd;
use crate::project::Profile;

/// The environment variable that tells the tests where the built plugins are.
pub const PLUGIN_DIR_VAR: &str = "HOTCODE_PLUGIN_DIR";

/// Entry point of the `test` subcommand; `args` go to `cargo test` verbatim
/// (e.g. `-- --nocapture`).
pub fn run(args: &[String]) -> Result<ExitCode> {
    build::build(Profile::Debug)?;
    let mut cargo = cmd::cargo();
    cargo.args(["test", "--workspace"]).args(args).env(PLUGIN_DIR_VAR, Profile::Debug.out_dir());
    let status = cmd::status(&mut cargo)?;
    Ok(cmd::exit_code(status))
}
