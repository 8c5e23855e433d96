//! The hotcode demo: OTP release handling for native code, narrated.
//!
//! Run with `cargo xtask demo`, which builds every plugin and assembles the example release
//! roots under `target/dist` first (`cargo run --example demo -- target/dist` afterwards).
//!
//! Part 1 is the included-application example of the seed documents: release A runs
//! `prim_app` 1; release B includes `ch_app` (channel allocator `ch3` under `ch_sup`) in
//! `prim_app` 2. The node goes A → B → A with each of the two seed relup scripts, verbatim.
//! Part 2 is the service example: a TCP counter service on 127.0.0.1 whose request handler
//! is a plugin, upgraded and downgraded again and again while clients hammer it.
//! Part 3 moves that service to a new host binary under load (SPEC §11): a node of the
//! `hotcode` binary installs release 3, whose relup begins with `restart_new_emulator`, and
//! then restarts its host in place a few times; the clients see no refused connection, no
//! failed request, and their counters carry on.
//! Part 4 swaps a library module back and forth while threads call it.
//! Part 5 (feature `cluster`, which `cargo xtask demo` turns on) runs the service on five
//! nodes in one etcd cluster, each with its own root, lease and clients: a relup with
//! `sync_nodes` where one node is killed at the barrier (the other four stop before the
//! point of no return, nothing changed), then the same upgrade with all five, which flip
//! together.
//!
//! Every check waits for the event it checks (a version answering, a library leaving the
//! memory map), for at most [`DEADLINE`], instead of hoping the scheduler produced it within
//! a fixed time; a check that fails says which check, what it expected and what it saw.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hotcode::release_handler::{ErrorAction, ReleaseHandler};
use hotcode::{CodeServer, Handle, PurgeMethod, Purged, VersionInfo};
use plugin_api::interfaces::Greeter;
use plugin_api::{Callback, Term};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long a check waits for the event it checks. Threads on a machine whose cores are
/// busy with other work may wait many milliseconds for a CPU, never this long.
const DEADLINE: Duration = Duration::from_secs(30);

/// How often a waiting check looks again.
const POLL: Duration = Duration::from_millis(1);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(line: impl AsRef<str>) {
    println!("  {}", line.as_ref());
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn run() -> Result<()> {
    let dist = std::env::args().nth(1).map(PathBuf::from).ok_or("usage: demo DIST_DIR")?;
    for script in ["included-app-restart", "included-app-supervisor"] {
        included_app(&dist.join(script), script)?;
    }
    service(&dist.join("service"))?;
    host_restart(&dist.join("service"))?;
    library_under_load(&dist)?;
    #[cfg(feature = "cluster")]
    fleet::rolling(&dist.join("service"))?;
    #[cfg(feature = "cluster")]
    fleet::fleet(&dist.join("service"))?;
    #[cfg(not(feature = "cluster"))]
    println!("\n(part 4, the fleet, needs the cluster feature: cargo xtask demo turns it on)");
    println!("\nok: the demo ran to the end");
    Ok(())
}

/// A check of the demo that did not hold.
#[derive(Debug)]
struct CheckFailed {
    /// The check's short name, `section/what`.
    check: String,
    expected: String,
    observed: String,
}

impl Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check {} failed\n  expected: {}\n  observed: {}",
            self.check, self.expected, self.observed
        )
    }
}

impl std::error::Error for CheckFailed {}

fn failed(
    check: &str,
    expected: impl Display,
    observed: impl Display,
) -> Box<dyn std::error::Error> {
    Box::new(CheckFailed {
        check: check.to_owned(),
        expected: expected.to_string(),
        observed: observed.to_string(),
    })
}

/// Passes if `ok`, otherwise fails naming the check, what it expected and what it observed.
fn check(check: &str, ok: bool, expected: impl Display, observed: impl Display) -> Result<()> {
    if ok { Ok(()) } else { Err(failed(check, expected, observed)) }
}

/// Waits for the event `check` checks: `observe` says whether it happened and describes
/// what it saw. Fails with the last observation once [`DEADLINE`] has passed; otherwise
/// returns how long it waited.
fn wait_for(
    check: &str,
    expected: impl Display,
    mut observe: impl FnMut() -> Result<(bool, String)>,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let (happened, observed) = observe()?;
        let waited = started.elapsed();
        if happened {
            return Ok(waited);
        }
        if waited >= DEADLINE {
            return Err(failed(
                check,
                format!("{expected}, within {DEADLINE:?}"),
                format!("{observed}, after {waited:.1?}"),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Copies a dist root to a scratch directory, so the demo leaves `target/dist` as built.
fn scratch_root(root: &Path) -> Result<tempfile::TempDir> {
    let tmp = tempfile::Builder::new().prefix("hotcode-demo-").tempdir()?;
    copy_dir(root, tmp.path())?;
    Ok(tmp)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        let dest = to.join(item.file_name());
        if item.file_type()?.is_dir() {
            copy_dir(&item.path(), &dest)?;
        } else {
            std::fs::copy(item.path(), dest)?;
        }
    }
    Ok(())
}

fn show_apps(h: &ReleaseHandler) {
    for app in h.node().which_applications() {
        let top = app.top.map(|p| format!(", top supervisor {p}")).unwrap_or_default();
        say(format!("application {} {} running{top}", app.name, app.vsn));
    }
}

fn show_releases(h: &ReleaseHandler) {
    for r in h.which_releases() {
        let apps: Vec<String> = r.apps.iter().map(|(a, v)| format!("{a}-{v}")).collect();
        say(format!(
            "release {} {:<2} {:<10} [{}]",
            r.name,
            r.vsn,
            r.status.as_str(),
            apps.join(", ")
        ));
    }
}

fn module_version(h: &ReleaseHandler, module: &str) -> Option<VersionInfo> {
    h.node().code().status().modules.into_iter().find(|m| m.name == module).and_then(|m| m.current)
}

fn included_app(root: &Path, script: &str) -> Result<()> {
    step(&format!("Included application, by relups/{script}.relup"));
    let name = |check: &str| format!("{script}/{check}");
    let tmp = scratch_root(root)?;
    let h = ReleaseHandler::boot(tmp.path(), ErrorAction::Return)?;
    say(format!("$ hotcode boot {}   (booted release {})", root.display(), h.current()));
    show_releases(&h);
    show_apps(&h);

    say(format!("$ hotcode ctl {} install B", root.display()));
    let up = h.install("B")?;
    say(format!("installed B, upgrading from {}: {:?}", up.from, up.direction));
    show_apps(&h);
    // Installing B starts ch_app's processes before it returns, as OTP's start does.
    let ch3 = h.node().processes_running("ch3").first().copied().ok_or_else(|| {
        failed(&name("ch3-started"), "a process running ch3 once B is installed", "none")
    })?;
    let ask = |request: Term| {
        h.node()
            .call(ch3, request.clone(), Duration::from_secs(5))
            .map_err(|e| failed(&name("ch3-serves"), format!("ch3 {ch3} to answer {request}"), e))
    };
    let mut channels = Vec::new();
    for _ in 0..3 {
        channels.push(ask(Term::atom("alloc"))?);
    }
    say(format!("ch3 {ch3} allocates channels: {}", Term::list(channels.clone())));
    for ch in channels {
        ask(Term::tuple([Term::atom("free"), ch]))?;
    }
    say(format!("and frees them: count = {}", ask(Term::atom("count"))?));
    let mut ch_libs = Vec::new();
    for m in ["ch_sup", "ch3"] {
        let v = module_version(&h, m).ok_or_else(|| {
            failed(&name("ch-loaded"), format!("{m} loaded once B is installed"), "not loaded")
        })?;
        say(format!("{m} vsn {} mapped from {}", v.vsn, v.copy.display()));
        ch_libs.push((m, v));
    }
    h.make_permanent("B")?;
    say("$ hotcode ctl ROOT make-permanent B");
    show_releases(&h);

    say("$ hotcode ctl ROOT install A   (downgrade)");
    let down = h.install("A")?;
    say(format!("installed A, downgrading from {}: {:?}", down.from, down.direction));
    show_apps(&h);
    // ch_app's processes stop, and its libraries are unloaded as soon as nothing holds
    // them: each is narrated as the install left it, then waited for.
    let running = h.node().processes_running("ch3").len();
    say(format!("processes running ch3: {running}"));
    if running != 0 {
        let waited = wait_for(&name("ch3-stopped"), "no process running ch3 in A", || {
            let n = h.node().processes_running("ch3").len();
            Ok((n == 0, format!("{n} processes running ch3")))
        })?;
        say(format!("processes running ch3: 0, {waited:.1?} later"));
    }
    for (m, v) in &ch_libs {
        let mapped = hotcode::code::maps::is_mapped(&v.copy)?;
        say(format!("{m} still in the node's memory map: {mapped}"));
        if mapped {
            let expected = format!("{m} vsn {} ({}) unmapped in A", v.vsn, v.copy.display());
            let waited = wait_for(&name("ch-unloaded"), expected, || {
                let mapped = hotcode::code::maps::is_mapped(&v.copy)?;
                Ok((!mapped, format!("{m} still mapped")))
            })?;
            say(format!("{m} left the node's memory map {waited:.1?} later"));
        }
    }
    h.make_permanent("A")?;
    show_releases(&h);
    Ok(())
}

const SERVICE_CYCLES: usize = 25;

fn service(root: &Path) -> Result<()> {
    step(&format!("The service example: {SERVICE_CYCLES} upgrade/downgrade cycles under load"));
    let tmp = scratch_root(root)?;
    let h = ReleaseHandler::boot(tmp.path(), ErrorAction::Return)?;
    show_apps(&h);
    let server =
        hotcode::service::LineServer::start(h.node().reference(), "127.0.0.1:0", "svc_handler", 4)?;
    say(format!(
        "service listening on {} (request handler: gen_server svc_handler)",
        server.addr()
    ));
    let load = hotcode::service::LoadGen::start(server.addr(), 2, "demo")?;
    say("2 client threads send `INCR <own key>` in a loop and check every answer");
    // Each install happens under load, and the next waits until the clients have been
    // answered by the version just installed. Five answers: a client has at most one
    // request in flight, so at most two of them (one per client) can be replies of an
    // earlier install of the same version read late; at least three come from this one.
    const ANSWERS: u64 = 5;
    wait_for(
        "service/clients-running",
        format!("{ANSWERS} answers by v1 before the first install"),
        || {
            let n = load.answered_by_version()[0];
            Ok((n >= ANSWERS, format!("{n} answers by v1")))
        },
    )?;
    let mut windows = Vec::new();
    let mut install_ms = Vec::new();
    for cycle in 1..=SERVICE_CYCLES {
        for (vsn, by) in [("2", 1), ("1", 0)] {
            let started = Instant::now();
            let done = h.install(vsn)?;
            install_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let before = load.answered_by_version()[by];
            windows.extend(done.suspend_window);
            if cycle == 1 {
                let window = done.suspend_window.map_or("-".into(), |w| format!("{w:?}"));
                say(format!(
                    "install {vsn}: {:?} from {}, handler suspended for {window}",
                    done.direction, done.from
                ));
            }
            let expected = format!(
                "{ANSWERS} answers by v{vsn} after install {vsn} of cycle {cycle} returned"
            );
            wait_for("service/answered-by-installed", expected, || {
                let n = load.answered_by_version()[by].saturating_sub(before);
                Ok((n >= ANSWERS, format!("{n} answers by v{vsn}, {} in all", load.answered())))
            })?;
        }
        if cycle == 2 {
            say("...");
        }
    }
    let report = load.finish();
    windows.sort();
    install_ms.sort_by(f64::total_cmp);
    let p50 = windows.get(windows.len() / 2).copied().unwrap_or_default();
    let max = windows.last().copied().unwrap_or_default();
    let install_p50 = install_ms.get(install_ms.len() / 2).copied().unwrap_or_default();
    say(format!(
        "summary: {} requests, {} failed, answered by v1: {}, by v2: {}",
        report.requests, report.failed, report.by_version[0], report.by_version[1]
    ));
    say(format!(
        "suspend window: median {p50:?}, max {max:?}; install: median {install_p50:.1} ms; slowest request {} us",
        report.max_latency_us
    ));
    check(
        "service/no-failed-requests",
        report.failed == 0,
        "every request answered, each with its counter + 1",
        format!("{} failed: {}", report.failed, report.problems.join("; ")),
    )
}

/// How many `ctl restart`s the host-restart section makes after the install.
const HOST_RESTARTS: usize = 5;

/// `hotcode ctl ROOT ARGS` with `binary`; its stdout, or an error with its stderr.
fn ctl(binary: &Path, root: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(binary).arg("ctl").arg(root).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "hotcode ctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The number after `(pid ` in `text`.
fn pid_in(text: &str) -> Option<u32> {
    let at = text.find("(pid ")? + 5;
    text[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

fn host_restart(root: &Path) -> Result<()> {
    use std::io::BufRead;
    step("The service on a new host binary: restart_new_emulator and ctl restart under load");
    let tmp = scratch_root(root)?;
    let r = tmp.path();
    // The node's own directory: its lock and socket (copies have the umask's mode).
    std::fs::set_permissions(r.join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let host = hotcode::release_handler::HOST_VSN;
    let binary = r.join(format!("host-{host}/bin/hotcode"));
    let mut node = std::process::Command::new(&binary)
        .arg("boot")
        .arg(r)
        .args(["--tcp", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = node.stdout.take().ok_or("no stdout")?;
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(std::result::Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line =
        || lines.recv_timeout(DEADLINE).map_err(|e| format!("no line from the node: {e}"));
    say(format!("{} (pid {})", next_line()?.trim_start_matches("hotcode: "), node.id()));
    let service_line = next_line()?;
    let addr: std::net::SocketAddr =
        service_line.strip_prefix("hotcode: service on ").ok_or("no service line")?.parse()?;
    say(format!("`hotcode boot --tcp` serves the line protocol on {addr}, hotcode {host}"));
    let load = hotcode::service::LoadGen::start(addr, 2, "host")?;
    say("2 client threads send `INCR <own key>` in a loop and check every answer");
    const ANSWERS: u64 = 5;
    let answers = |by: usize, since: u64, what: &str| -> Result<u64> {
        let mut seen = since;
        wait_for(
            "host-restart/answered",
            format!("{ANSWERS} answers by v{} {what}", by + 1),
            || {
                seen = load.answered_by_version()[by];
                Ok((seen >= since + ANSWERS, format!("{} answers", seen - since)))
            },
        )?;
        Ok(seen)
    };
    answers(0, 0, "before the installs")?;
    let out = ctl(&binary, r, &["install", "2"])?;
    say(format!("ctl install 2: {}", out.trim().trim_start_matches("ok: ")));
    let mut seen = answers(1, 0, "after install 2")?;
    let started = Instant::now();
    let out = ctl(&binary, r, &["install", "3"])?;
    let took = started.elapsed();
    let mut pid = pid_in(&out).ok_or("no new pid in the install's answer")?;
    say(format!("ctl install 3 ({took:.1?}): {}", out.trim().trim_start_matches("ok: ")));
    let up = next_line()?;
    say(up.trim_start_matches("hotcode: "));
    next_line()?;
    seen = answers(1, seen, "from the new host")?;
    let mut handovers = Vec::new();
    for _ in 0..HOST_RESTARTS {
        let started = Instant::now();
        let out = ctl(&binary, r, &["restart"])?;
        handovers.push(started.elapsed());
        let new = pid_in(&out).ok_or("no new pid in restart's answer")?;
        check("host-restart/new-pid", new != pid, "a new process", format!("pid {new}"))?;
        pid = new;
        next_line()?;
        next_line()?;
        seen = answers(1, seen, "after a ctl restart")?;
    }
    handovers.sort();
    say(format!(
        "ctl restart x{HOST_RESTARTS}: a new process each time (now pid {pid}); restart to ready: \
         median {:.1?}, max {:.1?}",
        handovers[handovers.len() / 2],
        handovers[handovers.len() - 1]
    ));
    let out = ctl(&binary, r, &["make-permanent", "3"])?;
    say(format!("ctl make-permanent 3: {}", out.trim().trim_start_matches("ok: ")));
    for line in ctl(&binary, r, &["which-releases"])?.lines() {
        say(format!("  {line}"));
    }
    let report = load.finish();
    say(format!(
        "summary: {} requests, {} failed, {} refused connections, {} reconnections after a \
         drain, answered by v1: {}, by v2: {}; slowest request {} us",
        report.requests,
        report.failed,
        report.refused,
        report.reconnects,
        report.by_version[0],
        report.by_version[1],
        report.max_latency_us
    ));
    // SAFETY: kill(2) touches no memory; `pid` is the node's, which answered just now.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    wait_for("host-restart/stopped", "the node gone after SIGTERM", || {
        let gone = !r.join("run/hotcode.sock").exists();
        Ok((gone, format!("socket present: {}", !gone)))
    })?;
    let _ = node.wait();
    check(
        "host-restart/no-failed-requests",
        report.failed == 0,
        "every request answered, each with its counter + 1, across every restart",
        format!("{} failed: {}", report.failed, report.problems.join("; ")),
    )?;
    check(
        "host-restart/no-refused-connections",
        report.refused == 0,
        "no connection refused",
        format!("{} refused", report.refused),
    )
}

fn lib(dist: &Path, vsn: u32) -> PathBuf {
    dist.join(format!("lib/greeter-{vsn}/greeter.so"))
}

const SWAPS: u64 = 20;

const CALLERS: usize = 2;

/// The version current after `swaps` swaps: v1 first, then v2, v1, ...
fn vsn_after(swaps: u64) -> u32 {
    if swaps % 2 == 1 { 2 } else { 1 }
}

/// Where the swapping stands, as one number: `2 * swaps` once `swaps` swaps are done,
/// odd while the next one is under way.
fn describe_phase(phase: u64) -> String {
    if phase.is_multiple_of(2) {
        format!("after swap {}", phase / 2)
    } else {
        format!("during swap {}", phase / 2 + 1)
    }
}

/// What the caller threads saw, shared with the thread that swaps.
#[derive(Default)]
struct Calls {
    /// The phase (see [`describe_phase`]). The swapping thread makes it odd before `load`
    /// and even again after `load` returned, so a call that starts and ends in the same
    /// even phase must be answered by the version of that phase: had it entered a newer
    /// one, it would have seen the odd phase stored before that version became current.
    phase: AtomicU64,
    /// Per caller: 1 + the phase its last completed call started in (0: none yet).
    done: [AtomicU64; CALLERS],
    /// Calls answered by v1 and by v2.
    answered: [AtomicU64; 2],
    /// Calls that started and ended in one phase but were answered by another version
    /// than that phase's.
    stale: AtomicU64,
    /// Calls that failed, or were answered by a version that is neither 1 nor 2.
    failed: AtomicU64,
    /// The first few problems, for the report.
    problems: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Calls {
    fn note(&self, problem: String) {
        if let Ok(mut problems) = self.problems.lock()
            && problems.len() < 5
        {
            problems.push(problem);
        }
    }

    fn problems(&self) -> String {
        self.problems.lock().map(|p| p.join("; ")).unwrap_or_default()
    }

    /// One caller thread: calls the greeter until told to stop, checking each answer
    /// that came wholly within one phase against that phase's version.
    fn call_until_stopped(&self, me: usize, greeter: &Handle<Greeter>) {
        while !self.stop.load(Ordering::Relaxed) {
            let started = self.phase.load(Ordering::Acquire);
            let answer = greeter.call(|g| g.version());
            let ended = self.phase.load(Ordering::Acquire);
            match answer {
                Ok(vsn @ (1 | 2)) => {
                    self.answered[vsn as usize - 1].fetch_add(1, Ordering::Relaxed);
                    let expected = vsn_after(started / 2);
                    if started == ended && started.is_multiple_of(2) && vsn != expected {
                        self.stale.fetch_add(1, Ordering::Relaxed);
                        self.note(format!(
                            "caller-{me}: a call made wholly {} (v{expected} current) was \
                             answered by v{vsn}",
                            describe_phase(started)
                        ));
                    }
                }
                Ok(vsn) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    self.note(format!("caller-{me}: answered by unknown version {vsn}"));
                }
                Err(e) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    self.note(format!("caller-{me}: {e}"));
                }
            }
            self.done[me].store(started + 1, Ordering::Release);
        }
    }

    /// Whether every caller completed a call that started after swap `swaps` was done,
    /// and when each one's last call started. A wrong answer fails at once.
    fn reached(&self, swaps: u64) -> Result<(bool, String)> {
        let stale = self.stale.load(Ordering::Relaxed);
        check(
            "library/calls-enter-current",
            stale == 0,
            "every call made between two swaps answered by the version the first made current",
            format!("{stale} answered by another: {}", self.problems()),
        )?;
        let done = self.done.each_ref().map(|d| d.load(Ordering::Acquire));
        let seen: Vec<String> = done
            .iter()
            .enumerate()
            .map(|(me, d)| match d {
                0 => format!("caller-{me} completed no call"),
                d => format!("caller-{me}'s last call started {}", describe_phase(d - 1)),
            })
            .collect();
        Ok((done.iter().all(|&d| d > 2 * swaps), seen.join(", ")))
    }
}

/// Tells the callers to stop when dropped, so no early return leaves them running.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn library_under_load(dist: &Path) -> Result<()> {
    step(&format!(
        "A library module swapped v1 <-> v2 {SWAPS} times while {CALLERS} threads call it"
    ));
    let server = CodeServer::new()?;
    server.load_object_code("greeter", lib(dist, 1))?;
    server.load("greeter", PurgeMethod::SoftPurge, PurgeMethod::SoftPurge)?;
    let greeter = server.handle::<Greeter>("greeter")?;
    say(format!(
        "greeter:greet(\"newcomer\") -> {:?}",
        greeter.call(|g| g.greet("newcomer".into()))?
    ));
    // Each swap happens while the callers call, and the next waits until every caller has
    // completed a call started after it, which the check in `call_until_stopped` holds to
    // the version the swap made current.
    let calls = Calls::default();
    std::thread::scope(|s| -> Result<()> {
        let _stop = StopOnDrop(&calls.stop);
        let (calls, greeter) = (&calls, &greeter);
        let callers = (0..CALLERS)
            .map(|me| {
                std::thread::Builder::new()
                    .name(format!("caller-{me}"))
                    .spawn_scoped(s, move || calls.call_until_stopped(me, greeter))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let expected =
            format!("each of the {CALLERS} callers answered by v1 before the first swap");
        wait_for("library/callers-running", expected, || calls.reached(0))?;
        for swap in 1..=SWAPS {
            let vsn = vsn_after(swap);
            server.load_object_code("greeter", lib(dist, vsn))?;
            calls.phase.store(2 * swap - 1, Ordering::Release);
            let old = server.load("greeter", PurgeMethod::BrutalPurge, PurgeMethod::SoftPurge)?;
            calls.phase.store(2 * swap, Ordering::Release);
            if swap <= 2 || swap == SWAPS {
                say(format!("swap {swap:>2}: v{vsn} current; old version: {}", describe(&old)));
            } else if swap == 3 {
                say("...");
            }
            let expected = format!("each caller answered by v{vsn} after swap {swap}");
            wait_for("library/answered-by-current", expected, || calls.reached(swap))?;
        }
        calls.stop.store(true, Ordering::Relaxed);
        for caller in callers {
            caller.join().map_err(|_| "a caller thread panicked")?;
        }
        Ok(())
    })?;
    let [n1, n2] = calls.answered.each_ref().map(|n| n.load(Ordering::Relaxed));
    let failed_calls = calls.failed.load(Ordering::Relaxed);
    say(format!("calls answered by v1: {n1}, by v2: {n2}, failed: {failed_calls}"));
    check(
        "library/no-failed-calls",
        failed_calls == 0,
        "every call answered by v1 or v2",
        format!("{failed_calls} failed: {}", calls.problems()),
    )?;

    let current = server
        .status()
        .modules
        .into_iter()
        .find(|m| m.name == "greeter")
        .and_then(|m| m.current)
        .ok_or_else(|| failed("parked/greeter-current", "greeter has a current version", "none"))?;
    let greeter = &greeter;
    std::thread::scope(|s| -> Result<()> {
        // The parked thread says when it is inside the version, then stays there until
        // `release` is dropped, which every way out of this scope does before joining it.
        let (inside_tx, inside) = crossbeam::channel::bounded::<()>(1);
        let (release, release_rx) = crossbeam::channel::bounded::<()>(0);
        let parked =
            std::thread::Builder::new().name("parked".into()).spawn_scoped(s, move || {
                greeter.call(|g| {
                    g.park(Callback::new(&|| {
                        // Neither can fail while the main thread waits; if it stopped
                        // waiting, there is nothing to tell it.
                        let _ = inside_tx.send(());
                        let _ = release_rx.recv();
                        0
                    }))
                })
            })?;
        let held = match inside.recv_timeout(DEADLINE) {
            Ok(()) => purge_while_parked(&server, dist, &current),
            Err(e) => Err(failed(
                "parked/entered",
                format!("a thread parked inside v{} within {DEADLINE:?}", current.vsn),
                e,
            )),
        };
        drop(release);
        parked.join().map_err(|_| "parked thread panicked")??;
        held
    })?;
    let mapped = hotcode::code::maps::is_mapped(&current.copy)?;
    say(format!("after the parked call returned, v{} mapped: {mapped}", current.vsn));
    if mapped {
        let expected = format!(
            "v{} ({}) unmapped once its last holder returned",
            current.vsn,
            current.copy.display()
        );
        let waited = wait_for("parked/unloaded-on-return", expected, || {
            let mapped = hotcode::code::maps::is_mapped(&current.copy)?;
            Ok((!mapped, format!("v{} still mapped", current.vsn)))
        })?;
        say(format!("v{} left the memory map {waited:.1?} later", current.vsn));
    }
    let leaked = server.status().leaked;
    let leaked: Vec<String> =
        leaked.iter().map(|l| format!("{} vsn {}: {}", l.module, l.vsn, l.reason)).collect();
    check("library/no-leaks", leaked.is_empty(), "no library leaked", leaked.join("; "))
}

/// Upgrades and purges while a thread is parked inside the current version: the purge
/// waits for it and the library stays mapped. Nothing here depends on timing: the parked
/// thread stays inside until the caller releases it.
fn purge_while_parked(server: &CodeServer, dist: &Path, current: &VersionInfo) -> Result<()> {
    server.load_object_code("greeter", lib(dist, 2))?;
    server.load("greeter", PurgeMethod::BrutalPurge, PurgeMethod::SoftPurge)?;
    let purged = server.purge("greeter");
    say(format!(
        "a thread parked inside v{}; upgrade, then purge -> {}",
        current.vsn,
        describe(&purged)
    ));
    let by_parked = matches!(&purged, Purged::Pending { holders }
        if holders.iter().any(|h| h.thread.name == "parked"));
    check(
        "parked/purge-pending",
        by_parked,
        format!("purging v{} to wait for the thread parked inside it", current.vsn),
        describe(&purged),
    )?;
    let mapped = hotcode::code::maps::is_mapped(&current.copy)?;
    say(format!("v{} still mapped while held: {mapped}", current.vsn));
    check(
        "parked/mapped-while-held",
        mapped,
        format!("v{} ({}) mapped while a thread is inside it", current.vsn, current.copy.display()),
        "unmapped",
    )
}

fn describe(p: &Purged) -> String {
    match p {
        Purged::Nothing => "none".into(),
        Purged::Unloaded => "unloaded (verified gone from /proc/self/maps)".into(),
        Purged::Leaked { reason } => format!("LEAKED: {reason}"),
        Purged::Pending { holders } => {
            let names: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
            format!("still held by {}, unloaded when it returns", names.join(", "))
        }
    }
}

/// Part 4: five nodes meet at `sync_nodes` on etcd.
#[cfg(feature = "cluster")]
mod fleet {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use hotcode::cluster::EtcdCluster;
    use hotcode::cluster::local::LocalEtcd;
    use hotcode::release_handler::cluster::Cluster;
    use hotcode::release_handler::{ErrorAction, InstallOptions, ReleaseError, ReleaseHandler};
    use hotcode::service::{LineServer, LoadGen};

    use super::{Result, check, say, scratch_root, step};

    const NODES: usize = 5;

    /// One node: its root (a copy of the dist root), handler, membership and service.
    struct FleetNode {
        name: String,
        // Declared in drop order: clients, server, handler, membership, root.
        load: Option<LoadGen>,
        _server: LineServer,
        handler: ReleaseHandler,
        cluster: Arc<EtcdCluster>,
        root: tempfile::TempDir,
    }

    impl FleetNode {
        /// Stops the node (clients, service, handler, membership), keeping its root.
        fn stop(mut self) -> (String, tempfile::TempDir) {
            if let Some(load) = self.load.take() {
                load.finish();
            }
            let FleetNode { name, root, .. } = self;
            (name, root)
        }
    }

    fn sync_relup(nodes: &[String]) -> String {
        format!(
            "{{\"2\", [{{\"1\", [],\n  [{{load_object_code,{{svc,\"2\",[svc_handler]}}}},\n   \
             {{sync_nodes, svc_v2, [{}]}},\n   point_of_no_return,\n   \
             {{suspend,[svc_handler]}},\n   {{load,{{svc_handler,brutal_purge,brutal_purge}}}},\n   \
             {{code_change,up,[{{svc_handler,[]}}]}},\n   {{resume,[svc_handler]}}]}}],\n []}}.\n",
            nodes.join(", ")
        )
    }

    fn start(
        etcd: &LocalEtcd,
        name: &str,
        root: tempfile::TempDir,
        ttl: Duration,
    ) -> Result<FleetNode> {
        let handler = ReleaseHandler::boot(root.path(), ErrorAction::Return)?;
        let cluster = Arc::new(EtcdCluster::join(etcd.url(), name, ttl)?);
        handler.join_cluster(Arc::clone(&cluster) as Arc<dyn Cluster>);
        let server =
            LineServer::start(handler.node().reference(), "127.0.0.1:0", "svc_handler", 2)?;
        let load = LoadGen::start(server.addr(), 1, name)?;
        Ok(FleetNode {
            name: name.to_owned(),
            load: Some(load),
            _server: server,
            handler,
            cluster,
            root,
        })
    }

    fn install_all(
        nodes: &[&FleetNode],
        attempt: &str,
    ) -> Vec<(std::result::Result<(), ReleaseError>, Duration)> {
        let options = InstallOptions { attempt: Some(attempt.to_owned()) };
        std::thread::scope(|s| {
            let threads: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let options = &options;
                    s.spawn(move || {
                        let started = Instant::now();
                        let r = n.handler.install_with("2", options, &mut |_| {}).map(drop);
                        (r, started.elapsed())
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("install thread")).collect()
        })
    }

    /// A rolling upgrade: `hotcode fleet install 2` (the library call behind it) over five
    /// nodes, each serving its control socket and op queue as `hotcode boot --cluster`
    /// does, with a client on each: the canary, then waves of two, a health call between
    /// waves, release 2 permanent on a node only after its wave passed.
    pub(super) fn rolling(root: &Path) -> Result<()> {
        use hotcode::fleet::agent::serve_in_process;
        use hotcode::fleet::gate::Health;
        use hotcode::fleet::rollout::{self, OnFailure, Plan, WaveSize};

        step(&format!("A fleet: a rolling upgrade of the service on {NODES} nodes, in waves"));
        let etcd = LocalEtcd::start()?;
        say(format!("etcd on {} (a private one)", etcd.url()));
        let mut nodes = Vec::new();
        for i in 1..=NODES {
            let name = format!("n{i}");
            let copy = scratch_root(root)?;
            // The control socket's directory must be the node's own (0700), as a booted
            // node's is.
            let run = copy.path().join("run");
            if run.exists() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
            }
            let handler = Arc::new(ReleaseHandler::boot(copy.path(), ErrorAction::Return)?);
            let cluster = Arc::new(EtcdCluster::join(etcd.url(), &name, Duration::from_secs(5))?);
            cluster.set_root(copy.path());
            handler.join_cluster(Arc::clone(&cluster) as Arc<dyn Cluster>);
            let served = serve_in_process(Arc::clone(&handler), cluster)?;
            let server =
                LineServer::start(handler.node().reference(), "127.0.0.1:0", "svc_handler", 2)?;
            let load = LoadGen::start(server.addr(), 1, &name)?;
            say(format!(
                "{name}: release 1 on {}, service on {}, one client",
                copy.path().display(),
                server.addr()
            ));
            nodes.push((name, load, server, served, handler, copy));
        }
        let plan = Plan {
            vsn: "2".into(),
            package: None,
            canary: 1,
            wave: WaveSize::Nodes(2),
            health: Some(Health::Call { name: "svc_handler".into(), request: "\"GET k\"".into() }),
            max_failures: 0,
            progress_deadline: Duration::from_secs(60),
            on_failure: OnFailure::Rollback,
        };
        say(format!(
            "$ hotcode fleet --cluster {} install 2 --canary 1 --wave 2 --health-call 'svc_handler:\"GET k\"'",
            etcd.url()
        ));
        let started = Instant::now();
        let state = rollout::install(&[etcd.url().to_owned()], &plan, &mut |line| {
            say(format!("  {line}"))
        })?;
        let took = started.elapsed();
        check("fleet/rollout", state.phase.word() == "done", "done", state.phase.word())?;
        let (mut failed, mut requests) = (0, 0);
        for (name, load, server, served, handler, copy) in nodes {
            let report = load.finish();
            failed += report.failed + report.refused;
            requests += report.requests;
            let releases: Vec<String> = handler
                .which_releases()
                .into_iter()
                .map(|r| format!("{} {}", r.vsn, r.status))
                .collect();
            say(format!(
                "{name}: {}; rollout: {}",
                releases.join(", "),
                state.places.get(&name).map_or("?", String::as_str)
            ));
            let permanent = releases.iter().any(|r| r == "2 permanent");
            check("fleet/permanent", permanent, "2 permanent", releases.join(", "))?;
            drop((served, server, handler, copy));
        }
        say(format!(
            "rollout of {NODES} nodes in {took:.2?}; clients of every node, from before it began to after it ended: {requests} requests, {failed} failed"
        ));
        check("fleet/rollout-failed-requests", failed == 0, "no failed request", failed)
    }

    pub(super) fn fleet(root: &Path) -> Result<()> {
        step(&format!("A fleet: the service on {NODES} nodes, sync_nodes on etcd"));
        let etcd = LocalEtcd::start()?;
        say(format!("etcd on {} (a private one, data in {})", etcd.url(), etcd.dir().display()));
        let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
        let relup = sync_relup(&names);
        let ttl = Duration::from_secs(1);
        let mut nodes = Vec::new();
        for name in &names {
            let copy = scratch_root(root)?;
            std::fs::write(copy.path().join("releases/2/relup"), &relup)?;
            nodes.push(start(&etcd, name, copy, ttl)?);
        }
        say(format!("{NODES} nodes up, each with its root, a 1 s lease and one client; relup 2:"));
        for line in relup.lines() {
            say(format!("    {line}"));
        }

        say("attempt demo-1: n5 is killed at the barrier (its lease is no longer renewed)");
        nodes[NODES - 1].cluster.member().stop_renewing();
        let killed = Instant::now();
        let others: Vec<&FleetNode> = nodes[..NODES - 1].iter().collect();
        let results = install_all(&others, "demo-1");
        let detect = killed.elapsed();
        for (n, (result, _)) in others.iter().zip(&results) {
            match result {
                Err(e @ ReleaseError::Sync { .. }) => say(format!("{}: {e}", n.name)),
                other => {
                    return check(
                        "fleet/abort",
                        false,
                        "a sync_nodes error",
                        format!("{}: {other:?}", n.name),
                    );
                }
            }
            let unchanged = n.handler.current() == "1"
                && n.handler.node().code().staged_vsn("svc_handler").is_none();
            check(
                "fleet/unchanged",
                unchanged,
                "release 1, nothing staged",
                format!("{}: {}", n.name, n.handler.current()),
            )?;
        }
        say(format!(
            "node loss seen and every other node back as it was after {detect:.2?} (lease TTL {ttl:?})"
        ));

        // n5 restarts: a new node on the same root, a new lease.
        let lost = nodes.pop().ok_or("no n5")?;
        let (name, root5) = lost.stop();
        nodes.push(start(&etcd, &name, root5, ttl)?);
        say("n5 restarted; attempt demo-2 with all five:");
        let all: Vec<&FleetNode> = nodes.iter().collect();
        let results = install_all(&all, "demo-2");
        let mut took = Vec::new();
        for (n, (result, elapsed)) in nodes.iter().zip(results) {
            if let Err(e) = result {
                return check("fleet/upgrade", false, "installed", format!("{}: {e}", n.name));
            }
            took.push(elapsed);
            check("fleet/current", n.handler.current() == "2", "release 2", n.handler.current())?;
        }
        took.sort();
        say(format!(
            "every node on release 2; installs took {:.1?} to {:.1?} (the first arrivals waited for the last)",
            took[0],
            took[took.len() - 1]
        ));
        let mut failed = 0;
        let mut requests = 0;
        for n in &mut nodes {
            if let Some(load) = n.load.take() {
                let report = load.finish();
                failed += report.failed;
                requests += report.requests;
            }
        }
        say(format!("clients of every node: {requests} requests, {failed} failed"));
        check("fleet/no-failed-requests", failed == 0, "no failed request", failed)
    }
}
