//! What the read-only requests answer: the releases, the node's status, its supervision
//! trees and applications, as text (or, with `--json`, as [`super::json`] documents).

use crate::release::ReleaseStatus;
use crate::release_handler::ReleaseHandler;
use crate::runtime::supervisor::ChildType;
use crate::runtime::tree::TreeNode;

use super::server::*;
use super::wire::{Query, Reply};
use super::{json, talk};

/// Answers a read-only request.
pub(super) fn answer(handler: &ReleaseHandler, query: Query<'_>, queue: &Queue) -> Reply {
    match query {
        Query::WhichReleases { json: false } => Reply::ok(which_releases(handler)),
        Query::WhichReleases { json: true } => Reply::ok(json::which_releases(handler)),
        Query::Status { json: false } => Reply::ok(status(handler, queue)),
        Query::Status { json: true } => Reply::ok(json::status(handler, queue)),
        Query::Tree { json: false } => Reply::ok(tree(handler)),
        Query::Tree { json: true } => Reply::ok(json::tree(handler)),
        Query::Applications { json: false } => Reply::ok(applications(handler)),
        Query::Applications { json: true } => Reply::ok(json::applications(handler)),
        Query::Whereis(name) => talk::whereis(handler, name),
        Query::Call { dest, request, timeout_ms } => talk::call(handler, dest, request, timeout_ms),
        Query::Cast { dest, message } => talk::cast(handler, dest, message),
    }
}

/// `tree`: each running application, then its supervision tree, one process a line,
/// indented by depth: `ID: TYPE MODULE PID [registered NAME] [vsn VSN]`.
pub(super) fn tree(handler: &ReleaseHandler) -> Vec<String> {
    fn walk(n: &TreeNode, depth: usize, lines: &mut Vec<String>) {
        let kind = match n.kind {
            ChildType::Worker => "worker",
            ChildType::Supervisor => "supervisor",
        };
        let mut line = format!(
            "{:indent$}{}: {kind} {} {}",
            "",
            n.id.as_deref().unwrap_or("(top)"),
            n.module,
            n.pid.map_or_else(|| "not running".to_owned(), |p| p.to_string()),
            indent = 2 * depth
        );
        if let Some(name) = &n.name {
            line.push_str(&format!(" registered {name}"));
        }
        if let Some(vsn) = &n.vsn {
            line.push_str(&format!(" vsn {vsn}"));
        }
        lines.push(line);
        for c in &n.children {
            walk(c, depth + 1, lines);
        }
    }
    let mut lines = Vec::new();
    for t in handler.node().supervision_trees() {
        lines.push(format!("{} {}", t.app, t.vsn));
        match &t.root {
            Some(root) => walk(root, 1, &mut lines),
            None => lines.push("  (no supervision tree)".to_owned()),
        }
    }
    lines
}

/// `applications`: the loaded ones (included ones marked with who includes them), then
/// the started ones in start order.
pub(super) fn applications(handler: &ReleaseHandler) -> Vec<String> {
    let node = handler.node();
    let loaded = node.loaded_applications();
    let mut lines = vec![format!("loaded: {}", loaded.len())];
    for a in &loaded {
        let by = loaded.iter().find(|o| o.included_applications.contains(&a.name));
        lines.push(format!(
            "  {} {} {:?}{}",
            a.name,
            a.vsn,
            a.description,
            by.map(|o| format!(" (included by {})", o.name)).unwrap_or_default()
        ));
    }
    let started = node.which_applications();
    lines.push(format!("started: {}", started.len()));
    for a in &started {
        lines.push(format!(
            "  {} {} {} top {}",
            a.name,
            a.vsn,
            format!("{:?}", a.restart).to_lowercase(),
            a.top.map_or_else(|| "-".to_owned(), |p| p.to_string())
        ));
    }
    lines
}

pub(super) fn which_releases(handler: &ReleaseHandler) -> Vec<String> {
    handler
        .which_releases()
        .iter()
        .map(|r| {
            let apps: Vec<String> = r.apps.iter().map(|(a, v)| format!("{a}-{v}")).collect();
            format!("{} {} {} {}", r.name, r.vsn, r.status, apps.join(" "))
        })
        .collect()
}

/// The `status` answer; `queue` is the release operations running and waiting, listed
/// after the release line when there are any.
pub(super) fn status(handler: &ReleaseHandler, queue: &Queue) -> Vec<String> {
    let node = handler.node();
    let releases = handler.which_releases();
    let current = handler.current();
    let name = releases.iter().find(|r| r.vsn == current).map_or("?", |r| r.name.as_str());
    let permanent = releases.iter().find(|r| r.status == ReleaseStatus::Permanent);
    let mut lines = vec![match permanent {
        Some(p) if p.vsn == current => format!("release: {name} {current} (permanent)"),
        Some(p) => format!("release: {name} {current} (current; permanent is {})", p.vsn),
        None => format!("release: {name} {current} (no permanent release)"),
    }];

    if let Some((what, since)) = &queue.running {
        lines.push(format!(
            "operation: {what} (running for {:.1} s)",
            since.elapsed().as_secs_f64()
        ));
    }
    for (_, what) in &queue.waiting {
        lines.push(format!("  waiting: {what}"));
    }
    let processes = node.processes();
    let apps = node.which_applications();
    lines.push(format!("applications: {}", apps.len()));
    for app in &apps {
        let top = match app.top {
            Some(pid) => {
                let info = processes.iter().find(|p| p.pid == pid);
                let name = info.map_or("?", |p| p.name.as_deref().unwrap_or(&p.module));
                format!("{name} {pid}")
            }
            None => "- -".to_owned(),
        };
        lines.push(format!("  {} {} {top}", app.name, app.vsn));
    }
    let code = node.code().status();
    lines.push(format!("modules: {}", code.modules.len()));
    let width = code.modules.iter().map(|m| m.name.len()).max().unwrap_or(0);
    let vsn = |v: &Option<crate::code::code_server::VersionInfo>| {
        v.as_ref().map_or("-".to_owned(), |v| v.vsn.clone())
    };
    for m in &code.modules {
        let mut line =
            format!("  {:width$} current {} old {}", m.name, vsn(&m.current), vsn(&m.old));
        if m.staged.is_some() {
            line.push_str(&format!(" staged {}", vsn(&m.staged)));
        }
        if let Some(method) = m.pending_post_purge {
            line.push_str(&format!(" (post-purge {method} pending)"));
        }
        lines.push(line);
    }
    lines.push(format!("processes: {}", processes.len()));
    lines.push(format!("leaked libraries: {}", code.leaked.len()));
    for leak in &code.leaked {
        lines.push(format!(
            "  {} {} {}: {}",
            leak.module,
            leak.vsn,
            leak.copy.display(),
            leak.reason
        ));
    }
    if !code.detached.is_empty() {
        lines.push(format!("detached versions: {}", code.detached.len()));
        for v in &code.detached {
            lines.push(format!("  {} {} (still held)", v.source.display(), v.vsn));
        }
    }
    let abandoned = node.abandoned();
    lines.push(format!("abandoned processes: {}", abandoned.len()));
    for a in &abandoned {
        lines.push(format!("  {} {}", a.pid, a.module));
    }
    // Which process: a host restart changes it.
    lines.push(format!(
        "host: hotcode {}, os pid {}",
        crate::release_handler::HOST_VSN,
        std::process::id()
    ));
    lines
}
