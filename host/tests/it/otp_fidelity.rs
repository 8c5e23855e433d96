//! Where hotcode behaves as Erlang/OTP does, checked against what OTP 25 was seen to do,
//! and where it chooses not to (those tests and case files say `differs_from_otp`, and the
//! README's known limits say why).
//!
//! Most of it is data: `tests/data/otp_cases/`, one file per behaviour, so that a new
//! difference found against OTP is one file to add.
//!
//! - `terms/*.term`: term files read as `file:consult/1` reads them;
//! - `check/*.relup`, `*.app`, `*.rel`: release files read and checked as the release
//!   handler does (`hotcode check` for a relup);
//! - `make_relup/*.scenario`: two releases and their appups, and the scripts that
//!   `systools:make_relup/4` writes for them (`make_relup/systools.escript` prints them
//!   from OTP), which `hotcode make-relup` must write too.
//!
//! A term or check case starts (or, for a file whose first two lines must say its
//! encoding, ends) with `%% otp: ` lines saying what OTP does, citing the module or manual
//! page, and one `%% expect: ` line: `ok` followed by the terms as hotcode prints them
//! (for a relup, `.app` or `.rel`: `ok` alone), or `LINE:COL: MESSAGE-PART` for a refusal.
//! `HOTCODE_BLESS=1` rewrites the expectations to what hotcode does now; the `otp:` lines
//! are the reference to review them against.

use std::path::{Path, PathBuf};
use std::process::Command;

use hotcode::release::files::{AppSpec, RelSpec};
use hotcode::release::terms::{RawTerm, Spanned, read_terms};
use hotcode::release::{Direction, Instruction, make_relup, read_relup};
use plugin_api::Term;

fn cases_dir(kind: &str) -> PathBuf {
    let host = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    host.join("tests/data/otp_cases").join(kind)
}

fn files(kind: &str, extensions: &[&str]) -> Vec<PathBuf> {
    let dir = cases_dir(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e))
        })
        .collect();
    files.sort();
    files
}

/// What hotcode does with a case file: `ok ...` or `LINE:COL: message`.
fn outcome(path: &Path) -> String {
    let error = |e: hotcode::release::ParseError| match e.pos {
        Some(pos) => format!("{pos}: {}", e.kind),
        None => format!("?: {}", e.kind),
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("term") => match read_terms(path) {
            Ok(terms) => {
                let shown: Vec<String> =
                    terms.iter().map(|t| t.value.to_term().to_string()).collect();
                format!("ok {}", shown.join(" "))
            }
            Err(e) => error(e),
        },
        Some("relup") => match read_relup(path).and_then(|r| r.check(path).map(|()| r)) {
            Ok(_) => "ok".to_owned(),
            Err(e) => error(e),
        },
        Some("app") => AppSpec::read(path).map_or_else(error, |_| "ok".to_owned()),
        Some("rel") => RelSpec::read(path).map_or_else(error, |_| "ok".to_owned()),
        other => panic!("{}: no reader for {other:?}", path.display()),
    }
}

/// Runs every case of `kind` against its `%% expect:` line.
fn run_cases(kind: &str, extensions: &[&str]) {
    let bless = std::env::var_os("HOTCODE_BLESS").is_some();
    let mut failures = Vec::new();
    let cases = files(kind, extensions);
    assert!(cases.len() >= 5, "too few cases in {kind}: {cases:?}");
    for path in cases {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(&path).expect("readable case");
        // A case that is not UTF-8 is Latin-1, so that its lines read right.
        let text = String::from_utf8(bytes.clone())
            .unwrap_or_else(|_| bytes.iter().map(|&b| char::from(b)).collect());
        let seen = outcome(&path);
        if !text.lines().any(|line| line.starts_with("%% otp: ")) {
            failures.push(format!("{name}: no `%% otp: ` line saying what OTP does"));
        }
        let Some(expected) = text.lines().find_map(|line| line.strip_prefix("%% expect: ")) else {
            failures.push(format!("{name}: no `%% expect: ` line"));
            continue;
        };
        if bless && std::str::from_utf8(&bytes).is_ok() {
            let blessed =
                text.replacen(&format!("%% expect: {expected}"), &format!("%% expect: {seen}"), 1);
            std::fs::write(&path, blessed).expect("bless");
            continue;
        }
        let matches = match expected.strip_prefix("ok") {
            Some(_) => seen == expected,
            None => {
                let (at, message) = expected.split_once(": ").unwrap_or((expected, ""));
                seen.split_once(": ").is_some_and(|(pos, rest)| pos == at && rest.contains(message))
            }
        };
        if !matches {
            failures.push(format!("{name}: expected {expected}\n    but got {seen}"));
        }
        let refused = !seen.starts_with("ok");
        if name.contains("refused") != refused {
            failures.push(format!("{name}: the name says refused or not, but hotcode says {seen}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Term syntax as `file:consult/1` reads it (issue 14, item 6; strings, item 3).
#[test]
fn term_files_read_as_file_consult_reads_them() {
    run_cases("terms", &["term"]);
}

/// Release files checked as the release handler checks them (items 3 and 7).
#[test]
fn release_files_check_as_otp_checks_them() {
    run_cases("check", &["relup", "app", "rel"]);
}

/// A `.scenario`: its `{rel, Vsn, Apps}`, `{app, Name, Vsn, Modules, Uses[, Includes]}`,
/// `{appup, App, Vsn, Appup}`, `{up, Script}` and `{down, Script}` terms.
struct Scenario {
    rels: Vec<(String, Term)>,
    apps: Vec<(String, String, Term, Term, Term)>,
    appups: Vec<(String, String, Term)>,
    up: Term,
    down: Term,
}

/// The text of a string term, in either form (written with the two variants only, so that
/// this file also builds against hotcode before strings were lists, to show it failing).
fn text_of(term: &Term) -> Option<String> {
    match term {
        Term::Str(text) => Some(text.clone()),
        Term::List(items) => items
            .iter()
            .map(|i| i.as_int().and_then(|c| u32::try_from(c).ok()).and_then(char::from_u32))
            .collect(),
        _ => None,
    }
}

/// The elements of a list term (a string's are its code points).
fn elements_of(term: &Term) -> Vec<Term> {
    match term {
        Term::List(items) => items.clone(),
        Term::Str(text) => text.chars().map(|c| Term::Int(i64::from(u32::from(c)))).collect(),
        _ => panic!("expected a list, found {term}"),
    }
}

fn scenario(path: &Path) -> Scenario {
    let terms: Vec<Spanned<RawTerm>> = read_terms(path).unwrap_or_else(|e| panic!("{e}"));
    let mut scenario = Scenario {
        rels: Vec::new(),
        apps: Vec::new(),
        appups: Vec::new(),
        up: Term::list([]),
        down: Term::list([]),
    };
    let text = |t: &Term| text_of(t).unwrap_or_else(|| t.to_string());
    for term in terms {
        let term = term.value.to_term();
        let items = term.as_tuple().unwrap_or_else(|| panic!("{term}"));
        match items {
            [tag, vsn, apps] if tag.is_atom("rel") => scenario.rels.push((text(vsn), apps.clone())),
            [tag, name, vsn, mods, uses] if tag.is_atom("app") => scenario.apps.push((
                text(name),
                text(vsn),
                mods.clone(),
                uses.clone(),
                Term::list([]),
            )),
            [tag, name, vsn, mods, uses, incs] if tag.is_atom("app") => scenario.apps.push((
                text(name),
                text(vsn),
                mods.clone(),
                uses.clone(),
                incs.clone(),
            )),
            [tag, app, vsn, appup] if tag.is_atom("appup") => {
                scenario.appups.push((text(app), text(vsn), appup.clone()))
            }
            [tag, script] if tag.is_atom("up") => scenario.up = script.clone(),
            [tag, script] if tag.is_atom("down") => scenario.down = script.clone(),
            _ => panic!("{}: unknown scenario term {term}", path.display()),
        }
    }
    scenario
}

/// A release root holding the scenario's two releases, "1" permanent and "2" unpacked.
fn scenario_root(scenario: &Scenario) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let write = |path: PathBuf, text: String| {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    for (name, vsn, mods, uses, incs) in &scenario.apps {
        write(
            root.path().join(format!("lib/{name}-{vsn}/{name}.app")),
            format!(
                "{{application, {name}, [{{vsn, \"{vsn}\"}}, {{modules, {mods}}}, \
                 {{applications, {uses}}}, {{included_applications, {incs}}}]}}.\n"
            ),
        );
    }
    for (app, vsn, appup) in &scenario.appups {
        write(root.path().join(format!("lib/{app}-{vsn}/{app}.appup")), format!("{appup}.\n"));
    }
    let mut releases = Vec::new();
    for (index, (vsn, apps)) in scenario.rels.iter().enumerate() {
        write(
            root.path().join(format!("releases/{vsn}/r.rel")),
            format!("{{release, {{\"r\", \"{vsn}\"}}, {{hotcode, \"0.1.0\"}}, {apps}}}.\n"),
        );
        let libs: Vec<String> = elements_of(apps)
            .iter()
            .map(|app| {
                let items = app.as_tuple().expect("an application tuple");
                let (name, vsn) = (items[0].to_string(), text_of(&items[1]).expect("a vsn"));
                format!("{{{name}, \"{vsn}\", \"lib/{name}-{vsn}\"}}")
            })
            .collect();
        let status = if index == 0 { "permanent" } else { "unpacked" };
        releases.push(format!(
            "{{release, \"r\", \"{vsn}\", \"0.1.0\", [{}], {status}}}",
            libs.join(", ")
        ));
    }
    write(root.path().join("releases/RELEASES"), format!("[{}].\n", releases.join(",\n ")));
    root
}

/// `hotcode make-relup` writes what `systools:make_relup/4` writes (items 1, 2 and 5): the
/// added applications' scripts first, then the appup scripts in boot order, then the
/// removed applications' scripts, with the `.rel`'s start types.
#[test]
fn make_relup_scenarios_write_systools_scripts() {
    let mut failures = Vec::new();
    let cases = files("make_relup", &["scenario"]);
    assert!(cases.len() >= 5, "too few scenarios: {cases:?}");
    for path in cases {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let scenario = scenario(&path);
        let root = scenario_root(&scenario);
        let relup = match make_relup(root.path(), "1", "2") {
            Ok(relup) => relup,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        for (direction, expected) in
            [(Direction::Up, &scenario.up), (Direction::Down, &scenario.down)]
        {
            let entry = relup.entry_for("1", direction).expect("an entry for release 1");
            let made: Vec<Term> = entry.instructions.iter().map(|i| i.value.to_term()).collect();
            let expected = elements_of(expected);
            if made != expected {
                let show = |script: &[Term]| {
                    script.iter().map(|i| format!("\n      {i}")).collect::<String>()
                };
                failures.push(format!(
                    "{name} ({direction}):\n    expected{}\n    made{}",
                    show(&expected),
                    show(&made)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Erlang has no string type (reference manual, "Data Types: String"): a relup's `Extra`
/// and `apply` arguments written `"ab"`, `[97, 98]` or `[$a | "b"]` reach `code_change`
/// and `apply` as one term, byte for byte, and `""` as `[]` (item 3).
#[test]
fn a_string_reaches_code_change_and_apply_as_one_term_however_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("relup");
    std::fs::write(
        &path,
        r#"{"B", [{"A", [], [
            {suspend, [m]},
            {code_change, [{m, "ab"}, {n, [97, 98]}, {o, [$a | "b"]}, {p, ""}, {q, []}]},
            {resume, [m]},
            {apply, {m, f, ["ab", [$a, $b], "", {[120], "x"}]}}]}], []}."#,
    )
    .expect("write");
    let relup = read_relup(&path).unwrap_or_else(|e| panic!("{e}"));
    let up = &relup.entry_for("A", Direction::Up).expect("an up entry").instructions;
    let Instruction::CodeChange { changes, .. } = &up[1].value else { panic!("{:?}", up[1]) };
    let extras: Vec<Vec<u8>> = changes.iter().map(|(_, extra)| extra.encode()).collect();
    assert_eq!(extras[0], Term::Str("ab".into()).encode());
    assert!(extras[..3].iter().all(|extra| *extra == extras[0]), "{changes:?}");
    assert_eq!(extras[3], Term::list([]).encode());
    assert_eq!(extras[3], extras[4]);
    let Instruction::Apply { args, .. } = &up[3].value else { panic!("{:?}", up[3]) };
    assert_eq!(args[0].encode(), args[1].encode());
    assert_eq!(args[2].encode(), Term::list([]).encode());
    assert_eq!(args[3].encode(), Term::tuple([Term::from("x"), Term::from("x")]).encode());
    assert_eq!(up[3].value.to_string(), r#"{apply,{m,f,["ab","ab",[],{"x","x"}]}}"#);
}

/// `hotcode check` on systools' own relup for a version that is not Latin-1, which
/// `io_lib:format("~tp")` writes as a list of code points (item 3).
#[test]
fn check_accepts_systools_relup_for_a_version_written_as_code_points() {
    let relup =
        cases_dir("check").join("systools-writes-non-latin-1-versions-as-code-points.relup");
    let output = Command::new(env!("CARGO_BIN_EXE_hotcode"))
        .arg("check")
        .arg(&relup)
        .output()
        .expect("run hotcode check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let read = read_relup(&relup).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.vsn, "2-β");
}
