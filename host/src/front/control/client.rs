//! The client's side, `hotcode ctl`: one request, its answer, and why a node that went
//! away went.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::code::trust::node_uid;
use crate::release_handler::last_exit::{self, Ending};

use super::lock::*;
use super::wire::*;
use super::*;

/// Sends one request to the node running on `root` and returns the lines it answered and
/// the exit code it asks for (0 for `OK`).
///
/// Waits as long as the operation takes: an install runs its whole script before the node
/// answers.
///
/// # Errors
///
/// [`ControlError::NotRunning`] if no node listens on `root`; [`ControlError::UnsafeRunDir`]
/// if `ROOT/run` is a symbolic link, not a directory, owned by a user other than this one
/// or root, or writable by group or others; [`ControlError::ForeignPeer`] if the process
/// listening on the socket runs as a uid other than this process's effective uid or root
/// (nothing is sent to it); [`ControlError::BadField`] if a field cannot be sent;
/// [`ControlError::NodeExited`] if the node closed the connection before its final line and
/// recorded why in `ROOT/run/last-exit` (after the request began, under the pid the kernel
/// gave for it); [`ControlError::Protocol`] if it closed the connection before its final
/// line otherwise, or sent a bad final line; [`ControlError::Io`] for other socket errors.
pub fn request(root: &Path, fields: &[String]) -> Result<(Vec<String>, i32), ControlError> {
    request_with_progress(root, fields, &mut |_| {})
}

/// Lines a node sends while an operation runs start with this; they are not part of the
/// answer.
pub const PROGRESS_PREFIX: &str = "# ";

/// [`request`], handing each progress line to `progress` as it arrives.
pub fn request_with_progress(
    root: &Path,
    fields: &[String],
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<String>, i32), ControlError> {
    exchange(root, fields, progress, None)
}

/// [`request`], given up at `deadline`: every write and read on the socket is bounded by
/// the time left, so a node that is stopped (SIGSTOP) or hung cannot hold the caller.
///
/// # Errors
///
/// As [`request`], and [`ControlError::TimedOut`] if the whole answer did not arrive
/// before `deadline` (or it had passed already).
pub fn request_until(
    root: &Path,
    fields: &[String],
    deadline: Instant,
) -> Result<(Vec<String>, i32), ControlError> {
    exchange(root, fields, &mut |_| {}, Some(deadline))
}

/// One request; with a deadline, each socket operation is bounded by the time left.
fn exchange(
    root: &Path,
    fields: &[String],
    progress: &mut dyn FnMut(&str),
    deadline: Option<Instant>,
) -> Result<(Vec<String>, i32), ControlError> {
    let given = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if let Some(field) = fields.iter().find(|f| f.contains(['\t', '\n', '\r'])) {
        return Err(ControlError::BadField { field: field.clone() });
    }
    let socket = socket_path(root);
    let not_running = || ControlError::NotRunning { root: root.to_owned(), socket: socket.clone() };
    // An exit record older than this is not about this request.
    let began = SystemTime::now();
    if !check_run_dir(&root.join(RUN_DIR))? {
        return Err(not_running());
    }
    let mut stream = UnixStream::connect(&socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => not_running(),
        _ => ControlError::Io { path: socket.clone(), source: e },
    })?;
    // Before a byte is sent or believed: is it the node, or someone who took its place?
    let own = node_uid();
    let peer = peer_cred(&stream).map_err(io_error(&socket))?;
    let uid = peer.uid;
    if uid != own && uid != 0 {
        return Err(ControlError::ForeignPeer { socket, uid, own });
    }
    // The time left, or the error once there is none (a zero timeout means none to std).
    let timed_out =
        || ControlError::TimedOut { socket: socket.clone(), after: given.unwrap_or_default() };
    let left = || -> Result<Option<Duration>, ControlError> {
        match deadline {
            None => Ok(None),
            Some(d) => match d.saturating_duration_since(Instant::now()) {
                left if left.is_zero() => Err(timed_out()),
                left => Ok(Some(left)),
            },
        }
    };
    stream.set_write_timeout(left()?).map_err(io_error(&socket))?;
    let mut line = fields.join("\t");
    line.push('\n');
    // A node that refuses us answers and closes without reading the request, so writing
    // it may fail: the answer, already on its way, says why.
    let sent =
        stream.write_all(line.as_bytes()).and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let expired = |e: &io::Error| {
        deadline.is_some()
            && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
    };
    if let Err(e) = sent
        && !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
    {
        if expired(&e) {
            return Err(timed_out());
        }
        return Err(ControlError::Io { path: socket.clone(), source: e });
    }
    let timer = stream.try_clone().map_err(io_error(&socket))?;
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    loop {
        timer.set_read_timeout(left()?).map_err(io_error(&socket))?;
        let mut line = String::new();
        let line = match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                if line.ends_with('\n') {
                    line.pop();
                    if line.ends_with('\r') {
                        line.pop();
                    }
                }
                line
            }
            Err(e) if expired(&e) => return Err(timed_out()),
            // After a refusal, the node closed with our request unread, which resets the
            // connection once its answer has been read: the answer is complete. Without
            // one, the node went away before it took the connection: said below.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(ControlError::Io { path: socket.clone(), source: e }),
        };
        match line.strip_prefix(PROGRESS_PREFIX) {
            Some(step) => progress(step),
            None => lines.push(line),
        }
    }
    let protocol = |detail: String| ControlError::Protocol { socket: socket.clone(), detail };
    let Some(last) = lines.pop() else {
        return Err(went_away(root, &socket, peer.pid, began, "without answering".to_owned()));
    };
    let code = if last == "OK" {
        0
    } else if let Some(code) = last.strip_prefix("ERR ") {
        code.parse::<i32>()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| protocol(format!("bad final line {last:?}")))?
    } else {
        lines.push(last);
        let said = format!("before its final line, having said: {}", lines.join(" / "));
        return Err(went_away(root, &socket, peer.pid, began, said));
    };
    Ok((lines, code))
}

/// The error for a node (pid `pid`) that closed the connection `how` ("without
/// answering"): its reason from `ROOT/run/last-exit` if it wrote one after the request
/// began (`began`), else what is known.
pub(super) fn went_away(
    root: &Path,
    socket: &Path,
    pid: u32,
    began: SystemTime,
    how: String,
) -> ControlError {
    let file = last_exit::path(root);
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    // Read with the same trust as the socket: ROOT/run checked again, then the file itself.
    let record = check_run_dir(&root.join(RUN_DIR))
        .map_err(|e| e.to_string())
        .and_then(|_| last_exit::read(root).map_err(|e| e.to_string()));
    let why = match record {
        Ok(Some(r)) if r.pid == pid => match r.ending {
            // Written before the exit closed our connection, so after we connected.
            Ending::Exited(code) if ms(r.at) >= ms(began) => {
                return ControlError::NodeExited { record: file, pid, code, reason: r.reason };
            }
            Ending::Exited(_) => format!(
                "{} holds an exit of pid {pid} from before this request ({})",
                file.display(),
                r.age()
            ),
            Ending::Running => format!(
                "it recorded no exit in {}: it was killed (SIGKILL?) or crashed",
                file.display()
            ),
        },
        Ok(Some(r)) => format!(
            "{} is about pid {}, not this node: it was killed (SIGKILL?) or crashed",
            file.display(),
            r.pid
        ),
        Ok(None) => format!("there is no {}: it was killed (SIGKILL?) or crashed", file.display()),
        Err(e) => format!("its exit record was not read: {e}"),
    };
    ControlError::Protocol {
        socket: socket.to_owned(),
        detail: format!("the node (pid {pid}) closed the connection {how}; {why}"),
    }
}
