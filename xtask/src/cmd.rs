//! Running child processes with inherited stdio, echoing each command in a
//! readable form and turning failures into errors that name the command.

use std::env;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

use crate::project;

/// A `cargo` command: the `$CARGO` binary (falling back to `cargo`), run in
/// the workspace root. If `$CARGO_TARGET_DIR` is set, the child gets it as an
/// absolute path so it agrees with [`project::target_dir`].
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(project::root());
    if env::var_os("CARGO_TARGET_DIR").is_some_and(|dir| !dir.is_empty()) {
        cmd.env("CARGO_TARGET_DIR", project::target_dir());
    }
    cmd
}

/// Echoes and runs `cmd` with inherited stdio, returning its exit status.
/// Only a failure to start the process is an error.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    let shown = display(cmd);
    eprintln!("xtask: running: {shown}");
    cmd.status().with_context(|| format!("failed to start `{shown}`"))
}

/// Echoes and runs `cmd` with inherited stdio; a non-zero exit is an error
/// naming the command.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; stderr is inherited so the
/// child's diagnostics reach the user. A non-zero exit is an error naming
/// the command.
pub fn output(cmd: &mut Command) -> Result<Vec<u8>> {
    let shown = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// The exit code to pass on for a child's `status`: its own code, or
/// 128 + signal number if a signal killed it.
pub fn exit_code(status: ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
        }
    }
    ExitCode::FAILURE
}

/// A shell-like rendering of `cmd` for messages: explicitly set environment
/// variables, the program's file name, then the arguments (quoted if needed).
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    let program = Path::new(cmd.get_program()).file_name().unwrap_or(cmd.get_program());
    parts.push(quote(program));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

/// Quotes `arg` in single quotes if it is empty or holds characters a shell
/// would interpret.
fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    let plain =
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c));
    if plain { s.into_owned() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_env_program_and_quoted_args() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.env("HOTCODE_PLUGIN_DIR", "/tmp/t/debug").args([
            "test",
            "--workspace",
            "--",
            "a b",
            "",
        ]);
        assert_eq!(
            display(&cmd),
            "HOTCODE_PLUGIN_DIR=/tmp/t/debug cargo test --workspace -- 'a b' ''"
        );
    }

    #[test]
    fn quote_escapes_single_quotes() {
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
    }

    #[cfg(unix)]
    #[test]
    fn exit_code_passes_through() {
        let status = Command::new("sh").args(["-c", "exit 3"]).status().unwrap();
        assert_eq!(exit_code(status), ExitCode::from(3));
    }
}
