//! The supervision trees of the running applications, as a snapshot (OTP's observer view,
//! `supervisor:which_children/1` all the way down).
//!
//! Read from the supervisors' published child lists, never by messaging them: a suspended
//! supervisor does not answer, but its tree can still be shown while an install runs.

use std::collections::HashMap;

use crate::runtime::node::Node;
use crate::runtime::process::{Pid, ProcessKind};
use crate::runtime::supervisor::ChildType;

/// One application's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisionTree {
    /// The application.
    pub app: String,
    /// Its version.
    pub vsn: String,
    /// Its top supervisor (an application without a callback module has none).
    pub root: Option<TreeNode>,
}

/// A process in a tree, with its children if it is a supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    /// The child id in its supervisor's spec (`None` for an application's top supervisor).
    pub id: Option<String>,
    /// Worker or supervisor.
    pub kind: ChildType,
    /// The callback module (for a child that is not running, its spec's first module).
    pub module: String,
    /// The process, if it runs.
    pub pid: Option<Pid>,
    /// Its registered name.
    pub name: Option<String>,
    /// The vsn of the module version it holds: for a gen_server, the version its state
    /// belongs to; for a supervisor, its module's current version.
    pub vsn: Option<String>,
    /// A supervisor's children, in spec order.
    pub children: Vec<TreeNode>,
}

impl Node {
    /// Every running application's supervision tree, in start order.
    pub fn supervision_trees(&self) -> Vec<SupervisionTree> {
        let processes: HashMap<Pid, (String, ProcessKind, Option<String>)> =
            self.processes().into_iter().map(|p| (p.pid, (p.module, p.kind, p.name))).collect();
        let mut pinned: HashMap<Pid, String> = HashMap::new();
        for (module, _, _) in processes.values() {
            let Ok(holders) = self.code().holders(module) else { continue };
            for held in holders.current.iter().chain(&holders.old).chain(&holders.detached) {
                for h in &held.holders {
                    if let Some(pid) = h.process {
                        pinned.insert(Pid(pid), held.version.vsn.clone());
                    }
                }
            }
        }
        let walk = Walk { node: self, processes: &processes, pinned: &pinned };
        self.which_applications()
            .into_iter()
            .map(|app| SupervisionTree {
                root: app.top.map(|top| walk.node(None, ChildType::Supervisor, None, Some(top), 0)),
                app: app.name,
                vsn: app.vsn,
            })
            .collect()
    }
}

/// How deep a tree is followed: a cycle cannot happen (a child is started by its
/// supervisor), but a snapshot is not worth a stack overflow if one ever did.
const MAX_DEPTH: usize = 64;

struct Walk<'a> {
    node: &'a Node,
    processes: &'a HashMap<Pid, (String, ProcessKind, Option<String>)>,
    pinned: &'a HashMap<Pid, String>,
}

impl Walk<'_> {
    fn node(
        &self,
        id: Option<String>,
        kind: ChildType,
        spec_module: Option<&str>,
        pid: Option<Pid>,
        depth: usize,
    ) -> TreeNode {
        let info = pid.and_then(|p| self.processes.get(&p));
        let module = info
            .map(|(m, _, _)| m.clone())
            .or_else(|| spec_module.map(str::to_owned))
            .unwrap_or_default();
        let vsn = match (pid, kind) {
            (Some(p), ChildType::Worker) => self.pinned.get(&p).cloned(),
            (Some(_), ChildType::Supervisor) => self.node.code().current_vsn(&module),
            (None, _) => None,
        };
        let children = match pid {
            Some(p) if kind == ChildType::Supervisor && depth < MAX_DEPTH => self
                .node
                .which_children(p)
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    let first = c.modules.first().map(String::as_str);
                    self.node(Some(c.id), c.kind, first, c.pid, depth + 1)
                })
                .collect(),
            _ => Vec::new(),
        };
        TreeNode {
            id,
            kind,
            module,
            pid,
            name: info.and_then(|(_, _, n)| n.clone()),
            vsn,
            children,
        }
    }
}
