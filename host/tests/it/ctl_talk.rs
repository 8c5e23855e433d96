//! `hotcode ctl ROOT call | cast | whereis | tree | applications | status --json` on a real
//! `hotcode boot` node running the seed example: the OTP docs' client `ch3:alloc()` as a
//! command line, by registered name.

use crate::cli::{Node, ctl, ctl_ok, scratch};
use crate::fixtures;

#[test]
fn ctl_talks_to_registered_processes_with_the_supervisor_relup() {
    talks_to_registered_processes("included-app-supervisor");
}

#[test]
fn ctl_talks_to_registered_processes_with_the_restart_relup() {
    talks_to_registered_processes("included-app-restart");
}

/// Both seed relups, A → B → A on a `hotcode boot` node, asked through `ctl`.
fn talks_to_registered_processes(script: &str) {
    let root = fixtures::release_root(script);
    let r = root.path();
    let tmp = scratch();
    let node = Node::boot(r, tmp.path());

    // In A there is no ch3: noproc, and the names that are registered.
    let out = ctl(r, &["call", "ch3", "alloc"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("noproc: no process is registered as ch3"), "{}", out.stderr);
    assert!(out.stderr.contains("registered: prim_sup"), "{}", out.stderr);
    // A request that is not a term is a usage error, before any process is asked.
    let out = ctl(r, &["call", "prim_sup", "{alloc,"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("not one Erlang term"), "{}", out.stderr);

    ctl_ok(r, &["install", "B"]);
    let ch = ctl_ok(r, &["call", "ch3", "alloc"]);
    let ch: i64 = ch.trim().parse().unwrap_or_else(|_| panic!("a channel, got {ch:?}"));
    assert!((1..=100).contains(&ch));
    assert_eq!(
        ctl_ok(r, &["call", "ch3", &format!("{{free, {ch}}}."), "--timeout", "2000"]),
        "ok\n"
    );
    assert_eq!(ctl_ok(r, &["cast", "ch3", "{free, 1}"]), "ok\n");
    let pid = ctl_ok(r, &["whereis", "ch3"]);
    assert!(pid.starts_with("<0.") && pid.trim_end().ends_with(".0>"), "{pid}");
    let out = ctl(r, &["whereis", "nobody"]);
    assert_eq!(out.code, Some(1), "{out:?}");

    // The tree shows the three registered as in OTP, and the version each holds.
    let tree = ctl_ok(r, &["tree"]);
    for (id, kind, name) in [
        ("(top)", "supervisor", "prim_sup"),
        ("ch_sup", "supervisor", "ch_sup"),
        ("ch3", "worker", "ch3"),
    ] {
        assert!(
            tree.lines().any(|l| l.trim_start().starts_with(&format!("{id}: {kind} {name} <0."))
                && l.contains(&format!("registered {name}"))),
            "{id}/{name} not in:\n{tree}"
        );
    }
    assert!(tree.lines().any(|l| l.contains("ch3: worker ch3") && l.ends_with("vsn 1")), "{tree}");
    let apps = ctl_ok(r, &["applications"]);
    assert!(apps.contains("ch_app 1 \"Channel allocator\" (included by prim_app)"), "{apps}");

    // status --json is one JSON document holding releases, applications, trees, modules,
    // holders and leaks.
    let text = ctl_ok(r, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("status --json parses");
    assert_eq!(doc["format"], "hotcode.status");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["release"]["vsn"], "B");
    assert_eq!(doc["release"]["permanent"], "A");
    let statuses: Vec<(&str, &str)> = doc["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| (r["vsn"].as_str().unwrap_or(""), r["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(statuses, [("A", "permanent"), ("B", "current")]);
    let started: Vec<&str> = doc["applications"]["started"]
        .as_array()
        .expect("started")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(started, ["prim_app"]);
    let loaded = doc["applications"]["loaded"].as_array().expect("loaded");
    assert!(loaded.iter().any(|a| a["name"] == "ch_app" && a["included_by"] == "prim_app"));
    let top = &doc["trees"][0]["root"];
    assert_eq!(top["name"], "prim_sup");
    let ch_sup = top["children"]
        .as_array()
        .expect("children")
        .iter()
        .find(|c| c["id"] == "ch_sup")
        .expect("ch_sup child");
    assert_eq!(ch_sup["children"][0]["name"], "ch3");
    assert_eq!(ch_sup["children"][0]["type"], "worker");
    let ch3_module = doc["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .find(|m| m["name"] == "ch3")
        .expect("ch3 module");
    assert_eq!(ch3_module["current"]["vsn"], "1");
    assert!(
        ch3_module["holders"]["current"]
            .as_array()
            .expect("holders")
            .iter()
            .any(|h| h["process"] == ch_sup["children"][0]["pid"]),
        "ch3's process holds ch3's current version: {ch3_module}"
    );
    assert!(doc["leaked"].as_array().is_some_and(Vec::is_empty));
    for (what, format) in [
        ("tree", "hotcode.tree"),
        ("applications", "hotcode.applications"),
        ("which-releases", "hotcode.releases"),
    ] {
        let doc: serde_json::Value =
            serde_json::from_str(&ctl_ok(r, &[what, "--json"])).expect("parses");
        assert_eq!(doc["format"], format);
    }

    // Back in A, ch3 is gone again.
    ctl_ok(r, &["install", "A"]);
    assert_eq!(ctl(r, &["call", "ch3", "alloc"]).code, Some(1));
    assert!(node.terminate().success());
}
