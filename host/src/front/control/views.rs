//! What the read-only requests answer: the releases and the node's status, as text.

use crate::release::ReleaseStatus;
use crate::release_handler::ReleaseHandler;

use super::server::*;

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
    lines
}
