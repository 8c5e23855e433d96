//! A private etcd on loopback, for tests, the demo and benchmarks: Debian's `etcd` binary
//! (package `etcd-server`) started on two free ports of 127.0.0.1 with a temporary data
//! directory, ready when it says so on its log, killed and removed on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The command that installs etcd on Debian.
pub const INSTALL_ETCD: &str = "apt-get install -y etcd-server";

/// How long etcd may take to say it serves clients.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a local etcd did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalEtcdError {
    /// The binary is not there.
    #[error("{binary}: etcd is not installed (Debian: `{INSTALL_ETCD}`, as root), or set ETCD")]
    Missing {
        /// The binary looked for.
        binary: PathBuf,
    },
    /// Starting it, or its directory, failed.
    #[error("starting {binary}: {source}")]
    Io {
        /// The binary.
        binary: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It exited or stayed silent before it was ready; its log says why.
    #[error("{binary} was not ready within {READY_TIMEOUT:?}; its log is {log}:\n{tail}")]
    NotReady {
        /// The binary.
        binary: PathBuf,
        /// Where its log was written.
        log: String,
        /// The log's last lines.
        tail: String,
    },
}

/// An etcd of our own on loopback. Dropping it kills it and removes its data.
pub struct LocalEtcd {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd binary: `$ETCD`, or `etcd` on the `PATH`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ETCD") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join("etcd")).find(|p| p.is_file())
    })
}

impl LocalEtcd {
    /// Starts etcd and returns once it serves clients.
    pub fn start() -> Result<LocalEtcd, LocalEtcdError> {
        let binary = etcd_binary()
            .ok_or_else(|| LocalEtcdError::Missing { binary: PathBuf::from("etcd") })?;
        if !binary.is_file() {
            return Err(LocalEtcdError::Missing { binary });
        }
        let io = |source| LocalEtcdError::Io { binary: binary.clone(), source };
        let dir = tempfile::Builder::new().prefix("hotcode-etcd-").tempdir().map_err(io)?;
        let (client, peer) = (free_port().map_err(io)?, free_port().map_err(io)?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut child = Command::new(&binary)
            .arg("--name=hotcode")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=hotcode={peer_url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        let log_path = dir.path().join("etcd.log");
        let mut log = std::fs::File::create(&log_path).map_err(io)?;
        let stderr = child.stderr.take().ok_or_else(|| io(std::io::Error::other("no stderr")))?;
        // The log is read on a thread of its own for etcd's whole life (a full pipe would
        // stop it); the first "ready to serve client requests" is the event waited for.
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("ready to serve client requests")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        let etcd = LocalEtcd { child, url, dir };
        if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            return Err(LocalEtcdError::NotReady {
                binary,
                log: log_path.display().to_string(),
                tail,
            });
        }
        Ok(etcd)
    }

    /// The client URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The etcd process's id (for fault drills: stopping it with `SIGSTOP` makes an etcd
    /// that hangs without closing its connections).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its temporary directory (data and `etcd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
