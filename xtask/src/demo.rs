//! `cargo xtask demo [ARGS...]`: makes sure etcd and protoc are installed
//! ([`tools`](crate::tools)), runs `dist`, then `cargo run --release --quiet -p hotcode
//! --features cluster --example demo -- <target/dist> [ARGS...]` (the dist path is
//! absolute; the demo's fleet part starts a private etcd on loopback and stops it), then
//! the axum example service on the `web` plugins of `<target/dist>/lib` (`--example
//! axum_service`), and exits with the first failing exit code.

use std::process::ExitCode;

use anyhow::Result;

use crate::{cmd, dist};

/// Entry point of the `demo` subcommand; `args` are passed to the demo after
/// the dist path.
pub fn run(args: &[String]) -> Result<ExitCode> {
    crate::tools::ensure_cluster_tools()?;
    let dist_dir = dist::dist()?;
    let mut cargo = cmd::cargo();
    cargo
        .args(["run", "--release", "--quiet", "-p", "hotcode", "--features", "cluster"])
        .args(["--example", "demo", "--"])
        .arg(&dist_dir)
        .args(args);
    let status = cmd::status(&mut cargo)?;
    if !status.success() {
        return Ok(cmd::exit_code(status));
    }
    println!("\n== the axum service: async plugin handlers upgraded under HTTP load ==");
    let lib = dist_dir.join("lib");
    let mut cargo = cmd::cargo();
    cargo
        .args(["run", "--release", "--quiet", "-p", "hotcode", "--example", "axum_service", "--"])
        .arg(lib.join("web-1").join("web_routes.so"))
        .arg(lib.join("web-2").join("web_routes.so"));
    let status = cmd::status(&mut cargo)?;
    Ok(cmd::exit_code(status))
}
