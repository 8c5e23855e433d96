//! The protocol on the wire: the request line, the answer lines and their final `OK` or
//! `ERR code`, and who the peer is (`SO_PEERCRED`).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::server::*;

/// The longest request line taken (a path is the longest field).
pub(super) const MAX_REQUEST: u64 = 64 * 1024;

/// Exit code of a refused operation or bad input.
pub(super) const EXIT_REFUSED: i32 = 1;

/// Exit code of a malformed request (usage).
pub(super) const EXIT_USAGE: i32 = 2;

/// The usage of each command, for the answer to a malformed request.
pub(super) const USAGE: &[&str] = &[
    "which-releases [--json]",
    "status [--json]",
    "tree [--json]",
    "applications [--json]",
    "whereis NAME",
    "call DEST REQUEST [TIMEOUT_MS]",
    "cast DEST MESSAGE",
    "unpack PATH",
    "check-install VSN",
    "install VSN [--attempt ID]",
    "make-permanent VSN",
    "reboot-old VSN",
    "remove VSN",
    "restart",
];

/// A request, checked for its command and number of arguments.
#[derive(Debug, Clone, Copy)]
pub(super) enum Request<'a> {
    /// Read-only: answered at once, beside anything else.
    Query(Query<'a>),
    Unpack(&'a str),
    CheckInstall(&'a str),
    /// The release, and the upgrade attempt `sync_nodes` needs (SPEC §12).
    Install(&'a str, Option<&'a str>),
    MakePermanent(&'a str),
    RebootOld(&'a str),
    Remove(&'a str),
    /// Restart the host in place (same release), handing the node to a new process.
    Restart,
}

/// A read-only request: about the node, or to one of its processes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Query<'a> {
    WhichReleases {
        json: bool,
    },
    Status {
        json: bool,
    },
    Tree {
        json: bool,
    },
    Applications {
        json: bool,
    },
    Whereis(&'a str),
    /// `gen_server:call(Dest, Request, Timeout)`; the request in Erlang term syntax.
    Call {
        dest: &'a str,
        request: &'a str,
        timeout_ms: Option<&'a str>,
    },
    /// `gen_server:cast(Dest, Message)`.
    Cast {
        dest: &'a str,
        message: &'a str,
    },
}

impl<'a> Request<'a> {
    pub(super) fn parse(fields: &'a [String]) -> Result<Request<'a>, String> {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let query = |q| Request::Query(q);
        Ok(match fields.as_slice() {
            ["which-releases"] => query(Query::WhichReleases { json: false }),
            ["which-releases", "--json"] => query(Query::WhichReleases { json: true }),
            ["status"] => query(Query::Status { json: false }),
            ["status", "--json"] => query(Query::Status { json: true }),
            ["tree"] => query(Query::Tree { json: false }),
            ["tree", "--json"] => query(Query::Tree { json: true }),
            ["applications"] => query(Query::Applications { json: false }),
            ["applications", "--json"] => query(Query::Applications { json: true }),
            ["whereis", name] => query(Query::Whereis(name)),
            ["call", dest, request] => query(Query::Call { dest, request, timeout_ms: None }),
            ["call", dest, request, ms] => {
                query(Query::Call { dest, request, timeout_ms: Some(ms) })
            }
            ["cast", dest, message] => query(Query::Cast { dest, message }),
            ["unpack", path] => Request::Unpack(path),
            ["check-install", vsn] => Request::CheckInstall(vsn),
            ["install", vsn] => Request::Install(vsn, None),
            ["install", vsn, "--attempt", attempt] => Request::Install(vsn, Some(attempt)),
            ["make-permanent", vsn] => Request::MakePermanent(vsn),
            ["reboot-old", vsn] => Request::RebootOld(vsn),
            ["remove", vsn] => Request::Remove(vsn),
            ["restart"] => Request::Restart,
            [""] | [] => return Err("empty request".to_owned()),
            _ => return Err(format!("bad request {:?}", fields.join(" "))),
        })
    }
}

/// An answer: lines, then `OK` or `ERR code`.
pub(super) struct Reply {
    pub(super) lines: Vec<String>,
    pub(super) code: i32,
    pub(super) restart: bool,
    /// A new host process took over (its pid): this node stops serving and hands over.
    pub(super) handover: Option<u32>,
}

impl Reply {
    pub(super) fn ok(lines: Vec<String>) -> Reply {
        Reply { lines, code: 0, restart: false, handover: None }
    }

    pub(super) fn err(code: i32, message: String) -> Reply {
        Reply {
            lines: message.lines().map(str::to_owned).collect(),
            code,
            restart: false,
            handover: None,
        }
    }

    pub(super) fn usage(message: String) -> Reply {
        let mut reply = Reply::err(EXIT_USAGE, message);
        reply.lines.push(format!("commands: {}", USAGE.join(" | ")));
        reply
    }

    pub(super) fn send(&self, mut stream: &UnixStream) -> io::Result<()> {
        let mut text = String::new();
        for line in &self.lines {
            // A line of the answer is one line on the wire, whatever a message holds.
            text.push_str(&line.replace(['\n', '\r'], " "));
            text.push('\n');
        }
        if self.code == 0 {
            text.push_str("OK\n");
        } else {
            text.push_str(&format!("ERR {}\n", self.code));
        }
        stream.write_all(text.as_bytes())?;
        stream.flush()
    }
}

/// Reads the request line by `deadline`, however the client paces its bytes:
/// `Ok(Err(message))` for a malformed one, an error of kind `TimedOut` past the deadline,
/// one of kind `Interrupted` once `stopping()` says so (asked at least every
/// [`POLL_INTERVAL`]).
pub(super) fn read_request(
    mut stream: &UnixStream,
    deadline: Instant,
    stopping: &dyn Fn() -> bool,
) -> io::Result<Result<Vec<String>, String>> {
    let limit = usize::try_from(MAX_REQUEST + 1).unwrap_or(usize::MAX);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request deadline passed"));
        }
        if stopping() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "the node is stopping"));
        }
        // The time left in all, not a fresh timeout for each read; in slices, to look at
        // the stop flag between them.
        stream.set_read_timeout(Some(remaining.min(POLL_INTERVAL)))?;
        let want = buf.len().min(limit - raw.len());
        let n = match stream.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let start = raw.len();
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw[start..].iter().position(|&b| b == b'\n') {
            raw.truncate(start + end + 1);
            break;
        }
        if n == 0 || raw.len() >= limit {
            break;
        }
    }
    if raw.last() != Some(&b'\n') {
        return Ok(Err(if raw.len() as u64 > MAX_REQUEST {
            format!("request longer than {MAX_REQUEST} bytes")
        } else {
            "request line not ended by a newline".to_owned()
        }));
    }
    raw.pop();
    let Ok(line) = String::from_utf8(raw) else {
        return Ok(Err("request is not UTF-8".to_owned()));
    };
    Ok(Ok(line.split('\t').map(str::to_owned).collect()))
}

/// Reads and drops what a refused peer has sent so far, without waiting for more: closing
/// a Unix socket with unread data resets the connection, and the peer's read after the
/// refusal would fail with that reset instead of ending cleanly.
pub(super) fn discard_pending(mut stream: &UnixStream) {
    let mut buf = [0u8; 4096];
    let mut left = MAX_REQUEST;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
}

/// Who is at the other end of a Unix stream, as the kernel recorded it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerCred {
    pub(super) uid: u32,
    pub(super) pid: u32,
}

/// The uid and pid of the process at the other end of `stream`, from the kernel
/// (`SO_PEERCRED`): the credentials it had when it connected (or, for a listening node,
/// when it listened), which it cannot forge.
pub(super) fn peer_cred(stream: &UnixStream) -> io::Result<PeerCred> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
        .map_err(|_| io::Error::other("ucred size"))?;
    // SAFETY: the fd is the stream's open socket; `cred` is a writable `ucred` and `len`
    // holds its exact size, so the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let pid = u32::try_from(cred.pid).map_err(|_| io::Error::other("negative peer pid"))?;
    Ok(PeerCred { uid: cred.uid, pid })
}
