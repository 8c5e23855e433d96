//! The README's guide, "Your own upgradeable service", run as written: its `sh` blocks in
//! order, in one shell, in an empty directory, with `hotcode` on the `PATH`. A line ending
//! in `# → X` must print `X` (white space around it aside). So the guide cannot drift from
//! what the tools do: scaffold, build, assemble, boot, call, upgrade, call, downgrade, call,
//! and nothing of the node left behind.

use std::path::Path;
use std::process::Command;

use crate::cli::bin;
use crate::fixtures;

/// The section's title in README.md.
const SECTION: &str = "## Your own upgradeable service";

/// The guide's `sh` blocks, in order, as one script whose checked lines assert.
fn script(readme: &str) -> String {
    let start = readme.find(SECTION).expect("the guide's section in README.md");
    let rest = &readme[start + SECTION.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut out = String::new();
    let mut in_block = false;
    let mut heredoc: Option<String> = None;
    let mut checks = 0;
    for line in section.lines() {
        if !in_block {
            in_block = line.trim_end() == "```sh";
            continue;
        }
        if heredoc.is_none() && line.trim_end() == "```" {
            in_block = false;
            continue;
        }
        if let Some(end) = &heredoc {
            if line == end {
                heredoc = None;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if let Some(i) = line.find("<<'") {
            let tag = &line[i + 3..];
            heredoc = tag.find('\'').map(|j| tag[..j].to_owned());
        }
        match line.split_once("# → ") {
            Some((command, expected)) => {
                checks += 1;
                let (command, expected) = (command.trim(), expected.trim());
                let quoted = expected.replace('\'', r"'\''");
                let shown = command.replace('\'', r"'\''");
                out.push_str(&format!(
                    "got=$({command})\nif [ \"$(printf '%s' \"$got\" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')\" != '{quoted}' ]; then\n  echo 'guide check failed: {shown}' >&2; echo \"  expected: {quoted}\" >&2; echo \"  got: $got\" >&2; exit 1\nfi\n"
                ));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(checks >= 6, "the guide should check what it shows; found {checks} checks");
    out
}

#[test]
fn the_readme_guide_runs_as_written() {
    let readme =
        std::fs::read_to_string(fixtures::root().join("README.md")).expect("read README.md");
    let body = script(&readme);
    let work = tempfile::Builder::new().prefix("hotcode-guide-").tempdir().expect("work dir");
    let tmp = tempfile::Builder::new().prefix("hotcode-guide-tmp-").tempdir().expect("tmp dir");
    let prelude = "set -euo pipefail\n\
                   trap 'echo \"guide: failed at line $LINENO: $BASH_COMMAND\" >&2' ERR\n\
                   trap 'if [ -n \"${NODE:-}\" ]; then kill \"$NODE\" 2>/dev/null || true; fi' EXIT\n";
    let path = format!(
        "{}:{}",
        bin().parent().expect("the binary's directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{prelude}{body}"))
        .current_dir(work.path())
        .env("PATH", path)
        .env("HOTCODE_SRC", fixtures::root())
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "info")
        // The guide's builds are the user's: not this test run's target directory.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run bash");
    let log = std::fs::read_to_string(work.path().join("kv/node.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the guide failed ({}):\n--- stderr\n{}\n--- stdout\n{}\n--- node log\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    // The node was stopped with SIGTERM: nothing of it is left in its TMPDIR either.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("read TMPDIR").collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    assert!(log.contains("state migrated from vsn 1 to 2"), "{log}");
    assert!(Path::new(&work.path().join("kv/node/run/last-exit")).exists());
}

#[test]
fn checked_lines_become_assertions_and_heredocs_stay_verbatim() {
    let readme = format!(
        "{SECTION}\n\ntext\n\n```sh\necho hi   # → hi\ncat > f <<'EOF'\nx # → y\nEOF\n```\n\n## Next\n```sh\nnot this\n```\n"
    );
    // Fewer than six checks: the assertion on the count fires; build the script by hand.
    let result = std::panic::catch_unwind(|| script(&readme));
    assert!(result.is_err(), "a guide with one check is refused");
    let many = readme.replace("echo hi   # → hi\n", &"echo hi   # → hi\n".repeat(6));
    let s = script(&many);
    assert!(s.contains("got=$(echo hi)"), "{s}");
    assert!(s.contains("x # → y\nEOF\n"), "the heredoc is verbatim: {s}");
    assert!(!s.contains("not this"), "only the guide's section: {s}");
}
