//! The health gate between waves: is an upgraded node healthy?
//!
//! Either a command (`sh -c CMD`, exit 0 is healthy) run with the node's name in
//! `HOTCODE_NODE`, its root in `HOTCODE_ROOT` and its control socket in `HOTCODE_SOCKET`
//! (when the node published its root) and the release in `HOTCODE_VSN`; or a `gen_server`
//! call through the node's control socket (`ctl ROOT call NAME REQUEST`), healthy if it
//! answers. Both are bounded by the time left to the wave's progress deadline: a command
//! that overruns is killed and counts as a failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::front::control;

/// A health gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Health {
    /// `sh -c COMMAND`; exit 0 is healthy.
    Command {
        /// The command line.
        command: String,
    },
    /// `gen_server:call(NAME, REQUEST)` through the node's control socket; any reply is
    /// healthy, noproc or a timeout is not.
    Call {
        /// The registered name (or pid).
        name: String,
        /// The request, one Erlang term.
        request: String,
    },
}

impl Health {
    /// `NAME:REQUEST`, as `--health-call` takes it.
    pub fn parse_call(text: &str) -> Result<Health, String> {
        match text.split_once(':') {
            Some((name, request)) if !name.is_empty() && !request.is_empty() => {
                Ok(Health::Call { name: name.to_owned(), request: request.to_owned() })
            }
            _ => Err(format!("`{text}` is not NAME:REQUEST (e.g. svc_handler:ping)")),
        }
    }

    /// Checks `node` (whose root is `root`, if it published one) for release `vsn`,
    /// until `deadline` at the latest: `Ok` if healthy, else why not.
    pub fn check(
        &self,
        node: &str,
        root: Option<&Path>,
        vsn: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no time left before the progress deadline".to_owned());
        }
        match self {
            Health::Command { command } => run_command(command, node, root, vsn, left),
            Health::Call { name, request } => {
                let Some(root) = root else {
                    return Err(format!("node {node} published no root: no socket to call"));
                };
                // `ctl call` takes at most 60 s.
                let ms = left.as_millis().clamp(1, 60_000).to_string();
                let fields = ["call", name, request, &ms].map(str::to_owned);
                // The socket too is bounded by the deadline: a stopped node cannot hold
                // the rollout (and its lock) past it.
                match control::request_until(root, &fields, deadline) {
                    Ok((_, 0)) => Ok(()),
                    Ok((lines, code)) => {
                        Err(format!("call {name} {request}: {} (exit {code})", lines.join(" ")))
                    }
                    Err(e) => Err(format!("call {name} {request}: {e}")),
                }
            }
        }
    }
}

fn run_command(
    command: &str,
    node: &str,
    root: Option<&Path>,
    vsn: &str,
    left: Duration,
) -> Result<(), String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).env("HOTCODE_NODE", node).env("HOTCODE_VSN", vsn);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    if let Some(root) = root {
        cmd.env("HOTCODE_ROOT", root).env("HOTCODE_SOCKET", control::socket_path(root));
    }
    // Its own process group, so that the whole command (the shell and what it started) is
    // killed at the deadline, and nothing it started keeps our output pipes open.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("starting `sh -c {command}`: {e}"))?;
    let started = Instant::now();
    // A child process has no waitable handle with a timeout in std: look at it every
    // 10 ms, and kill it at the deadline.
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("`{command}` failed ({status})")),
            Ok(None) if started.elapsed() >= left => {
                if let Ok(group) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) touches no memory of ours. The child is not reaped
                    // yet, so its pid, which is its process group's id, is still its own.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{command}` still ran at the progress deadline ({left:.1?}): killed"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for `{command}`: {e}")),
        }
    }
}
