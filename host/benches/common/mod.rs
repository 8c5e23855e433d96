//! What the benchmarks share: where the plugins are, where
//! results go, how they are written, and how `cargo bench`'s arguments select them.
//!
//! These benchmarks are plain binaries (`harness = false`) rather than criterion
//! benchmarks because each measures a whole scenario once (percentiles over its own
//! cycles, growth between two points in time), which criterion's repeated sampling of one
//! routine does not fit. `cargo xtask bench` merges their JSON files with criterion's
//! estimates into `target/bench-summary.json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A release-built plugin, `lib<name>.so`, from `HOTCODE_PLUGIN_DIR` (set by
/// `cargo xtask bench`) or else `target/release`. Benchmarks never build anything: a
/// missing file means the plugins were not built.
pub fn plugin(name: &str) -> PathBuf {
    let dir = std::env::var_os("HOTCODE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release"));
    let path = dir.join(format!("lib{name}.so"));
    assert!(path.exists(), "{} missing: run `cargo xtask bench`", path.display());
    path
}

/// The workspace root (this crate's parent directory), as cargo names it when it runs the
/// benchmark; the compiled-in path only for a binary run by hand (cargo does not rebuild a
/// binary whose checkout was copied with its `target/`, so that path may be another
/// checkout's).
pub fn workspace() -> PathBuf {
    let host = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    host.parent().map_or_else(|| host.clone(), Path::to_path_buf)
}

/// `<target>/bench-results`, where `cargo xtask bench` looks for the scenario results:
/// `$CARGO_TARGET_DIR` if set (a relative one is taken from the workspace root, where
/// xtask runs cargo), else the workspace's `target`.
pub fn results_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace().join(dir) }
        }
        _ => workspace().join("target"),
    };
    target.join("bench-results")
}

/// How `cargo bench` ran this binary.
pub enum Mode {
    /// `cargo bench`: the full scenario, results written.
    Bench,
    /// `cargo test --benches` (no `--bench` flag): a short smoke run, nothing written.
    Smoke,
    /// A benchmark filter that does not select this benchmark: do nothing.
    Skip,
}

/// Criterion's options that take a value (the value is not a filter).
const OPTIONS_WITH_VALUES: &[&str] = &[
    "-b",
    "-c",
    "-s",
    "--baseline",
    "--baseline-lenient",
    "--color",
    "--confidence-level",
    "--format",
    "--load-baseline",
    "--measurement-time",
    "--noise-threshold",
    "--nresamples",
    "--output-format",
    "--plotting-backend",
    "--profile-time",
    "--sample-size",
    "--save-baseline",
    "--significance-level",
    "--warm-up-time",
];

/// Reads the arguments the way criterion does: `--bench` means a real run, and any
/// positional argument is a filter that must be part of `name` for this benchmark to run.
pub fn mode(name: &str) -> Mode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if OPTIONS_WITH_VALUES.contains(&arg.as_str()) {
            rest.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        return Mode::Skip;
    }
    if args.iter().any(|a| a == "--bench") { Mode::Bench } else { Mode::Smoke }
}

/// Writes `fields` as one flat JSON object of numbers to `<results_dir>/<name>.json`.
pub fn write_results(name: &str, fields: &[(&str, f64)]) -> PathBuf {
    let dir = results_dir();
    std::fs::create_dir_all(&dir).expect("create the bench-results directory");
    let body: Vec<String> = fields
        .iter()
        .map(|(key, value)| {
            assert!(value.is_finite(), "{key} is not a finite number: {value}");
            format!("  \"{key}\": {value}")
        })
        .collect();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, format!("{{\n{}\n}}\n", body.join(",\n"))).expect("write results");
    path
}

/// The `p`-quantile (0 < p ≤ 1) of `sorted` by nearest rank: the smallest sample with at
/// least a fraction `p` of the samples at or below it.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    assert!(!sorted.is_empty(), "no samples");
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds, as a float.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
