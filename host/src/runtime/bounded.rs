//! Plugin calls with a deadline.
//!
//! A thread inside plugin code cannot be stopped: Rust has no way to interrupt it, and
//! killing it would leave its locks and its version's holds behind. What can be bounded is
//! how long the *caller* waits. `run` makes the call on a thread of its own and waits for
//! it up to a deadline; a call that overruns is reported, and its thread is left to finish
//! on its own (abandoned). The thread keeps its hold on the version it is in, so that code
//! stays mapped for as long as it runs (nothing ever unmaps running code), and the caller
//! goes on: the install fails, the shutdown continues, the control socket answers.

use std::time::Duration;

use crossbeam::channel;

/// How long a node waits for plugin code, per kind of call. A call that overruns is
/// reported naming module and function; what fails with it depends on the call (a process
/// start, an install, a stop), and the node goes on.
///
/// A process's `terminate` is bounded by its child spec's shutdown time (OTP's knob), not
/// here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A gen_server's `init` and an application's `start` callback (OTP's `start_link`
    /// Timeout, `infinity` by default there). Default 30 s. A start that overruns fails with
    /// `{timeout, init}` and the process is abandoned.
    pub init: Duration,
    /// An `{apply, {M, F, A}}` of a relup (unbounded in OTP). Default 60 s.
    pub apply: Duration,
    /// A process's `code_change`, and the preflight of one module's processes. Default 30 s.
    pub code_change: Duration,
    /// An application's `stop` callback (unbounded in OTP). Default 30 s.
    pub app_stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            init: Duration::from_secs(30),
            apply: Duration::from_secs(60),
            code_change: Duration::from_secs(30),
            app_stop: Duration::from_secs(30),
        }
    }
}

/// A call that did not return within its deadline; its thread was abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} did not return within {after:?} (its thread is abandoned, inside plugin code)")]
pub struct Overrun {
    /// The call, e.g. `ch3:code_change (preflight of <0.7.0>)`.
    pub what: String,
    /// The deadline it missed.
    pub after: Duration,
}

/// Runs `f` on a new thread and waits up to `timeout` for its result.
///
/// # Errors
/// [`Overrun`] if `f` did not return in time; `f` then goes on, unobserved, until it
/// returns. Also if no thread could be started for `f` (then `f` never ran, the deadline
/// is zero and `what` says why).
pub(crate) fn run<R: Send + 'static>(
    what: impl Into<String>,
    timeout: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Overrun> {
    let what = what.into();
    let (tx, rx) = channel::bounded(1);
    let spawned = std::thread::Builder::new().name("hotcode-bounded".to_owned()).spawn(move || {
        let _ = tx.send(f());
    });
    if let Err(e) = spawned {
        log::error!("{what}: cannot start a thread for it: {e}");
        return Err(Overrun {
            what: format!("{what} (no thread could be started for it: {e})"),
            after: Duration::ZERO,
        });
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => Ok(result),
        Err(_) => {
            log::error!("{what} did not return within {timeout:?}; its thread is abandoned");
            Err(Overrun { what, after: timeout })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn a_call_that_returns_in_time_gives_its_result() {
        assert_eq!(run("adding", Duration::from_secs(10), || 2 + 2), Ok(4));
    }

    #[test]
    fn a_call_that_overruns_is_reported_and_left_running() {
        let release = Arc::new(Barrier::new(2));
        let inside = Arc::clone(&release);
        let err = run("waiting", Duration::from_millis(20), move || inside.wait()).unwrap_err();
        assert_eq!(err.what, "waiting");
        assert!(err.to_string().contains("did not return within 20ms"), "{err}");
        // The abandoned thread is still there, and finishes once let go.
        release.wait();
    }
}
