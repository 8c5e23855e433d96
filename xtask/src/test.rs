//! `cargo xtask test [ARGS...]`: makes sure etcd and protoc are installed
//! ([`tools`](crate::tools)), builds every plugin (debug), then runs
//! `cargo test --workspace --features hotcode/cluster [ARGS...]` with
//! `HOTCODE_PLUGIN_DIR` set to the absolute path of `target/debug`, so the tests
//! load the prebuilt plugins instead of rebuilding them, and the cluster tests
//! (each starts and stops a private etcd on loopback) run too. Exits with cargo
//! test's exit code.

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
    crate::tools::ensure_cluster_tools()?;
    build::build(Profile::Debug)?;
    let mut cargo = cmd::cargo();
    cargo
        .args(["test", "--workspace", "--features", "hotcode/cluster"])
        .args(args)
        .env(PLUGIN_DIR_VAR, Profile::Debug.out_dir());
    let status = cmd::status(&mut cargo)?;
    Ok(cmd::exit_code(status))
}
