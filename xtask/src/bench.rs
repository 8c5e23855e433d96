//! `cargo xtask bench [ARGS...]`: makes sure etcd and protoc are installed, builds every
//! plugin in release mode, runs `cargo bench -p hotcode --features cluster [ARGS...]` with
//! `HOTCODE_PLUGIN_DIR` pointing at them, then has Erlang/OTP do the same process work
//! (`xtask/otp/bench.erl`), then merges what the benchmarks left behind into
//! `target/bench-summary.json` and prints it as a table against SPEC §10's targets.
//!
//! The benchmarks write their own raw results: criterion its estimates
//! (`target/criterion/<group>/<bench>/new/estimates.json`, the group's `/` turned into
//! `_`), the call path's paired ratios and the scenario benchmarks
//! `target/bench-results/{call_paired,runtime,upgrade,upgrade_1k,upgrade_10k,soak,restart,
//! fleet}.json`, and the OTP script `target/bench-results/otp.json` (read into the `otp.*`
//! keys, and the ratios against OTP). Merging them here keeps the benchmarks free of any
//! knowledge of each other and of the targets.
//!
//! The OTP side runs when no arguments were passed (or `HOTCODE_OTP=1`; `HOTCODE_OTP=0`
//! skips it). It needs `escript` (Debian `erlang-base`, installed as root when missing,
//! see [`crate::tools::escript`]); without it the `otp.*` keys and the ratios against OTP
//! are `null` and the command says plainly why they were not measured.
//!
//! A result file older than this run is stale (left by an earlier run) and counts as
//! missing. Missing results fail the command, unless arguments were passed (a filter, a
//! `--bench` selection): then they are shown as missing and written as `null`. The OTP keys
//! count as missing only when OTP was meant to be measured and `escript` was there.
//! Targets that are not met do not fail the command: they are measurements, reported.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::build;
use crate::cmd;
use crate::project::{self, Profile};
use crate::test::PLUGIN_DIR_VAR;

/// Entry point of the `bench` subcommand; `args` go to `cargo bench` verbatim.
pub fn run(args: &[String]) -> Result<ExitCode> {
    crate::tools::ensure_cluster_tools()?;
    build::build(Profile::Release)?;
    let started = SystemTime::now();
    let mut cargo = cmd::cargo();
    cargo
        .args(["bench", "-p", "hotcode", "--features", "cluster"])
        .args(args)
        .env(PLUGIN_DIR_VAR, Profile::Release.out_dir());
    let status = cmd::status(&mut cargo)?;
    let otp = run_otp(args, &project::target_dir());

    let sources = Sources { target: project::target_dir(), since: started };
    let rows = summarize(&sources);
    let path = sources.target.join("bench-summary.json");
    fs::write(&path, summary_json(&rows)).with_context(|| format!("writing {}", path.display()))?;
    print_table(&rows);
    print_details(&sources);
    eprintln!("xtask: wrote {}", project::display(&path));
    if let Otp::NotMeasured(why) = &otp {
        println!(
            "OTP side by side: NOT MEASURED ({why}): the otp.* keys and the ratios against OTP are null"
        );
    }

    if !status.success() {
        return Ok(cmd::exit_code(status));
    }
    if let Otp::Failed(why) = &otp {
        bail!("the OTP side of the benchmarks failed: {why}");
    }
    let missing = missing(&rows, matches!(otp, Otp::Ran));
    if !missing.is_empty() && args.is_empty() {
        bail!("the benchmarks left no (fresh) result for: {}", missing.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// The keys without a value that count as missing: all of them when OTP ran, else all
/// but the OTP ones (reported as not measured instead).
fn missing(rows: &[Row], otp_ran: bool) -> Vec<&'static str> {
    rows.iter().filter(|r| r.value.is_none() && (otp_ran || !r.needs_otp)).map(|r| r.key).collect()
}

/// What became of the OTP side of the run.
enum Otp {
    /// The script ran and wrote its results.
    Ran,
    /// Not measured, and why (not asked for, or no Erlang/OTP to run it with).
    NotMeasured(String),
    /// `escript` was there but the script failed.
    Failed(String),
}

/// Runs `xtask/otp/bench.erl` into `<target>/bench-results/otp.json` when the whole
/// benchmark set runs (no `args`) or `HOTCODE_OTP=1`, unless `HOTCODE_OTP=0`.
fn run_otp(args: &[String], target: &Path) -> Otp {
    let asked = std::env::var("HOTCODE_OTP");
    match asked.as_deref() {
        Ok("0") => return Otp::NotMeasured("HOTCODE_OTP=0".to_owned()),
        Ok("1") => {}
        _ if !args.is_empty() => {
            return Otp::NotMeasured(
                "not run with a benchmark selection; HOTCODE_OTP=1 runs it too".to_owned(),
            );
        }
        _ => {}
    }
    let escript = match crate::tools::escript() {
        Ok(path) => path,
        // Asked for by name: no Erlang is a failure, not a quiet null.
        Err(why) if asked.as_deref() == Ok("1") => {
            return Otp::Failed(format!("HOTCODE_OTP=1 but {why}"));
        }
        Err(why) => {
            eprintln!("xtask: OTP side by side not measured: {why}");
            return Otp::NotMeasured(why);
        }
    };
    let out = target.join("bench-results/otp.json");
    if let Some(dir) = out.parent()
        && let Err(e) = fs::create_dir_all(dir)
    {
        return Otp::Failed(format!("creating {}: {e}", dir.display()));
    }
    let mut script = std::process::Command::new(escript);
    script.arg(project::root().join("xtask/otp/bench.erl")).arg(&out);
    match cmd::status(&mut script) {
        Ok(status) if status.success() => Otp::Ran,
        Ok(status) => Otp::Failed(format!("xtask/otp/bench.erl exited with {status}")),
        Err(e) => Otp::Failed(format!("{e:#}")),
    }
}

/// Where the raw results are, and the time before which a result file is stale.
struct Sources {
    target: PathBuf,
    since: SystemTime,
}

impl Sources {
    /// The JSON object in `path`, if the file was written during this run.
    fn fresh_json(&self, path: &Path) -> Option<Map<String, Value>> {
        let modified = fs::metadata(path).and_then(|m| m.modified()).ok()?;
        if modified < self.since {
            return None;
        }
        match serde_json::from_str(&fs::read_to_string(path).ok()?) {
            Ok(Value::Object(map)) => Some(map),
            _ => {
                eprintln!("xtask: {} is not a JSON object; ignoring it", path.display());
                None
            }
        }
    }

    /// Criterion's median time per iteration of `group/bench`, in ns. The median rather
    /// than the mean: on a shared 2-core machine an occasional sample is stretched by
    /// another process, and the median ignores it.
    fn criterion_ns(&self, group: &str, bench: &str) -> Option<f64> {
        let path = self.target.join("criterion").join(group).join(bench).join("new/estimates.json");
        self.fresh_json(&path)?.get("median")?.get("point_estimate")?.as_f64()
    }

    /// Field `key` of `target/bench-results/<scenario>.json`.
    fn scenario(&self, scenario: &str, key: &str) -> Option<f64> {
        let path = self.target.join("bench-results").join(format!("{scenario}.json"));
        self.fresh_json(&path)?.get(key)?.as_f64()
    }
}

/// A SPEC §10 target.
#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
    Below(f64),
    Exactly(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(t) => value <= t,
            Target::AtLeast(t) => value >= t,
            Target::Below(t) => value < t,
            Target::Exactly(t) => value == t,
        }
    }

    fn show(self) -> String {
        match self {
            Target::AtMost(t) => format!("<= {t}"),
            Target::AtLeast(t) => format!(">= {t}"),
            Target::Below(t) => format!("< {t}"),
            Target::Exactly(t) => format!("= {t}"),
        }
    }
}

/// One line of the summary.
struct Row {
    key: &'static str,
    value: Option<f64>,
    target: Option<Target>,
    /// Measured by (or against) the OTP script: may be `null` when OTP was not measured.
    needs_otp: bool,
}

/// Every summary key, in order, with its value (rounded for people: sub-ns noise and
/// fractions of a microsecond mean nothing here) and its target.
///
/// The absolute call times are criterion's; the call-path ratios come from the
/// benchmark's paired measurement (`call_paired.json`), which runs both sides of each ratio
/// in alternating batches. This machine changes speed by about 1.6 times every few seconds,
/// so a ratio of two criterion results measured seconds apart can be off by that factor
/// either way (the ratios of the criterion medians are printed under the table, for
/// comparison).
fn summarize(src: &Sources) -> Vec<Row> {
    let one = |bench| src.criterion_ns("call_1thread", bench);
    let paired = |key: &str| src.scenario("call_paired", key);
    let round = |v: Option<f64>, places: i32| {
        let scale = 10f64.powi(places);
        v.map(|v| (v * scale).round() / scale)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let rt = |key| src.scenario("runtime", key);
    let up = |key| src.scenario("upgrade", key);
    let up1k = |key| src.scenario("upgrade_1k", key);
    let up10k = |key| src.scenario("upgrade_10k", key);
    let otp = |key| src.scenario("otp", key);
    let soak = |key| src.scenario("soak", key);
    let restart = |key| src.scenario("restart", key);
    let fleet = |key| src.scenario("fleet", key);
    let row = |key, value, target| Row { key, value, target, needs_otp: false };
    let otp_row = |key, value, target| Row { key, value, target, needs_otp: true };
    vec![
        row("call_ns.bare_fn_ptr", round(one("bare_fn_ptr"), 2), None),
        row("call_ns.shim_fn_ptr", round(one("shim_fn_ptr"), 2), None),
        row("call_ns.handle", round(one("handle"), 2), None),
        row("call_ns.lock_and_lookup_per_call", round(one("lock_and_lookup_per_call"), 2), None),
        row("call_ns.arc_clone_per_call", round(one("arc_clone_per_call"), 2), None),
        // The real hot-lib-reloader crate calling the same add (see benches/call_path.rs).
        row("call_ns.hot_lib_reloader", round(one("hot_lib_reloader"), 2), None),
        // Throughput loop: independent calls.
        row(
            "call_ratio_handle_vs_bare",
            round(paired("ratio_handle_vs_bare"), 3),
            Some(Target::AtMost(1.5)),
        ),
        // Latency chain: each call takes the previous result.
        row(
            "call_ratio_handle_vs_bare_chain",
            round(paired("ratio_handle_vs_bare_chain"), 3),
            None,
        ),
        row("call_ratio_handle_vs_shim", round(paired("ratio_handle_vs_shim"), 3), None),
        // hot-lib-reloader's throughput loop over the bare pointer's, paired like the handle's.
        row(
            "call_ratio_hot_lib_reloader_vs_bare",
            round(paired("ratio_hot_lib_reloader_vs_bare"), 3),
            None,
        ),
        // Per-thread rate with two threads over the one-thread rate: t1 / t2.
        row(
            "two_thread_scaling",
            round(paired("two_thread_scaling"), 3),
            Some(Target::AtLeast(0.95)),
        ),
        row("runtime.calls_per_s_100", round(rt("calls_per_s_100"), -2), None),
        otp_row("otp.calls_per_s_100", round(otp("calls_per_s_100"), -2), None),
        otp_row(
            "runtime.calls_vs_otp",
            round(ratio(rt("calls_per_s_100"), otp("calls_per_s_100")), 3),
            Some(Target::AtLeast(1.0)),
        ),
        row(
            "runtime.processes_measured",
            rt("processes_measured"),
            Some(Target::AtLeast(100_000.0)),
        ),
        row("runtime.spawn_us_median", round(rt("spawn_us_median"), 1), Some(Target::AtMost(3.0))),
        otp_row("otp.spawn_us_median", round(otp("spawn_us_median"), 1), None),
        row(
            "runtime.rss_bytes_per_process",
            round(rt("rss_bytes_per_process"), 0),
            Some(Target::AtMost(2048.0)),
        ),
        otp_row("otp.rss_bytes_per_process", round(otp("rss_bytes_per_process"), 0), None),
        otp_row("otp.memory_bytes_per_process", round(otp("memory_bytes_per_process"), 0), None),
        otp_row("otp.processes_measured", otp("processes_measured"), None),
        row("runtime.spawn_call_stop_s", round(rt("spawn_call_stop_s"), 2), None),
        otp_row("otp.spawn_call_stop_s", round(otp("spawn_call_stop_s"), 2), None),
        row("upgrade.load_ms_median", round(up("load_ms_median"), 3), Some(Target::AtMost(1.0))),
        row("upgrade.suspend_window_us_p50", round(up("suspend_window_us_p50"), 1), None),
        row(
            "upgrade.suspend_window_us_p99",
            round(up("suspend_window_us_p99"), 1),
            Some(Target::AtMost(500.0)),
        ),
        otp_row("otp.upgrade.window_ms_p50", round(otp("upgrade.window_ms_p50"), 3), None),
        otp_row("otp.upgrade.window_ms_p99", round(otp("upgrade.window_ms_p99"), 3), None),
        row(
            "upgrade.callers_rate_during_vs_steady",
            round(up("callers_rate_during_vs_steady"), 3),
            Some(Target::AtLeast(0.5)),
        ),
        row(
            "upgrade.calls_per_cycle_during_window",
            round(up("calls_per_cycle_during_window"), 1),
            None,
        ),
        row("upgrade.steady_calls_per_window", round(up("steady_calls_per_window"), 1), None),
        otp_row(
            "otp.upgrade.callers_rate_during_vs_steady",
            round(otp("upgrade.callers_rate_during_vs_steady"), 3),
            None,
        ),
        otp_row(
            "otp.upgrade.calls_per_cycle_during_window",
            round(otp("upgrade.calls_per_cycle_during_window"), 1),
            None,
        ),
        otp_row(
            "otp.upgrade.steady_calls_per_window",
            round(otp("upgrade.steady_calls_per_window"), 1),
            None,
        ),
        // hotcode's window over OTP's for the same work: below 1, hotcode is ahead.
        otp_row(
            "upgrade.window_p99_vs_otp",
            round(
                ratio(up("suspend_window_us_p99"), otp("upgrade.window_ms_p99").map(|ms| ms * 1e3)),
                3,
            ),
            None,
        ),
        row("upgrade_1k.window_ms_p50", round(up1k("window_ms_p50"), 2), None),
        row("upgrade_1k.window_ms_p99", round(up1k("window_ms_p99"), 2), None),
        otp_row("otp.upgrade_1k.window_ms_p50", round(otp("upgrade_1k.window_ms_p50"), 2), None),
        otp_row("otp.upgrade_1k.window_ms_p99", round(otp("upgrade_1k.window_ms_p99"), 2), None),
        row(
            "upgrade_1k.callers_rate_during_vs_steady",
            round(up1k("callers_rate_during_vs_steady"), 3),
            None,
        ),
        otp_row(
            "otp.upgrade_1k.callers_rate_during_vs_steady",
            round(otp("upgrade_1k.callers_rate_during_vs_steady"), 3),
            None,
        ),
        otp_row(
            "upgrade_1k.window_p99_vs_otp",
            round(ratio(up1k("window_ms_p99"), otp("upgrade_1k.window_ms_p99")), 3),
            None,
        ),
        row("upgrade_10k.window_ms_p50", round(up10k("window_ms_p50"), 1), None),
        row(
            "upgrade_10k.window_ms_p99",
            round(up10k("window_ms_p99"), 1),
            Some(Target::AtMost(25.0)),
        ),
        otp_row("otp.upgrade_10k.window_ms_p50", round(otp("upgrade_10k.window_ms_p50"), 1), None),
        otp_row("otp.upgrade_10k.window_ms_p99", round(otp("upgrade_10k.window_ms_p99"), 1), None),
        row(
            "upgrade_10k.callers_rate_during_vs_steady",
            round(up10k("callers_rate_during_vs_steady"), 3),
            None,
        ),
        otp_row(
            "otp.upgrade_10k.callers_rate_during_vs_steady",
            round(otp("upgrade_10k.callers_rate_during_vs_steady"), 3),
            None,
        ),
        otp_row(
            "upgrade_10k.window_p99_vs_otp",
            round(ratio(up10k("window_ms_p99"), otp("upgrade_10k.window_ms_p99")), 3),
            None,
        ),
        row("soak.cycles", round(soak("cycles"), 0), None),
        row("soak.failed_calls", round(soak("failed_calls"), 0), Some(Target::Exactly(0.0))),
        row("soak.rss_growth_kib", round(soak("rss_growth_kib"), 0), Some(Target::Below(2048.0))),
        row(
            "soak.mapped_plugin_files_growth",
            round(soak("mapped_plugin_files_growth"), 0),
            Some(Target::Exactly(0.0)),
        ),
        row("soak.fd_growth", round(soak("fd_growth"), 0), Some(Target::Exactly(0.0))),
        row("restart.cycles", round(restart("cycles"), 0), Some(Target::AtLeast(20.0))),
        row(
            "restart.failed_requests",
            round(restart("failed_requests"), 0),
            Some(Target::Exactly(0.0)),
        ),
        row(
            "restart.refused_connections",
            round(restart("refused_connections"), 0),
            Some(Target::Exactly(0.0)),
        ),
        row("restart.handover_ms_median", round(restart("handover_ms_median"), 1), None),
        row("restart.unavailable_ms_max", round(restart("unavailable_ms_max"), 1), None),
        row("fleet.nodes", round(fleet("nodes"), 0), None),
        row("fleet.sync_release_ms_p99", round(fleet("sync_release_ms_p99"), 2), None),
        row("fleet.node_loss_detect_ms", round(fleet("node_loss_detect_ms"), 0), None),
        row("fleet.rollout_s", round(fleet("rollout_s"), 2), None),
        row(
            "fleet.failed_requests",
            round(fleet("failed_requests"), 0),
            Some(Target::Exactly(0.0)),
        ),
    ]
}

/// The flat JSON object, keys in table order: every key, a number, or `null` when it was
/// not measured in this run.
fn summary_json(rows: &[Row]) -> String {
    let fields: Vec<String> = rows
        .iter()
        .map(|r| {
            let value = match r.value {
                // Whole numbers as integers: counts read better as `0` than `0.0`.
                Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => Value::from(v as i64),
                Some(v) => Value::from(v),
                None => Value::Null,
            };
            format!("  {}: {value}", Value::from(r.key))
        })
        .collect();
    format!("{{\n{}\n}}\n", fields.join(",\n"))
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.key.len()).max().unwrap_or(0);
    println!();
    println!("{:<width$}  {:>12}  {:>10}  met?", "key", "value", "target");
    println!("{}", "-".repeat(width + 34));
    let (mut met, mut targets, mut unmeasured) = (0, 0, 0);
    for row in rows {
        let value = row.value.map_or_else(|| "missing".to_owned(), |v| v.to_string());
        let target = row.target.map_or_else(String::new, Target::show);
        let verdict = match (row.target, row.value) {
            (None, _) => "",
            (Some(_), None) => {
                targets += 1;
                unmeasured += 1;
                "?"
            }
            (Some(t), Some(v)) => {
                targets += 1;
                if t.met(v) {
                    met += 1;
                    "yes"
                } else {
                    "NO"
                }
            }
        };
        println!("{:<width$}  {value:>12}  {target:>10}  {verdict}", row.key);
    }
    println!();
    let unmeasured = if unmeasured > 0 {
        format!(" ({unmeasured} not measured in this run)")
    } else {
        String::new()
    };
    println!("{met} of {targets} targets met{unmeasured}");
}

/// Context for reading the table: the two-thread numbers, the spread of the paired ratios
/// and the ratios criterion's medians would give, where an upgrade's time went, and how
/// long the scenarios took (from the same result files; not part of the summary).
fn print_details(src: &Sources) {
    let mut lines = Vec::new();
    for bench in [
        "bare_fn_ptr",
        "shim_fn_ptr",
        "handle",
        "lock_and_lookup_per_call",
        "arc_clone_per_call",
        "hot_lib_reloader",
    ] {
        if let Some(ns) = src.criterion_ns("call_2thread", bench) {
            lines.push(format!("criterion call_2thread/{bench}: {ns:.2} ns per call per thread"));
        }
    }
    let paired = |key: &str| src.scenario("call_paired", key);
    for ratio in [
        "ratio_handle_vs_bare",
        "ratio_handle_vs_bare_chain",
        "ratio_handle_vs_shim",
        "ratio_hot_lib_reloader_vs_bare",
    ] {
        if let (Some(p10), Some(p90)) =
            (paired(&format!("{ratio}_p10")), paired(&format!("{ratio}_p90")))
        {
            lines.push(format!("paired call_{ratio} p10..p90: {p10:.2}..{p90:.2}"));
        }
    }
    if let (Some(bare), Some(handle)) =
        (paired("ns_median.bare_chain"), paired("ns_median.handle_chain"))
    {
        lines
            .push(format!("paired latency chain, ns per call: bare {bare:.2}, handle {handle:.2}"));
    }
    if let (Some(p10), Some(p90)) =
        (paired("two_thread_scaling_p10"), paired("two_thread_scaling_p90"))
    {
        lines.push(format!("paired two_thread_scaling p10..p90: {p10:.2}..{p90:.2}"));
    }
    if let Some(bare) = paired("bare_two_thread_scaling") {
        lines
            .push(format!("paired two_thread_scaling of the bare fn pointer (control): {bare:.3}"));
    }
    let crit = |group, bench| src.criterion_ns(group, bench);
    if let (Some(h), Some(b)) =
        (crit("call_1thread", "handle"), crit("call_1thread", "bare_fn_ptr"))
    {
        lines.push(format!("criterion medians: handle / bare {:.3}", h / b));
    }
    if let (Some(h1), Some(h2)) = (crit("call_1thread", "handle"), crit("call_2thread", "handle")) {
        lines.push(format!("criterion medians: handle 1-thread / 2-thread {:.3}", h1 / h2));
    }
    let phases = ["load_object_code", "suspend_many", "load", "change_code_many", "resume"];
    for scenario in ["upgrade", "upgrade_1k", "upgrade_10k"] {
        let medians: Vec<String> = phases
            .iter()
            .filter_map(|p| {
                let v = src.scenario(scenario, &format!("phase_us_median.{p}"))?;
                Some(format!("{p} {v:.0}"))
            })
            .collect();
        if !medians.is_empty() {
            lines.push(format!("{scenario} phases, median us: {}", medians.join(", ")));
        }
        let during = src.scenario(scenario, "calls_per_cycle_during_window");
        let steady = src.scenario(scenario, "steady_calls_per_window");
        if let (Some(during), Some(steady)) = (during, steady) {
            lines.push(format!(
                "{scenario}: callers completed {during:.1} calls per window, {steady:.1} at their steady rate"
            ));
        }
    }
    if let (Some(t), Some(n)) = (
        src.scenario("runtime", "threads_per_process"),
        src.scenario("runtime", "processes_measured"),
    ) {
        lines.push(format!("runtime: {t:.2} OS threads per process; {n} idle processes measured"));
    }
    for scenario in
        ["call_paired", "runtime", "upgrade", "upgrade_1k", "upgrade_10k", "otp", "soak"]
    {
        if let Some(s) = src.scenario(scenario, "duration_s") {
            lines.push(format!("{scenario}: measured part took {s:.1} s"));
        }
    }
    if !lines.is_empty() {
        println!();
        for line in lines {
            println!("  {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_flat_ordered_numbers_or_null() {
        let rows = [
            Row { key: "b.count", value: Some(3.0), target: None, needs_otp: false },
            Row {
                key: "a.ratio",
                value: Some(1.25),
                target: Some(Target::AtMost(1.5)),
                needs_otp: false,
            },
            Row { key: "c.missing", value: None, target: None, needs_otp: true },
        ];
        assert_eq!(
            summary_json(&rows),
            "{\n  \"b.count\": 3,\n  \"a.ratio\": 1.25,\n  \"c.missing\": null\n}\n"
        );
    }

    #[test]
    fn otp_keys_may_be_null_only_when_otp_did_not_run() {
        let rows = [
            Row { key: "runtime.x", value: None, target: None, needs_otp: false },
            Row { key: "otp.x", value: None, target: None, needs_otp: true },
            Row { key: "otp.y", value: Some(1.0), target: None, needs_otp: true },
        ];
        assert_eq!(missing(&rows, true), ["runtime.x", "otp.x"]);
        assert_eq!(missing(&rows, false), ["runtime.x"]);
    }

    #[test]
    fn every_otp_key_is_marked_as_needing_otp() {
        let src = Sources { target: std::env::temp_dir(), since: SystemTime::now() };
        for row in summarize(&src) {
            let otp = row.key.starts_with("otp.") || row.key.ends_with("_vs_otp");
            assert_eq!(otp, row.needs_otp, "{}", row.key);
        }
    }

    #[test]
    fn targets_compare_the_way_the_spec_says() {
        assert!(Target::AtMost(1.5).met(1.5) && !Target::AtMost(1.5).met(1.51));
        assert!(Target::AtLeast(0.9).met(0.9) && !Target::AtLeast(0.9).met(0.89));
        assert!(Target::Below(2048.0).met(-10.0) && !Target::Below(2048.0).met(2048.0));
        assert!(Target::Exactly(0.0).met(0.0) && !Target::Exactly(0.0).met(1.0));
    }

    #[test]
    fn reads_fresh_results_and_ignores_stale_ones() {
        let target = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let dir = target.join("criterion/call_1thread/handle/new");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("estimates.json"), r#"{"median":{"point_estimate":9.5}}"#).unwrap();
        let results = target.join("bench-results");
        fs::create_dir_all(&results).unwrap();
        fs::write(results.join("soak.json"), r#"{"cycles": 10}"#).unwrap();

        let fresh = Sources { target: target.clone(), since: SystemTime::UNIX_EPOCH };
        assert_eq!(fresh.criterion_ns("call_1thread", "handle"), Some(9.5));
        assert_eq!(fresh.scenario("soak", "cycles"), Some(10.0));
        assert_eq!(fresh.scenario("upgrade", "cycles"), None);

        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        let stale = Sources { target: target.clone(), since: later };
        assert_eq!(stale.criterion_ns("call_1thread", "handle"), None);
        assert_eq!(stale.scenario("soak", "cycles"), None);
        fs::remove_dir_all(&target).unwrap();
    }
}
