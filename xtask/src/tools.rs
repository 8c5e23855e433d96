//! The system tools behind the cluster feature (SPEC §12), made present before they are
//! needed: `etcd` (Debian `etcd-server`), which the cluster tests and the demo start on
//! loopback, and `protoc` (Debian `protobuf-compiler`), which `etcd-client` needs at build
//! time. Missing ones are installed with apt-get when xtask runs as root on Debian;
//! otherwise xtask stops and prints the exact command to run. Never skipped silently.
//!
//! Also Erlang/OTP's `escript` (Debian `erlang-base`), which `cargo xtask bench` uses to
//! measure OTP side by side with hotcode: installed the same way when missing, and when it
//! can't be, the bench goes on and says plainly that the OTP figures were not measured.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;

/// Each tool: the binary, the variable that may name it instead, the Debian package.
const TOOLS: &[(&str, &str, &str)] =
    &[("etcd", "ETCD", "etcd-server"), ("protoc", "PROTOC", "protobuf-compiler")];

fn present(binary: &str, var: &str) -> bool {
    if let Some(path) = std::env::var_os(var) {
        return Path::new(&path).is_file();
    }
    on_path(binary)
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(binary).is_file()))
}

/// Whether this process runs as root (the effective uid in `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn missing() -> Vec<&'static str> {
    TOOLS.iter().filter(|(bin, var, _)| !present(bin, var)).map(|(_, _, pkg)| *pkg).collect()
}

/// `escript` to run the OTP side of the benchmarks: `$ESCRIPT` if set, else on `PATH`,
/// else installed from Debian's `erlang-base` when xtask runs as root with apt-get.
/// `Err` carries why it is not there (for the bench to print: the OTP keys are then not
/// measured), never a silent skip.
pub fn escript() -> std::result::Result<std::path::PathBuf, String> {
    let found = || {
        if let Some(path) = std::env::var_os("ESCRIPT") {
            let path = std::path::PathBuf::from(path);
            return path.is_file().then_some(path);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|d| d.join("escript")).find(|p| p.is_file())
        })
    };
    if let Some(path) = found() {
        return Ok(path);
    }
    let how = "install Erlang/OTP (Debian: `sudo apt-get install -y erlang-base`) or name \
               its escript with ESCRIPT=";
    if std::env::var_os("ESCRIPT").is_some() {
        return Err(format!("$ESCRIPT names no file; {how}"));
    }
    if !is_root() || !on_path("apt-get") {
        return Err(format!("no `escript` on PATH; {how}"));
    }
    eprintln!("xtask: installing erlang-base (apt-get, as root): the bench compares with OTP");
    let install = || {
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "--no-install-recommends", "erlang-base"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd::status(&mut apt).is_ok_and(|s| s.success())
    };
    if !install() {
        let mut update = Command::new("apt-get");
        update.arg("update").env("DEBIAN_FRONTEND", "noninteractive");
        let updated = cmd::status(&mut update).is_ok_and(|s| s.success());
        if !updated || !install() {
            return Err(format!("`apt-get install -y erlang-base` failed; {how}"));
        }
    }
    found().ok_or_else(|| format!("no `escript` on PATH after installing erlang-base; {how}"))
}

/// Makes sure etcd and protoc are there, installing them as root on Debian.
pub fn ensure_cluster_tools() -> Result<()> {
    let packages = missing();
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !is_root() || !on_path("apt-get") {
        bail!(
            "the cluster tests and demo need {list} (etcd, protoc); install them and run this \
             again:\n    sudo apt-get update && sudo apt-get install -y {list}\n(elsewhere than \
             Debian: install etcd 3.4+ and protoc, or name them with ETCD= and PROTOC=)"
        );
    }
    eprintln!("xtask: installing {list} (apt-get, as root): the cluster feature needs them");
    let install = || {
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd::status(&mut apt).map(|s| s.success())
    };
    if !install()? {
        // A fresh machine's package lists may be empty or stale.
        let mut update = Command::new("apt-get");
        update.arg("update").env("DEBIAN_FRONTEND", "noninteractive");
        cmd::run(&mut update)?;
        if !install()? {
            bail!("`apt-get install -y {list}` failed; run it by hand to see why");
        }
    }
    let still = missing();
    if !still.is_empty() {
        bail!("{} still missing after apt-get install", still.join(" "));
    }
    Ok(())
}
