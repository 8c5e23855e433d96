//! The `--json` answers of `status`, `which-releases`, `tree` and `applications`: one JSON
//! document each, versioned, with stable field names. The README's "`ctl ... --json`"
//! documents them for users; this list and that table change together.
//!
//! Every document is an object with `"format"` (`"hotcode.status"`, `"hotcode.releases"`,
//! `"hotcode.tree"`, `"hotcode.applications"`) and `"version"` ([`VERSION`]). Within a
//! version, fields are only ever added; a field is renamed or removed only with a new
//! version. Pids are strings `"<0.N.0>"`, paths are strings, absent values are `null`.
//!
//! - `hotcode.releases`: `releases`: `[{name, vsn, status, apps: [{name, vsn}]}]`, `status`
//!   one of `unpacked`, `current`, `permanent`, `old`.
//! - `hotcode.applications`: `loaded`: `[{name, vsn, description, modules, included_by}]`
//!   (`included_by`: the application that includes it, or `null`), `started`:
//!   `[{name, vsn, restart, top}]` in start order.
//! - `hotcode.tree`: `trees`: `[{app, vsn, root}]`, `root` a node or `null`; a node is
//!   `{id, type, module, pid, name, vsn, children}` (`type` `worker` or `supervisor`, `id`
//!   `null` for a top supervisor, `vsn` the module version the process holds).
//! - `hotcode.status`: `release: {name, vsn, permanent}`, `operation: {running: {request,
//!   for_ms} | null, waiting: [request]}`, `releases`, `applications: {loaded, started}`,
//!   `trees` (as above), `modules: [{name, current, old, staged, post_purge, holders:
//!   {current, old}}]` (a version `{vsn, id, behaviour, source, copy}`; a holder `{thread,
//!   tid, process}`, plus `future`, an id, when the holder is an async call's future),
//!   `processes` (how many), `leaked: [{module, vsn, copy, reason}]`,
//!   `detached: [{vsn, source}]`, `abandoned: [{pid, module}]`, `host: {vsn, os_pid}` (the
//!   host version and the node's operating-system pid, which a host restart changes).

use serde::Serialize;

use crate::code::code_server::{Holder, VersionInfo};
use crate::release_handler::ReleaseHandler;
use crate::runtime::supervisor::ChildType;
use crate::runtime::tree::TreeNode;

use super::server::Queue;

/// The version of every document's format.
pub(super) const VERSION: u32 = 1;

#[derive(Serialize)]
struct Doc<T: Serialize> {
    format: &'static str,
    version: u32,
    #[serde(flatten)]
    body: T,
}

/// `document` as pretty-printed JSON lines.
fn lines<T: Serialize>(format: &'static str, body: T) -> Vec<String> {
    let doc = Doc { format, version: VERSION, body };
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        // Only a map with non-string keys or a failing Serialize impl can fail; none here.
        Err(e) => vec![format!("{{\"format\": \"{format}\", \"error\": {:?}}}", e.to_string())],
    }
}

#[derive(Serialize)]
struct Release {
    name: String,
    vsn: String,
    status: String,
    apps: Vec<NameVsn>,
}

#[derive(Serialize)]
struct NameVsn {
    name: String,
    vsn: String,
}

fn releases(handler: &ReleaseHandler) -> Vec<Release> {
    handler
        .which_releases()
        .into_iter()
        .map(|r| Release {
            name: r.name,
            vsn: r.vsn,
            status: r.status.to_string(),
            apps: r.apps.into_iter().map(|(name, vsn)| NameVsn { name, vsn }).collect(),
        })
        .collect()
}

/// `which-releases --json`.
pub(super) fn which_releases(handler: &ReleaseHandler) -> Vec<String> {
    #[derive(Serialize)]
    struct Body {
        releases: Vec<Release>,
    }
    lines("hotcode.releases", Body { releases: releases(handler) })
}

#[derive(Serialize)]
struct Applications {
    loaded: Vec<LoadedApp>,
    started: Vec<StartedApp>,
}

#[derive(Serialize)]
struct LoadedApp {
    name: String,
    vsn: String,
    description: String,
    modules: Vec<String>,
    included_by: Option<String>,
}

#[derive(Serialize)]
struct StartedApp {
    name: String,
    vsn: String,
    restart: String,
    top: Option<String>,
}

fn applications_of(handler: &ReleaseHandler) -> Applications {
    let node = handler.node();
    let loaded = node.loaded_applications();
    let included_by = |name: &str| {
        loaded
            .iter()
            .find(|a| a.included_applications.iter().any(|i| i == name))
            .map(|a| a.name.clone())
    };
    Applications {
        loaded: loaded
            .iter()
            .map(|a| LoadedApp {
                name: a.name.clone(),
                vsn: a.vsn.clone(),
                description: a.description.clone(),
                modules: a.modules.clone(),
                included_by: included_by(&a.name),
            })
            .collect(),
        started: node
            .which_applications()
            .into_iter()
            .map(|a| StartedApp {
                name: a.name,
                vsn: a.vsn,
                restart: format!("{:?}", a.restart).to_lowercase(),
                top: a.top.map(|p| p.to_string()),
            })
            .collect(),
    }
}

/// `applications --json`.
pub(super) fn applications(handler: &ReleaseHandler) -> Vec<String> {
    lines("hotcode.applications", applications_of(handler))
}

#[derive(Serialize)]
struct Tree {
    app: String,
    vsn: String,
    root: Option<Node>,
}

#[derive(Serialize)]
struct Node {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    module: String,
    pid: Option<String>,
    name: Option<String>,
    vsn: Option<String>,
    children: Vec<Node>,
}

fn node_of(n: &TreeNode) -> Node {
    Node {
        id: n.id.clone(),
        kind: match n.kind {
            ChildType::Worker => "worker",
            ChildType::Supervisor => "supervisor",
        },
        module: n.module.clone(),
        pid: n.pid.map(|p| p.to_string()),
        name: n.name.clone(),
        vsn: n.vsn.clone(),
        children: n.children.iter().map(node_of).collect(),
    }
}

fn trees(handler: &ReleaseHandler) -> Vec<Tree> {
    handler
        .node()
        .supervision_trees()
        .into_iter()
        .map(|t| Tree { app: t.app, vsn: t.vsn, root: t.root.as_ref().map(node_of) })
        .collect()
}

/// `tree --json`.
pub(super) fn tree(handler: &ReleaseHandler) -> Vec<String> {
    #[derive(Serialize)]
    struct Body {
        trees: Vec<Tree>,
    }
    lines("hotcode.tree", Body { trees: trees(handler) })
}

#[derive(Serialize)]
struct Version {
    vsn: String,
    id: u64,
    behaviour: &'static str,
    source: String,
    copy: String,
}

fn version(v: &VersionInfo) -> Version {
    Version {
        vsn: v.vsn.clone(),
        id: v.id,
        behaviour: v.behaviour.as_str(),
        source: v.source.display().to_string(),
        copy: v.copy.display().to_string(),
    }
}

#[derive(Serialize)]
struct HolderDoc {
    thread: String,
    tid: i64,
    process: Option<String>,
    /// An in-flight async call's future (its id); `thread` then started the call. Absent
    /// for threads, so documents without futures are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    future: Option<u64>,
}

fn holders(list: &[Holder]) -> Vec<HolderDoc> {
    list.iter()
        .map(|h| HolderDoc {
            thread: h.thread.name.clone(),
            tid: i64::from(h.thread.tid),
            process: h.process.map(|p| format!("<0.{p}.0>")),
            future: h.future,
        })
        .collect()
}

#[derive(Serialize)]
struct Holders {
    current: Vec<HolderDoc>,
    old: Vec<HolderDoc>,
}

#[derive(Serialize)]
struct Module {
    name: String,
    current: Option<Version>,
    old: Option<Version>,
    staged: Option<Version>,
    post_purge: Option<String>,
    holders: Holders,
}

/// `status --json`.
pub(super) fn status(handler: &ReleaseHandler, queue: &Queue) -> Vec<String> {
    #[derive(Serialize)]
    struct Current {
        name: String,
        vsn: String,
        permanent: Option<String>,
    }
    #[derive(Serialize)]
    struct Running {
        request: String,
        for_ms: u128,
    }
    #[derive(Serialize)]
    struct Operation {
        running: Option<Running>,
        waiting: Vec<String>,
    }
    #[derive(Serialize)]
    struct Leak {
        module: String,
        vsn: String,
        copy: String,
        reason: String,
    }
    #[derive(Serialize)]
    struct Detached {
        vsn: String,
        source: String,
    }
    #[derive(Serialize)]
    struct Abandoned {
        pid: String,
        module: String,
    }
    #[derive(Serialize)]
    struct Host {
        vsn: &'static str,
        os_pid: u32,
    }
    #[derive(Serialize)]
    struct Body {
        release: Current,
        operation: Operation,
        releases: Vec<Release>,
        applications: Applications,
        trees: Vec<Tree>,
        modules: Vec<Module>,
        processes: usize,
        leaked: Vec<Leak>,
        detached: Vec<Detached>,
        abandoned: Vec<Abandoned>,
        host: Host,
    }
    let node = handler.node();
    let releases = releases(handler);
    let current = handler.current();
    let release = Current {
        name: releases.iter().find(|r| r.vsn == current).map_or("?", |r| &r.name).to_owned(),
        permanent: releases.iter().find(|r| r.status == "permanent").map(|r| r.vsn.clone()),
        vsn: current,
    };
    let code = node.code().status();
    let modules = code
        .modules
        .iter()
        .map(|m| {
            let held = node.code().holders(&m.name).ok();
            let of = |v: Option<&crate::code::code_server::HeldVersion>| {
                v.map(|h| holders(&h.holders)).unwrap_or_default()
            };
            Module {
                name: m.name.clone(),
                current: m.current.as_ref().map(version),
                old: m.old.as_ref().map(version),
                staged: m.staged.as_ref().map(version),
                post_purge: m.pending_post_purge.map(|p| p.to_string()),
                holders: Holders {
                    current: of(held.as_ref().and_then(|h| h.current.as_ref())),
                    old: of(held.as_ref().and_then(|h| h.old.as_ref())),
                },
            }
        })
        .collect();
    let body = Body {
        release,
        operation: Operation {
            running: queue.running.as_ref().map(|(request, since)| Running {
                request: request.clone(),
                for_ms: since.elapsed().as_millis(),
            }),
            waiting: queue.waiting.iter().map(|(_, w)| w.clone()).collect(),
        },
        releases,
        applications: applications_of(handler),
        trees: trees(handler),
        modules,
        processes: node.processes().len(),
        leaked: code
            .leaked
            .iter()
            .map(|l| Leak {
                module: l.module.clone(),
                vsn: l.vsn.clone(),
                copy: l.copy.display().to_string(),
                reason: l.reason.clone(),
            })
            .collect(),
        detached: code
            .detached
            .iter()
            .map(|v| Detached { vsn: v.vsn.clone(), source: v.source.display().to_string() })
            .collect(),
        abandoned: node
            .abandoned()
            .into_iter()
            .map(|a| Abandoned { pid: a.pid.to_string(), module: a.module })
            .collect(),
        host: Host { vsn: crate::release_handler::HOST_VSN, os_pid: std::process::id() },
    };
    lines("hotcode.status", body)
}
