//! `hotcode`: run a node, talk to a running node, check a relup script (SPEC §7), and
//! reload plugins as they are rebuilt during development.
//!
//! The binary is a thin shell over the library: `boot` is the root's [`RootLock`], then
//! [`ReleaseHandler::boot`] plus the control socket ([`hotcode::control`]) and signal
//! handling; `ctl` is one [`hotcode::control::request`]; `check` is the relup parser and
//! [`Relup::problems`], with [`hotcode::code::elf::inspect_plugin`] for the object code when
//! a root is given; `watch` is a [`Watcher`] on a fresh node; `release new | add | tar` is
//! [`hotcode::release::assemble`] with each library checked as `check` checks one. Everything a person might want
//! to script against has a stable exit code: 0 ok, 1 a refused operation or bad input (with
//! a message on stderr), 2 usage (clap's own code for a bad command line).

mod fleet;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fleet::FleetOp;
use hotcode::Timeouts;
use hotcode::control::{self, Control, RootLock, ServeExit};
use hotcode::release::ReleaseStatus;
use hotcode::release::files::AppSpec;
use hotcode::release::{Instruction, ParseErrorKind, Pos, Relup, read_relup};
use hotcode::release_handler::last_exit::{self, Ending, ExitRecord};
use hotcode::release_handler::restart::{
    self, FD_CONTROL, FD_LOCK, HostRestart, Inherited, Predecessor,
};
use hotcode::release_handler::{EXIT_RESTART, ErrorAction, ReleaseHandler, fault_point};
use hotcode::service::LineServer;
use hotcode::watch::{WatchOptions, WatchedModule, Watcher};

const MAKE_RELUP_EXAMPLES: &str = "\
EXAMPLES:
    hotcode make-relup --root target/dist/service --from 1 --to 2

Each application that changes between the two releases needs an .appup in its new version's
library directory (lib/<app>-<vsn>/<app>.appup). Errors name the appup and the instruction.";

const BOOT_EXAMPLES: &str = "\
EXAMPLES:
    hotcode boot target/dist/included-app-restart
    RUST_LOG=debug hotcode boot target/dist/included-app-restart --error-action return
    hotcode boot target/dist/service --tcp 127.0.0.1:7000

The node runs the permanent release of ROOT and listens on ROOT/run/hotcode.sock (mode
0600, peers of another uid refused) until SIGTERM or SIGINT, then stops its applications in
reverse start order and exits 0. After `hotcode ctl ROOT reboot-old VSN`, or after an
install failed past the point of no return (with --error-action restart), it exits 3 so
that the service manager restarts it on the release that is permanent now.

Whenever it exits on purpose it first writes why to ROOT/run/last-exit (mode 0600): a first
line `<unix ms> <pid> <exit code>`, then the reason. `hotcode ctl` prints that reason when
the node closes its connection without answering, and the next `hotcode boot` logs it.

ROOT/run must be a real directory of the node's user with mode 0700 (it is created so if
missing), and the node holds a lock on it for its whole life: a second node on the same
root exits 1 at once. The node maps private copies of its libraries, made in
ROOT/run/lib/<pid>-<n>/ and deleted once open; the directory is removed when the node
exits, or, after a SIGKILL, by the next boot.

Host restarts (an install whose relup begins with restart_new_emulator or ends with
restart_emulator, or `hotcode ctl ROOT restart`) start the release's host binary
(ROOT/host-<HostVsn>/bin/hotcode, or this binary for its own version) as a new node and hand
it the root's lock, the control socket and the --tcp listener (LISTEN_FDS); this process
exits 0 once the new one serves, or serves on if the new one fails. A boot whose permanent
release names another host version runs that release's binary from ROOT instead. Under
systemd use Type=notify: the node sends READY=1, and MAINPID=<new pid> at a handover.";

const CTL_EXAMPLES: &str = "\
EXAMPLES:
    hotcode ctl target/dist/included-app-restart which-releases
    hotcode ctl target/dist/included-app-restart check-install B
    hotcode ctl target/dist/included-app-restart install B
    hotcode ctl target/dist/included-app-restart status
    hotcode ctl target/dist/included-app-restart make-permanent B
    hotcode ctl target/dist/included-app-restart call ch3 alloc
    hotcode ctl target/dist/included-app-restart call ch3 '{free, 1}' --timeout 1000
    hotcode ctl target/dist/included-app-restart tree
    hotcode ctl target/dist/included-app-restart status --json
    hotcode ctl target/dist/included-app-restart install A
    hotcode ctl target/dist/service install 3        # restart_new_emulator: a new host
    hotcode ctl target/dist/service restart          # the host, in place

Exit status: 0 ok (a call: the reply is on stdout, in Erlang syntax), 1 the node refused
the operation (the reason is on stderr), no node is running, or a call found no process
(noproc: the registered names are listed) or timed out, 2 usage (a request that is not one
Erlang term, say). If the node exits during the request (an install that failed past the
point of no return makes it exit 3 to be restarted), ctl prints the reason the node
recorded in ROOT/run/last-exit and exits 1.";

const CHECK_EXAMPLES: &str = "\
EXAMPLES:
    hotcode check relups/included-app-restart.relup
    hotcode check relups/included-app-restart.relup --root target/dist/included-app-restart

Each problem is printed as `path:line:col: message`; the exit status is 1 if there is any,
else 0.";

const WATCH_EXAMPLES: &str = "\
EXAMPLES:
    hotcode watch target/debug greeter=libgreeter_v1.so
    cargo xtask watch greeter-v1     # in another terminal: rebuild on every save

A development node: it loads each MODULE from DIR/FILE, then reloads it whenever FILE is
rebuilt, once the file has settled (no change for the quiet period, twice). It prints one
line per reload or rejected file; a rejected file leaves the running version serving. It
runs until Ctrl-C. RUST_LOG=info shows each step.";

const NEW_EXAMPLES: &str = "\
EXAMPLES:
    hotcode new kv --plugin-api ~/src/hotcode/plugin-api
    cd kv/kv-1 && cargo build --release

The README's \"Your own upgradeable service\" walks from there to a live upgrade and back.";

const RELEASE_EXAMPLES: &str = "\
EXAMPLES:
    cargo build --release          # a cdylib crate per module: target/release/lib<module>.so
    hotcode release new build/app --name app --vsn 1 \\
        --app apps/app-1/app.app --lib-dir target/release
    cp -a build/app /srv/app       # the node's root
    hotcode boot /srv/app &

    # version 2: apps/app-2/app.app, and the app.appup beside it says how to get there
    hotcode release add build/app --vsn 2 --app apps/app-2/app.app --lib-dir target/release
    hotcode release tar build/app 2 --out app-2.tar.gz
    hotcode ctl /srv/app unpack app-2.tar.gz
    hotcode ctl /srv/app install 2
    hotcode ctl /srv/app make-permanent 2

A module's library is found as DIR/lib<module>.so or DIR/<module>.so in the --lib-dir
directories, in order, unless --module <module>=FILE names it (for a crate not named after
its module). The .app files give each application's name, vsn and modules; <app>.appup
beside an .app goes along, and `add` makes the relup from the appups (as `hotcode
make-relup`). Every file is written with mode 0644 and every directory 0755 (run/ 0700):
the node refuses files that others can write. `add` refuses a root a node runs on: add to
a copy, `tar`, and `ctl ROOT unpack` the package on the node.";

const FLEET_EXAMPLES: &str = "\
EXAMPLES:
    hotcode boot /srv/shop --cluster http://127.0.0.1:2379 --node shop_a &   # on each node
    hotcode fleet --cluster http://127.0.0.1:2379 status
    hotcode fleet --cluster http://127.0.0.1:2379 install 2 --package /shared/shop-2.tar.gz \\
        --canary 1 --wave 25% --health-call 'cart:ping' --on-failure pause
    hotcode fleet --cluster http://127.0.0.1:2379 promote      # or abort, or rollback

Each node runs the ops sent to it through its own control socket, as `hotcode ctl` would. A
wave's release is made permanent only after the wave passed the health gate. One rollout at
a time per cluster. Exit status of install and promote: 0 when the rollout is done, 1 when
it rolled back, paused or was refused.";

/// Erlang/OTP-style hot code upgrades for native Rust plugins.
#[derive(Debug, Parser)]
#[command(name = "hotcode", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node from the permanent release of ROOT until SIGTERM or SIGINT.
    #[command(after_help = BOOT_EXAMPLES)]
    Boot {
        /// The release root (SPEC §6): lib/, releases/RELEASES, ...
        root: PathBuf,
        /// What to do when a relup instruction fails after the point of no return: exit
        /// with code 3 so that the service manager restarts the node on the permanent
        /// release, or report the error to the client and keep running.
        #[arg(long, value_enum, default_value_t = Action::Restart)]
        error_action: Action,
        /// How long a gen_server's init or an application's start may take (e.g. 30s,
        /// 500ms); a start that overruns fails and its process is abandoned.
        #[arg(long, value_name = "TIME", default_value = "30s", value_parser = parse_duration)]
        init_timeout: Duration,
        /// How long an {apply, {M, F, A}} of a relup may take; an overrun fails the install.
        #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_duration)]
        apply_timeout: Duration,
        /// How long a process's code_change (and the preflight of a module's processes)
        /// may take; an overrun fails the install.
        #[arg(long, value_name = "TIME", default_value = "30s", value_parser = parse_duration)]
        code_change_timeout: Duration,
        /// How long an application's stop callback may take.
        #[arg(long, value_name = "TIME", default_value = "30s", value_parser = parse_duration)]
        stop_timeout: Duration,
        #[command(flatten)]
        front: FrontArgs,
        /// Join the etcd cluster at URL (e.g. http://127.0.0.1:2379) as --node: a lease, the
        /// node's published releases, and sync_nodes with the other nodes (SPEC §12). Needs
        /// a hotcode built with the `cluster` feature.
        #[arg(long, value_name = "URL", requires = "node")]
        cluster: Option<String>,
        /// This node's name in the cluster (a word, unique among live nodes).
        #[arg(long, value_name = "NAME", requires = "cluster")]
        node: Option<String>,
        /// The node's lease TTL: how soon the other nodes see it down if it dies (whole
        /// seconds, at least 1s).
        #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_duration)]
        lease_ttl: Duration,
    },
    /// Send one release-handling request to the node running on ROOT.
    #[command(after_help = CTL_EXAMPLES)]
    Ctl {
        /// The release root the node runs on.
        root: PathBuf,
        #[command(subcommand)]
        op: CtlOp,
    },
    /// Check a relup script offline: syntax, instruction shapes, the rules between
    /// instructions, and with --root the object code it loads.
    #[command(after_help = CHECK_EXAMPLES)]
    Check {
        /// The relup file.
        relup: PathBuf,
        /// A release root whose lib/<App>-<AppVsn>/<Module>.so files must be hotcode
        /// plugins for every load_object_code.
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Generate releases/TO/relup from the applications' .appup files, as OTP's systools
    /// does (an up entry from FROM and a down entry back to it).
    #[command(name = "make-relup", after_help = MAKE_RELUP_EXAMPLES)]
    MakeRelup {
        /// The release root holding both releases.
        #[arg(long)]
        root: PathBuf,
        /// The release to upgrade from (and downgrade back to).
        #[arg(long)]
        from: String,
        /// The release whose relup is written.
        #[arg(long)]
        to: String,
    },
    /// Make release roots and release packages from your built plugins (OTP's systools).
    #[command(after_help = RELEASE_EXAMPLES)]
    Release {
        #[command(subcommand)]
        op: ReleaseOp,
    },
    /// Start a new upgradeable service: write version 1 of application NAME (an app, a
    /// supervisor and a gen_server, each a cdylib crate) into DIR/NAME-1/.
    #[command(after_help = NEW_EXAMPLES)]
    New {
        /// The application's name: lower-case letters, digits and _.
        name: String,
        /// The plugin-api crate of your hotcode checkout (the modules depend on it by path).
        #[arg(long, value_name = "DIR")]
        plugin_api: PathBuf,
        /// Where to write it (default: ./NAME); must not exist.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Look at the nodes of an etcd cluster and roll releases out over them (SPEC §12),
    /// without joining it. Needs a hotcode built with the `cluster` feature.
    #[command(after_help = FLEET_EXAMPLES)]
    Fleet {
        /// The etcd cluster's URL, e.g. http://127.0.0.1:2379.
        #[arg(long, value_name = "URL")]
        cluster: String,
        #[command(subcommand)]
        op: FleetOp,
    },
    /// Run a development node that reloads modules whenever their libraries are rebuilt.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch {
        /// The build output directory to watch, e.g. target/debug.
        dir: PathBuf,
        /// A module and the file name of its library in DIR.
        #[arg(value_name = "MODULE=FILE", required = true)]
        modules: Vec<WatchedModule>,
        /// How long a file must go unchanged before it is loaded, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 100)]
        quiet_ms: u64,
    },
}

/// The node's service front end and its host restarts.
#[derive(Debug, Clone, clap::Args)]
struct FrontArgs {
    /// Serve the service example's TCP line protocol on ADDR (e.g. 127.0.0.1:7000, or
    /// 127.0.0.1:0 for any free port; the address is printed): each request line is a call
    /// of the process running --tcp-module. After a host restart the new process serves
    /// on the same socket.
    #[arg(long, value_name = "ADDR")]
    tcp: Option<String>,
    /// The module whose process answers the TCP requests.
    #[arg(long, value_name = "MODULE", default_value = "svc_handler", requires = "tcp")]
    tcp_module: String,
    /// How long a new host process has to report ready at a host restart before it is
    /// killed and the restart fails (the node serves on).
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_duration)]
    restart_timeout: Duration,
    /// How long, at a host restart, the old process waits for the requests it has read to
    /// be answered before it closes what is left.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Action {
    /// Exit with code 3 (the service manager restarts the node on the permanent release).
    Restart,
    /// Return the error to the client; the node keeps running.
    Return,
}

#[derive(Debug, Subcommand)]
enum CtlOp {
    /// List the releases: name, version, status, applications.
    WhichReleases {
        /// One JSON document (format hotcode.releases) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the running release, applications, modules, processes and leaks.
    Status {
        /// One JSON document (format hotcode.status, with the trees too) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show every supervision tree: ids, types, modules, pids, registered names, and the
    /// version each process holds.
    Tree {
        /// One JSON document (format hotcode.tree) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the loaded applications (included ones marked) and the started ones.
    Applications {
        /// One JSON document (format hotcode.applications) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the pid registered as NAME (exit 1 if none is).
    Whereis {
        /// The registered name.
        name: String,
    },
    /// gen_server:call: send REQUEST (one Erlang term) to DEST and print the reply.
    /// Exit 1 on noproc or timeout, saying which.
    Call {
        /// A registered name, or a pid like <0.102.0>.
        dest: String,
        /// The request, in Erlang term syntax (e.g. alloc or '{free, 3}').
        request: String,
        /// How long to wait for the reply, in milliseconds (gen_server's default: 5000).
        #[arg(long, value_name = "MS")]
        timeout: Option<u64>,
    },
    /// gen_server:cast: send MESSAGE (one Erlang term) to DEST; prints ok once it is in
    /// the mailbox.
    Cast {
        /// A registered name, or a pid like <0.102.0>.
        dest: String,
        /// The message, in Erlang term syntax.
        message: String,
    },
    /// Add the release in PATH: a package (.tar.gz, from `hotcode release tar`) or a
    /// directory laid out as a root (releases/<vsn>/, lib/).
    Unpack {
        /// The package or directory holding the release.
        path: PathBuf,
    },
    /// Check everything an install would, without changing the node.
    CheckInstall {
        /// The release to install.
        vsn: String,
    },
    /// Upgrade or downgrade the node to release VSN with its relup.
    Install {
        /// The release to install.
        vsn: String,
        /// The upgrade attempt this install belongs to, the same on every node of one
        /// fleet upgrade and new for each try: needed by a relup with sync_nodes.
        #[arg(long, value_name = "ID")]
        attempt: Option<String>,
    },
    /// Make the installed release VSN the one the node boots.
    MakePermanent {
        /// The current release.
        vsn: String,
    },
    /// Make old release VSN permanent again and restart the node on it.
    RebootOld {
        /// The old release.
        vsn: String,
    },
    /// Delete release VSN and the libraries no other release uses.
    Remove {
        /// The release to remove.
        vsn: String,
    },
    /// Restart the host in place (same release): a new process of the release's host
    /// binary takes over the sockets; no connection is refused. Prints the new pid.
    Restart,
}

#[derive(Debug, Subcommand)]
enum ReleaseOp {
    /// Make a new release root (ROOT must not exist, or be empty) holding one release,
    /// permanent: ready for `hotcode boot ROOT`.
    New {
        /// The root to make.
        root: PathBuf,
        /// The release's name: releases/VSN/NAME.rel.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        inputs: ReleaseInputs,
    },
    /// Add a release to ROOT, unpacked, with a relup made from the appups.
    Add {
        /// The root (no node may run on it).
        root: PathBuf,
        /// The release's name (default: the permanent release's).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        inputs: ReleaseInputs,
        /// Make the relup from this release (default: the permanent one).
        #[arg(long, value_name = "VSN", conflicts_with_all = ["relup", "no_relup"])]
        from: Option<String>,
        /// Copy this hand-written relup (checked) instead of making one.
        #[arg(long, value_name = "FILE", conflicts_with = "no_relup")]
        relup: Option<PathBuf>,
        /// Add the release without a relup.
        #[arg(long)]
        no_relup: bool,
    },
    /// Pack release VSN of ROOT into one .tar.gz, for `hotcode ctl NODE_ROOT unpack PKG`.
    Tar {
        /// The root holding the release.
        root: PathBuf,
        /// The release to pack.
        vsn: String,
        /// The package to write (default: NAME-VSN.tar.gz in the current directory).
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// What a release is made of, for `release new` and `release add`.
#[derive(Debug, clap::Args)]
struct ReleaseInputs {
    /// The release's version.
    #[arg(long)]
    vsn: String,
    /// An application's .app file (repeat, in boot order); <app>.appup beside it goes along.
    #[arg(long = "app", value_name = "FILE.app", required = true)]
    apps: Vec<PathBuf>,
    /// A directory holding module libraries as lib<module>.so or <module>.so (repeat;
    /// searched in order), e.g. target/release.
    #[arg(long = "lib-dir", value_name = "DIR")]
    lib_dirs: Vec<PathBuf>,
    /// A module's library named explicitly, for a crate not named after its module.
    #[arg(long = "module", value_name = "MODULE=FILE", value_parser = parse_module_file)]
    modules: Vec<(String, PathBuf)>,
    /// The host version the release runs on, `{hotcode, HOST_VSN}` in its .rel (default:
    /// this hotcode's). A release on another host version is installed by restarting the
    /// node on that host (its relup begins with restart_new_emulator).
    #[arg(long, value_name = "HOST_VSN")]
    host_vsn: Option<String>,
    /// The host binary to keep in the root as host-<HOST_VSN>/bin/hotcode, recorded with the
    /// release's modules: what the node restarts on, and what a boot of the release runs.
    #[arg(long = "host", value_name = "FILE")]
    host_binary: Option<PathBuf>,
}

impl ReleaseInputs {
    fn source(self, name: String) -> hotcode::release::assemble::ReleaseSource {
        hotcode::release::assemble::ReleaseSource {
            name,
            vsn: self.vsn,
            host_vsn: self
                .host_vsn
                .unwrap_or_else(|| hotcode::release_handler::HOST_VSN.to_owned()),
            apps: self.apps,
            libraries: hotcode::release::assemble::Libraries {
                dirs: self.lib_dirs,
                modules: self.modules.into_iter().collect(),
            },
            host_binary: self.host_binary,
        }
    }
}

/// `MODULE=FILE`.
fn parse_module_file(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((module, file)) if !module.is_empty() && !file.is_empty() => {
            Ok((module.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("`{text}` is not MODULE=FILE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hotcode: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Boot {
            root,
            error_action,
            init_timeout,
            apply_timeout,
            code_change_timeout,
            stop_timeout,
            front,
            cluster,
            node,
            lease_ttl,
        } => {
            let timeouts = Timeouts {
                init: init_timeout,
                apply: apply_timeout,
                code_change: code_change_timeout,
                app_stop: stop_timeout,
            };
            let cluster = cluster.zip(node).map(|(url, node)| ClusterArgs { url, node, lease_ttl });
            boot(&root, error_action, timeouts, &front, cluster.as_ref())
        }
        Command::Ctl { root, op } => ctl(&root, op),
        Command::Check { relup, root } => check(&relup, root.as_deref()),
        Command::Watch { dir, modules, quiet_ms } => watch(&dir, modules, quiet_ms),
        Command::Fleet { cluster, op } => fleet::run(&cluster, op),
        Command::MakeRelup { root, from, to } => make_relup(&root, &from, &to),
        Command::New { name, plugin_api, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let written = hotcode::scaffold::new_service(&dir, &name, &plugin_api)?;
            println!(
                "ok: wrote {} files into {}; build it with `cd {} && cargo build --release`",
                written.len(),
                dir.display(),
                dir.join(format!("{name}-1")).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Release { op } => release(op),
    }
}

fn make_relup(root: &Path, from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let relup = hotcode::release::make_relup(root, from, to)?;
    let path = hotcode::release::write_relup(root, to, &relup)?;
    let count = |entries: &[hotcode::release::RelupEntry]| -> usize {
        entries.iter().map(|e| e.instructions.len()).sum()
    };
    println!(
        "ok: wrote {} ({} up and {} down instructions); check it with `hotcode check {} --root {}`",
        path.display(),
        count(&relup.up),
        count(&relup.down),
        path.display(),
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `hotcode release new | add | tar`: [`hotcode::release::assemble`], with every module
/// library checked as `hotcode check` checks one.
fn release(op: ReleaseOp) -> anyhow::Result<ExitCode> {
    use hotcode::release::assemble::{self, RelupSource};
    let plugin = |path: &Path| {
        hotcode::code::elf::inspect_plugin(path).map(drop).map_err(|kind| kind.to_string())
    };
    let apps = |made: &assemble::Assembled| made.apps.join(", ");
    match op {
        ReleaseOp::New { root, name, inputs } => {
            let made = assemble::new_root(&root, &inputs.source(name), &plugin)?;
            println!(
                "ok: made release root {} with release {} {} (permanent): {} ({} modules); \
                 run it with `hotcode boot {}`",
                root.display(),
                made.name,
                made.vsn,
                apps(&made),
                made.modules,
                root.display()
            );
        }
        ReleaseOp::Add { root, name, inputs, from, relup, no_relup } => {
            let releases = root.join("releases").join("RELEASES");
            if !releases.is_file() {
                bail!(
                    "{}: not a release root (it has no releases/RELEASES); make one with \
                     `hotcode release new`",
                    root.display()
                );
            }
            // The node keeps RELEASES in memory: a release added behind its back would be
            // lost at its next write. Its lock on ROOT/run says whether one runs.
            let _lock = match RootLock::acquire(&root) {
                Ok(lock) => lock,
                Err(e @ control::ControlError::AlreadyRunning { .. }) => bail!(
                    "{e}: a running node's root changes only through the node; add the \
                     release to a copy of the root, `hotcode release tar` it, and \
                     `hotcode ctl {} unpack` the package",
                    root.display()
                ),
                Err(e) => return Err(e).context("cannot lock the release root"),
            };
            let name = match name {
                Some(name) => name,
                None => {
                    let entries = hotcode::release::read_releases(&releases)?;
                    match entries.iter().find(|e| e.status == ReleaseStatus::Permanent) {
                        Some(permanent) => permanent.name.clone(),
                        None => bail!(
                            "{}: no permanent release to take the name from; give --name",
                            releases.display()
                        ),
                    }
                }
            };
            let relup = match (relup, no_relup) {
                (Some(file), _) => RelupSource::File(file),
                (None, true) => RelupSource::None,
                (None, false) => RelupSource::Make { from },
            };
            let made = assemble::add_release(&root, &inputs.source(name), &relup, &plugin)?;
            let reused = match made.reused.as_slice() {
                [] => String::new(),
                dirs => format!("; reused lib/{}", dirs.join(", lib/")),
            };
            println!(
                "ok: added release {} {} to {} (unpacked): {} ({} modules){reused}",
                made.name,
                made.vsn,
                root.display(),
                apps(&made),
                made.modules,
            );
            match &made.relup {
                Some(path) => println!(
                    "ok: relup {}; check it with `hotcode check {} --root {}`",
                    path.display(),
                    path.display(),
                    root.display()
                ),
                None => println!("note: no relup: the release can be booted, not installed"),
            }
        }
        ReleaseOp::Tar { root, vsn, out } => {
            let out = match out {
                Some(out) => out,
                None => {
                    let path = root.join("releases").join("RELEASES");
                    let entries = hotcode::release::read_releases(&path)?;
                    let name = entries.iter().find(|e| e.vsn == vsn).map_or("release", |e| &e.name);
                    PathBuf::from(format!(
                        "{name}-{vsn}{}",
                        hotcode::release::package::PACKAGE_SUFFIX
                    ))
                }
            };
            let packed = assemble::make_tar(&root, &vsn, &out)?;
            println!(
                "ok: wrote {} ({} files, {} bytes); put it on a running node with \
                 `hotcode ctl NODE_ROOT unpack {}`",
                packed.path.display(),
                packed.files,
                packed.size,
                packed.path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What SIGTERM and SIGINT set: the stop flag, and which of the two arrived (its number).
struct Signals {
    stop: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
    /// Set (with `stop`) when a fleet rollback could not downgrade the node: why it exits
    /// with [`EXIT_RESTART`] instead of 0.
    fleet_reboot: Arc<std::sync::Mutex<Option<String>>>,
}

impl Signals {
    /// The name of the signal that stopped the node.
    fn name(&self) -> &'static str {
        match i32::try_from(self.which.load(Ordering::SeqCst)) {
            Ok(signal_hook::consts::SIGINT) => "SIGINT",
            Ok(signal_hook::consts::SIGTERM) => "SIGTERM",
            _ => "a signal",
        }
    }
}

/// The flag that SIGTERM and SIGINT set. A second signal while stopping ends the process at
/// once (`register_conditional_shutdown` acts only when the flag is set already).
fn stop_on_signals() -> anyhow::Result<Signals> {
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .context("installing the signal handlers")?;
        // Before the stop flag: whoever sees the flag finds the signal's name.
        let number = usize::try_from(signal).context("a signal number")?;
        signal_hook::flag::register_usize(signal, Arc::clone(&which), number)
            .context("installing the signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handlers")?;
    }
    Ok(Signals { stop, which, fleet_reboot: Arc::default() })
}

/// A duration as a person writes it: a whole number and a unit, `ms` or `s` (`500ms`, `30s`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration like 500ms or 30s");
    let (number, unit) = match text.strip_suffix("ms") {
        Some(n) => (n, 1),
        None => (text.strip_suffix('s').ok_or_else(bad)?, 1000),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    Ok(Duration::from_millis(n.checked_mul(unit).ok_or_else(bad)?))
}

/// `boot --cluster URL --node NAME --lease-ttl TIME`.
struct ClusterArgs {
    url: String,
    node: String,
    // Read only by the cluster feature's join; without it the request is refused whole.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    lease_ttl: Duration,
}

/// Joins the cluster, hands it to the release handler, and starts serving the node's op
/// queue (the fleet's operations, run through the control socket under `root`). The
/// returned guard keeps the op queue served until it is dropped.
#[cfg(feature = "cluster")]
fn join_cluster(
    handler: &ReleaseHandler,
    args: &ClusterArgs,
    root: &Path,
    signals: &Signals,
) -> anyhow::Result<Box<dyn std::any::Any>> {
    use hotcode::cluster::EtcdCluster;
    let cluster = EtcdCluster::join(&args.url, &args.node, args.lease_ttl)
        .with_context(|| format!("cannot join the cluster at {}", args.url))?;
    cluster.set_root(&std::path::absolute(root).unwrap_or_else(|_| root.to_owned()));
    let cluster = Arc::new(cluster);
    handler
        .join_cluster(Arc::clone(&cluster) as Arc<dyn hotcode::release_handler::cluster::Cluster>);
    // A rollback that cannot downgrade the node stops it with exit code 3, so that its
    // service manager starts it again on its permanent release.
    let (stop, why) = (Arc::clone(&signals.stop), Arc::clone(&signals.fleet_reboot));
    let reboot: hotcode::fleet::agent::Reboot = Box::new(move |reason: &str| {
        *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
        stop.store(true, Ordering::SeqCst);
    });
    let agent = hotcode::fleet::agent::Agent::start(cluster, root.to_owned(), Some(reboot))
        .context("starting the fleet agent's thread")?;
    Ok(Box::new(agent))
}

/// Without the feature, `--cluster` is refused with the way to get it, never ignored.
#[cfg(not(feature = "cluster"))]
fn join_cluster(
    _handler: &ReleaseHandler,
    args: &ClusterArgs,
    _root: &Path,
    _signals: &Signals,
) -> anyhow::Result<Box<dyn std::any::Any>> {
    anyhow::bail!(
        "--cluster {} --node {}: this hotcode was built without the cluster feature; build \
         it with `cargo build -p hotcode --features cluster` (needs protoc: apt-get install \
         -y protobuf-compiler)",
        args.url,
        args.node
    )
}

fn boot(
    root: &Path,
    action: Action,
    timeouts: Timeouts,
    front: &FrontArgs,
    cluster: Option<&ClusterArgs>,
) -> anyhow::Result<ExitCode> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Registered before anything else, so that a SIGTERM during boot is not lost: the node
    // then shuts down as soon as it is up.
    let signals = stop_on_signals()?;
    // A plain boot runs the permanent release on that release's own host binary: before the
    // inherited descriptors are taken (taking them marks them close-on-exec), so that a
    // node started by socket activation hands them on to that binary as it got them.
    if !restart::started_by_predecessor() {
        exec_permanent_host(root)?;
    }
    let mut inherited = Inherited::from_env().context("cannot take the inherited descriptors")?;
    let predecessor = inherited
        .predecessor(HELLO_TIMEOUT)
        .context("cannot hear from the node this one replaces")?;
    if let Some(predecessor) = predecessor {
        return take_over(root, action, timeouts, front, inherited, predecessor, &signals);
    }
    // The root's lock before anything reads or writes the root: a second node on it stops
    // here, before it reads RELEASES or touches the first node's socket (or its exit
    // record). Held (declared first, dropped last) until the node has shut down.
    let lock = RootLock::acquire(root).context("cannot lock the release root")?;
    previous_exit(root);
    // From now on the record says this node runs, until it says why it exited: a node
    // killed by SIGKILL leaves that, not the reason of an older exit.
    if let Err(e) = last_exit::write(root, &ExitRecord::running_now()) {
        log::warn!("cannot record that the node runs: {e}");
    }
    let result = (|| {
        // The socket first, so that it exists before "node up" is printed. One the service
        // manager made (socket activation) is used as it is.
        let control = match inherited.take(FD_CONTROL) {
            Some(fd) => Control::adopt(&lock, fd, false),
            None => Control::bind(&lock),
        }
        .context("cannot open the control socket")?;
        let control = with_request_deadline(control)?;
        let error_action = error_action(action);
        let handler = ReleaseHandler::boot_with(root, error_action, timeouts)
            .with_context(|| format!("cannot boot the permanent release of {}", root.display()))?;
        // Dropped after the node stopped serving: the fleet's ops go through the socket.
        let _fleet_agent = match cluster {
            Some(args) => Some(join_cluster(&handler, args, root, &signals)?),
            None => None,
        };
        let tcp = start_tcp(&handler, front, inherited.take(FD_TCP), true)?;
        let node = Running { control, handler, tcp };
        node.announce(root, None)?;
        restart::sd_notify("READY=1");
        node.serve(root, &lock, front, &signals)
    })();
    if let Err(e) = &result {
        last_exit::record_exit(root, 1, &format!("hotcode boot failed: {e:#}"));
    }
    drop(lock);
    result
}

/// How long a new host process waits for the old one's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The descriptor name of the service example's TCP listener.
const FD_TCP: &str = "hotcode-tcp";

/// How long a process waits for the states of opted-in processes to be exported, and
/// for them to be adopted.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

fn error_action(action: Action) -> ErrorAction {
    match action {
        Action::Restart => ErrorAction::Restart,
        Action::Return => ErrorAction::Return,
    }
}

/// The service front end, if `--tcp` asks for one: on the listener handed over (or made by
/// the service manager) when there is one, else bound anew.
fn start_tcp(
    handler: &ReleaseHandler,
    front: &FrontArgs,
    inherited: Option<std::os::fd::OwnedFd>,
    accepting: bool,
) -> anyhow::Result<Option<LineServer>> {
    let Some(addr) = &front.tcp else { return Ok(None) };
    let node = handler.node().reference();
    let server = match inherited {
        Some(fd) => {
            let listener = std::net::TcpListener::from(fd);
            LineServer::from_listener(node, listener, &front.tcp_module, 4, accepting)
        }
        None => LineServer::start(node, addr, &front.tcp_module, 4),
    }
    .with_context(|| format!("cannot serve TCP on {addr}"))?;
    Ok(Some(server))
}

/// A node that is up: its control socket, its release handler, its service front end.
struct Running {
    control: Control,
    handler: ReleaseHandler,
    tcp: Option<LineServer>,
}

impl Running {
    /// Prints the "node up" line (and the service's address), which scripts and tests
    /// wait for.
    fn announce(&self, root: &Path, took_over_from: Option<u32>) -> anyhow::Result<()> {
        let current = self.handler.current();
        let name = self
            .handler
            .which_releases()
            .into_iter()
            .find(|r| r.vsn == current)
            .map_or_else(|| "?".to_owned(), |r| r.name);
        let mut out = std::io::stdout().lock();
        match took_over_from {
            None => writeln!(out, "hotcode: node up on {}, release {name} {current}", root.display()),
            Some(old) => writeln!(
                out,
                "hotcode: node up on {}, release {name} {current}, pid {} (took over from pid {old})",
                root.display(),
                std::process::id()
            ),
        }
        .context("writing to stdout")?;
        if let Some(tcp) = &self.tcp {
            writeln!(out, "hotcode: service on {}", tcp.addr()).context("writing to stdout")?;
        }
        out.flush().context("writing to stdout")
    }

    /// Lets the release handler restart the host with the descriptors of this node.
    fn enable_restart(&self, lock: &RootLock, front: &FrontArgs) -> anyhow::Result<()> {
        let mut fds = vec![
            (FD_LOCK.to_owned(), lock.try_clone_fd().context("duplicating the root's lock")?),
            (
                FD_CONTROL.to_owned(),
                self.control.listener_fd().context("duplicating the control socket")?,
            ),
        ];
        if let Some(tcp) = &self.tcp {
            fds.push((FD_TCP.to_owned(), tcp.listener_fd().context("duplicating the TCP socket")?));
        }
        // The binary this process runs, whatever became of its path since (replaced by a
        // package upgrade, deleted): the kernel's own link to it, never a path to re-read.
        let exe = PathBuf::from("/proc/self/exe");
        self.handler.set_host_restart(HostRestart {
            exe,
            args: std::env::args_os().skip(1).collect(),
            fds,
            ready_timeout: front.restart_timeout,
        });
        Ok(())
    }

    /// Serves until a signal, a restart or a handover, then shuts down; records why.
    fn serve(
        mut self,
        root: &Path,
        lock: &RootLock,
        front: &FrontArgs,
        signals: &Signals,
    ) -> anyhow::Result<ExitCode> {
        self.enable_restart(lock, front)?;
        let exit = self
            .control
            .serve(&self.handler, &signals.stop)
            .context("serving the control socket")?;
        let (code, reason) = match exit {
            ServeExit::Stopped => {
                match signals.fleet_reboot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(reason) => (EXIT_RESTART, reason),
                    None => (0, format!("stopped by {}", signals.name())),
                }
            }
            ServeExit::Restart => {
                let permanent = self
                    .handler
                    .which_releases()
                    .into_iter()
                    .find(|r| r.status == ReleaseStatus::Permanent)
                    .map_or_else(|| "?".to_owned(), |r| r.vsn);
                (
                    EXIT_RESTART,
                    format!(
                        "reboot-old made release {permanent} permanent; the node exits with \
                         {EXIT_RESTART} so that its service manager restarts it on {permanent}"
                    ),
                )
            }
            ServeExit::HandedOver(pid) => self.hand_over(root, pid, front),
        };
        // Before the socket closes: a client whose connection was still waiting reads it.
        // (After a handover the record was written before the new process took over.)
        if !matches!(exit, ServeExit::HandedOver(_)) {
            last_exit::record_exit(root, code, &reason);
        }
        log::info!("{reason}; shutting down: stopping applications");
        drop(self.tcp.take());
        self.handler.node().shutdown();
        drop(self.control);
        drop(self.handler);
        log::info!("node stopped");
        Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
    }

    /// The old process's side of a host restart, once the new process `pid` is ready and
    /// the control socket accepts nothing more: drain the service, export the states,
    /// record why this process exits, tell the new one to go. Returns this process's exit
    /// code and reason.
    fn hand_over(&mut self, root: &Path, pid: u32, front: &FrontArgs) -> (i32, String) {
        // The new process serves on the same socket file from now on.
        self.control.remove_socket_file_on_drop(false);
        let Some(successor) = self.handler.take_successor() else {
            return (EXIT_RESTART, format!("no new host process (pid {pid}) to hand over to"));
        };
        let binary = successor.binary().display().to_string();
        if let Some(tcp) = &self.tcp {
            tcp.drain(front.drain_timeout);
        }
        let states = self.handler.handover_states(STATE_TIMEOUT);
        fault_point("restart: drained and exported, before go");
        // The service manager follows the new process (systemd: Type=notify).
        restart::sd_notify(&format!("MAINPID={pid}"));
        let reason = format!("the host restarted: handed the node over to pid {pid} ({binary})");
        // Before `go`: from then on the new process owns the record.
        last_exit::record_exit(root, 0, &reason);
        match successor.go(&states, restart::SERVING_TIMEOUT) {
            Ok(_) => (0, reason),
            Err(e) => {
                let reason = format!(
                    "the host restart failed after the handover began: {e}; the node exits \
                     with {EXIT_RESTART} so that its service manager restarts it"
                );
                log::error!("{reason}");
                last_exit::record_exit(root, EXIT_RESTART, &reason);
                (EXIT_RESTART, reason)
            }
        }
    }
}

/// The new process's side of a host restart: boot what the old node asked for (its
/// release, and the rest of an install's script), say ready, wait for the old node to
/// finish and hand over, then serve. Until `go` nothing here writes to the root's shared
/// records: a failure is told to the old node, which serves on, and this process exits 1.
fn take_over(
    root: &Path,
    action: Action,
    timeouts: Timeouts,
    front: &FrontArgs,
    mut inherited: Inherited,
    predecessor: Predecessor,
    signals: &Signals,
) -> anyhow::Result<ExitCode> {
    let hello = predecessor.hello.clone();
    log::info!(
        "taking over from pid {} (release {}{})",
        hello.old_pid,
        hello.boot,
        hello
            .continue_install
            .as_ref()
            .map(|v| format!(", then the install of {v}"))
            .unwrap_or_default()
    );
    let started = (|| -> anyhow::Result<(RootLock, Running)> {
        let lock_fd = inherited.take(FD_LOCK).context("the old node handed no root lock")?;
        let lock = RootLock::adopt(root, lock_fd).context("cannot take over the root's lock")?;
        fault_point("take over: the root's lock adopted");
        let control_fd =
            inherited.take(FD_CONTROL).context("the old node handed no control socket")?;
        // Until the old node has handed over, the socket file is its too: a failure here
        // must leave it in place.
        let control = Control::adopt(&lock, control_fd, false)
            .context("cannot take over the control socket")?;
        let control = with_request_deadline(control)?;
        let handler =
            ReleaseHandler::boot_release(root, error_action(action), timeouts, &hello.boot)
                .with_context(|| format!("cannot boot release {}", hello.boot))?;
        if let Some(vsn) = &hello.continue_install {
            let mut progress = |p: hotcode::release_handler::Progress<'_>| {
                log::info!("install {vsn}: [{}/{}] {}", p.step, p.total, p.instruction);
            };
            handler
                .continue_install(vsn, &mut progress)
                .with_context(|| format!("the rest of the install of {vsn} failed"))?;
        }
        let tcp = start_tcp(&handler, front, inherited.take(FD_TCP), false)?;
        Ok((lock, Running { control, handler, tcp }))
    })();
    let (lock, mut node) = match started {
        Ok(started) => started,
        Err(e) => {
            let reason = format!("{e:#}");
            log::error!("cannot take over from pid {}: {reason}", hello.old_pid);
            predecessor.failed(&reason);
            return Ok(ExitCode::from(1));
        }
    };
    if let Err(e) = predecessor.ready() {
        // The old node is gone or broke the channel: it serves no more either way.
        log::warn!("{e}");
    }
    fault_point("take over: ready, before go");
    let go_timeout = front.drain_timeout + STATE_TIMEOUT + Duration::from_secs(30);
    match predecessor.wait_go(go_timeout) {
        Ok(Some(states)) => {
            let adopted = node.handler.adopt_states(states, STATE_TIMEOUT);
            log::info!("{adopted} process(es) took over their predecessor's state");
        }
        Ok(None) => {
            log::warn!("the old node (pid {}) went away without handing over", hello.old_pid)
        }
        Err(e) => log::error!("the handover from pid {} failed: {e}; serving alone", hello.old_pid),
    }
    fault_point("take over: states adopted, before serving");
    if let Err(e) = last_exit::write(root, &ExitRecord::running_now()) {
        log::warn!("cannot record that the node runs: {e}");
    }
    if let Some(tcp) = &node.tcp {
        tcp.resume_accepting();
    }
    // The socket file is this node's alone from now on.
    node.control.remove_socket_file_on_drop(true);
    predecessor.serving();
    let result = (|| {
        node.announce(root, Some(hello.old_pid))?;
        node.serve(root, &lock, front, signals)
    })();
    if let Err(e) = &result {
        last_exit::record_exit(root, 1, &format!("hotcode boot failed: {e:#}"));
    }
    drop(lock);
    result
}

/// When the permanent release of `root` names another host version than this binary's and
/// the root holds that host's binary (`host-<HostVsn>/bin/hotcode`, verified as its release
/// records it), runs it in this process's place with the same arguments (the service
/// manager may start whichever binary it was told to). Returns when there is nothing to do;
/// a refusal is left to the boot, which names it.
fn exec_permanent_host(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    const EXEC_ENV: &str = "HOTCODE_HOST_EXEC";
    let Some(binary) = ReleaseHandler::permanent_host_binary(root)? else { return Ok(()) };
    if std::env::var_os(EXEC_ENV).is_some() {
        // A binary that sent us here does not run the version it is filed under.
        bail!(
            "{} does not run the host version its directory names (it exec'd back here)",
            binary.display()
        );
    }
    log::info!("the permanent release runs on {}; running it", binary.display());
    let error = std::process::Command::new(&binary)
        .args(std::env::args_os().skip(1))
        .env(EXEC_ENV, &binary)
        .exec();
    Err(error).with_context(|| format!("cannot run {}", binary.display()))
}

/// Logs why the previous node on `root` exited, as it recorded it: at warn level unless it
/// stopped cleanly.
fn previous_exit(root: &Path) {
    match last_exit::read(root) {
        Ok(None) => {}
        Ok(Some(record)) => {
            let (pid, age) = (record.pid, record.age());
            match record.ending {
                Ending::Exited(0) => {
                    log::info!("the previous node (pid {pid}) exited 0, {age}: {}", record.reason);
                }
                Ending::Exited(code) => log::warn!(
                    "the previous node (pid {pid}) exited with code {code}, {age}: {}",
                    record.reason
                ),
                Ending::Running => log::warn!(
                    "the previous node (pid {pid}, started {age}) recorded no exit: it was \
                     killed (SIGKILL?) or crashed"
                ),
            }
        }
        Err(e) => log::warn!("the previous node's exit record is not believed: {e}"),
    }
}

/// `control` with the request deadline of [`REQUEST_DEADLINE_ENV`], if it is set.
fn with_request_deadline(control: Control) -> anyhow::Result<Control> {
    Ok(match request_deadline()? {
        Some(deadline) => control.with_request_deadline(deadline),
        None => control,
    })
}

/// The environment variable that overrides [`control::REQUEST_DEADLINE`], in milliseconds:
/// for tests, which cannot wait ten seconds for a slow client to be cut off.
const REQUEST_DEADLINE_ENV: &str = "HOTCODE_REQUEST_DEADLINE_MS";

/// The request deadline from [`REQUEST_DEADLINE_ENV`], if it is set.
fn request_deadline() -> anyhow::Result<Option<std::time::Duration>> {
    let Some(value) = std::env::var_os(REQUEST_DEADLINE_ENV) else {
        return Ok(None);
    };
    match value.to_str().and_then(|v| v.parse::<u64>().ok()) {
        Some(ms) if ms > 0 => Ok(Some(std::time::Duration::from_millis(ms))),
        _ => bail!("{REQUEST_DEADLINE_ENV}={value:?}: not a positive number of milliseconds"),
    }
}

fn watch(dir: &Path, modules: Vec<WatchedModule>, quiet_ms: u64) -> anyhow::Result<ExitCode> {
    // The event lines are the output; the log is for RUST_LOG=info and for errors.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let stop = stop_on_signals()?.stop;
    let node = Arc::new(hotcode::Node::new().context("cannot start the node")?);
    let mut options = WatchOptions::default();
    options.quiet = std::time::Duration::from_millis(quiet_ms);
    let watcher = Watcher::start(Arc::clone(&node), dir, modules.clone(), options)?;
    {
        let mut out = std::io::stdout().lock();
        for m in &modules {
            let vsn = node.code().current_vsn(&m.module).unwrap_or_else(|| "?".to_owned());
            let file = watcher.dir().join(&m.file_name);
            writeln!(out, "loaded {} vsn {vsn} from {}", m.module, file.display())
                .context("writing to stdout")?;
        }
        writeln!(out, "watching {}; Ctrl-C to stop", watcher.dir().display())
            .context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    // The flag is set from a signal handler, which cannot wake a channel: look at it
    // between events.
    while !stop.load(Ordering::Relaxed) {
        match watcher.events().recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(event) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{event}").context("writing to stdout")?;
                out.flush().context("writing to stdout")?;
            }
            Err(e) if e.is_timeout() => {}
            Err(_) => bail!("the watcher stopped"),
        }
    }
    drop(watcher);
    node.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// A read-only request with an optional `--json`.
fn with_json(command: &str, json: bool) -> Vec<String> {
    let mut fields = vec![command.to_owned()];
    if json {
        fields.push("--json".to_owned());
    }
    fields
}

/// A term written over several lines, on one: the protocol's fields hold no TAB or
/// newline, and outside a string literal a term's white space is all alike.
fn one_line(term: &str) -> String {
    term.replace(['\t', '\n', '\r'], " ")
}

fn ctl(root: &Path, op: CtlOp) -> anyhow::Result<ExitCode> {
    let fields: Vec<String> = match op {
        CtlOp::WhichReleases { json } => with_json("which-releases", json),
        CtlOp::Status { json } => with_json("status", json),
        CtlOp::Tree { json } => with_json("tree", json),
        CtlOp::Applications { json } => with_json("applications", json),
        CtlOp::Whereis { name } => vec!["whereis".into(), name],
        CtlOp::Call { dest, request, timeout } => {
            let mut fields = vec!["call".into(), dest, one_line(&request)];
            fields.extend(timeout.map(|ms| ms.to_string()));
            fields
        }
        CtlOp::Cast { dest, message } => vec!["cast".into(), dest, one_line(&message)],
        CtlOp::Unpack { path } => {
            // The node runs in another directory: send it a path that means the same there.
            let path = std::path::absolute(&path)
                .with_context(|| format!("cannot make {} absolute", path.display()))?;
            let Some(path) = path.to_str() else {
                bail!(
                    "{}: the path is not UTF-8, which the control protocol carries",
                    path.display()
                );
            };
            vec!["unpack".into(), path.to_owned()]
        }
        CtlOp::CheckInstall { vsn } => vec!["check-install".into(), vsn],
        CtlOp::Install { vsn, attempt: None } => vec!["install".into(), vsn],
        CtlOp::Install { vsn, attempt: Some(attempt) } => {
            vec!["install".into(), vsn, "--attempt".into(), attempt]
        }
        CtlOp::MakePermanent { vsn } => vec!["make-permanent".into(), vsn],
        CtlOp::RebootOld { vsn } => vec!["reboot-old".into(), vsn],
        CtlOp::Remove { vsn } => vec!["remove".into(), vsn],
        CtlOp::Restart => vec!["restart".into()],
    };
    // Progress of a long operation goes to stderr as it happens; the answer to stdout.
    let (lines, code) =
        control::request_with_progress(root, &fields, &mut |step| eprintln!("hotcode: {step}"))?;
    if code == 0 {
        let mut out = std::io::stdout().lock();
        for line in &lines {
            writeln!(out, "{line}").context("writing to stdout")?;
        }
        out.flush().context("writing to stdout")?;
    } else {
        let mut lines = lines.iter();
        let first = lines.next().map_or("the node refused the request", String::as_str);
        eprintln!("hotcode: error: {first}");
        for line in lines {
            eprintln!("{line}");
        }
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn check(path: &Path, root: Option<&Path>) -> anyhow::Result<ExitCode> {
    if let Some(root) = root
        && !root.is_dir()
    {
        bail!("{}: not a directory (--root must be a release root)", root.display());
    }
    let relup = match read_relup(path) {
        Ok(relup) => relup,
        // A file that cannot be read is an error of the command, not a problem of a script.
        Err(e) if matches!(e.kind, ParseErrorKind::Io(_)) => return Err(e.into()),
        Err(e) => {
            println!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut problems: Vec<(Option<Pos>, String)> =
        relup.problems(path).into_iter().map(|p| (p.pos, p.to_string())).collect();
    if let Some(root) = root {
        problems.extend(object_code_problems(path, &relup, root));
    }
    // Stable: problems at one position keep the order they were found in.
    problems.sort_by_key(|(pos, _)| *pos);
    if problems.is_empty() {
        println!(
            "ok: {} ({} up, {} down entries)",
            path.display(),
            relup.up.len(),
            relup.down.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for (_, problem) in &problems {
        writeln!(out, "{problem}").context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::from(1))
}

/// What only the root can tell: a relup under `ROOT/releases/<Vsn>/` must be release
/// `Vsn`'s; and for each `load_object_code {App, AppVsn, [M]}` of every entry, `M` must be a
/// module of `ROOT/lib/<App>-<AppVsn>/<App>.app` and its `.so` a hotcode plugin this host
/// would load (read without loading it).
fn object_code_problems(path: &Path, relup: &Relup, root: &Path) -> Vec<(Option<Pos>, String)> {
    let mut problems = Vec::new();
    let dir_vsn = path.canonicalize().ok().and_then(|p| {
        let dir = p.parent()?;
        let releases = root.join("releases").canonicalize().ok()?;
        (dir.parent()? == releases).then(|| dir.file_name()?.to_str().map(str::to_owned))?
    });
    if let Some(dir_vsn) = dir_vsn
        && dir_vsn != relup.vsn
    {
        problems.push((
            None,
            format!(
                "{}: the relup is for release \"{}\", but it lives in the directory of release \"{dir_vsn}\"",
                path.display(),
                relup.vsn
            ),
        ));
    }
    for entry in relup.up.iter().chain(&relup.down) {
        for instruction in &entry.instructions {
            let Instruction::LoadObjectCode { app, app_vsn, modules } = &instruction.value else {
                continue;
            };
            let at = format!("{}:{}", path.display(), instruction.pos);
            let dir = root.join("lib").join(format!("{app}-{app_vsn}"));
            let app_file = dir.join(format!("{app}.app"));
            let listed = match AppSpec::read(&app_file) {
                Ok(spec) => Some(spec.modules),
                Err(e) => {
                    problems.push((Some(instruction.pos), format!("{at}: {app} {app_vsn}: {e}")));
                    None
                }
            };
            for module in modules {
                if let Some(listed) = &listed
                    && !listed.contains(module)
                {
                    problems.push((
                        Some(instruction.pos),
                        format!(
                            "{at}: module {module} is not a module of {app} {app_vsn}: {} lists [{}]",
                            app_file.display(),
                            listed.join(", ")
                        ),
                    ));
                }
                let file = dir.join(format!("{module}.so"));
                if let Err(kind) = hotcode::code::elf::inspect_plugin(&file) {
                    problems.push((
                        Some(instruction.pos),
                        format!(
                            "{}:{}: module {module} of {app} {app_vsn}: {}: {kind}",
                            path.display(),
                            instruction.pos,
                            file.display()
                        ),
                    ));
                }
            }
        }
    }
    problems
}
