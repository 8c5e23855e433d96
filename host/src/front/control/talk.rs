//! The requests that talk to a node's processes, as OTP's remote shell would:
//! `whereis`, `call` and `cast`. A destination is a registered name or a pid written
//! `<0.N.0>`; a request or message is one term in Erlang syntax (a final `.` optional),
//! read with the release files' term reader; a reply is printed in Erlang syntax.

use std::path::Path;
use std::time::Duration;

use plugin_api::Term;

use crate::release::terms::parse_single_term;
use crate::release_handler::ReleaseHandler;
use crate::runtime::process::{Dest, Pid, ProcessError};

use super::wire::{EXIT_REFUSED, EXIT_USAGE, Reply};

/// `gen_server:call`'s default timeout.
pub(super) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(5000);

/// The longest call timeout taken: a minute. A call holds a connection, and a stopping
/// node waits for the calls in flight (under systemd's default 90 s stop timeout).
pub(super) const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `whereis NAME`: the pid, or `undefined` (exit 1).
pub(super) fn whereis(handler: &ReleaseHandler, name: &str) -> Reply {
    match handler.node().whereis(name) {
        Some(pid) => Reply::ok(vec![pid.to_string()]),
        None => Reply::err(EXIT_REFUSED, format!("undefined: no process is registered as {name}")),
    }
}

/// `call DEST REQUEST [TIMEOUT_MS]`.
pub(super) fn call(
    handler: &ReleaseHandler,
    dest: &str,
    request: &str,
    timeout_ms: Option<&str>,
) -> Reply {
    let (dest, request) = match (destination(dest), term("request", request)) {
        (Ok(d), Ok(r)) => (d, r),
        (Err(e), _) | (_, Err(e)) => return Reply::err(EXIT_USAGE, e),
    };
    let timeout = match timeout_ms.map(str::parse::<u64>) {
        None => DEFAULT_CALL_TIMEOUT,
        Some(Ok(ms)) if Duration::from_millis(ms) <= MAX_CALL_TIMEOUT => Duration::from_millis(ms),
        Some(_) => {
            return Reply::err(
                EXIT_USAGE,
                format!(
                    "the timeout must be a number of milliseconds, at most {}",
                    MAX_CALL_TIMEOUT.as_millis()
                ),
            );
        }
    };
    match handler.node().call(dest.clone(), request, timeout) {
        Ok(reply) => Reply::ok(vec![reply.to_string()]),
        Err(e) => Reply::err(EXIT_REFUSED, failure(handler, &dest, &e)),
    }
}

/// `cast DEST MESSAGE`: `ok` once the message is in the mailbox (as OTP, not once handled).
pub(super) fn cast(handler: &ReleaseHandler, dest: &str, message: &str) -> Reply {
    let (dest, message) = match (destination(dest), term("message", message)) {
        (Ok(d), Ok(m)) => (d, m),
        (Err(e), _) | (_, Err(e)) => return Reply::err(EXIT_USAGE, e),
    };
    match handler.node().cast(dest.clone(), message) {
        Ok(()) => Reply::ok(vec!["ok".to_owned()]),
        Err(e) => Reply::err(EXIT_REFUSED, failure(handler, &dest, &e)),
    }
}

/// A destination: `<0.N.0>` or a registered name (an atom's text).
fn destination(text: &str) -> Result<Dest, String> {
    if let Some(inner) = text.strip_prefix("<0.").and_then(|t| t.strip_suffix(".0>")) {
        return inner
            .parse::<u64>()
            .map(|n| Dest::Pid(Pid(n)))
            .map_err(|_| format!("{text:?} is not a pid like <0.102.0>"));
    }
    if text.is_empty() || text.len() > 255 || text.chars().any(char::is_control) {
        return Err(format!("{text:?} is neither a registered name nor a pid like <0.102.0>"));
    }
    Ok(Dest::Name(text.to_owned()))
}

/// One term in Erlang syntax; the final `.` may be left out.
fn term(what: &str, text: &str) -> Result<Term, String> {
    let trimmed = text.trim_end();
    let text = if trimmed.ends_with('.') { trimmed.to_owned() } else { format!("{trimmed}.") };
    parse_single_term(Path::new(what), &text)
        .map(|t| t.value.to_term())
        .map_err(|e| format!("the {what} is not one Erlang term: {e}"))
}

/// What went wrong, in words that say which: no such process (with the registered names
/// when a name was not found), a timeout, an exit.
fn failure(handler: &ReleaseHandler, dest: &Dest, error: &ProcessError) -> String {
    match (error, dest) {
        (ProcessError::NoProc { .. }, Dest::Name(name)) => {
            let mut names: Vec<String> =
                handler.node().processes().into_iter().filter_map(|p| p.name).collect();
            names.sort();
            format!(
                "noproc: no process is registered as {name}; registered: {}",
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            )
        }
        (ProcessError::NoProc { .. }, Dest::Pid(pid)) => format!("noproc: no process {pid}"),
        (ProcessError::Timeout { after, .. }, _) => {
            format!("timeout: {dest} did not answer within {} ms", after.as_millis())
        }
        (other, _) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_names_or_pids() {
        assert_eq!(destination("ch3"), Ok(Dest::Name("ch3".into())));
        assert_eq!(destination("<0.102.0>"), Ok(Dest::Pid(Pid(102))));
        assert!(destination("<0.x.0>").is_err());
        assert!(destination("").is_err());
        assert!(destination("a\u{7}b").is_err());
    }

    #[test]
    fn terms_take_an_optional_final_dot() {
        assert_eq!(term("request", "alloc"), Ok(Term::atom("alloc")));
        assert_eq!(
            term("request", "{free, 3}."),
            Ok(Term::tuple([Term::atom("free"), Term::Int(3)]))
        );
        let err = term("request", "{free, ").unwrap_err();
        assert!(err.starts_with("the request is not one Erlang term: request:"), "{err}");
        assert!(term("request", "a. b").is_err());
    }
}
