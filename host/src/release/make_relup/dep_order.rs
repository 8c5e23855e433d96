//! The DepMods order: the modules of one appup sorted so that every module comes before the
//! modules it depends on (suspended and loaded in that order up, reversed down), cycles and
//! unordered modules keeping their written order.

use std::collections::BTreeSet;

/// The nodes of the DepMods graph (`edges[a]` holds the nodes `a` depends on; nodes are
/// numbered in script order) in *dependency order*: every node before the nodes it depends
/// on. Nodes in one cycle, and nodes with no order between them, keep their script order:
/// the order is a topological order of the graph's strongly connected components in which,
/// whenever several components could come next, the one written first does.
pub(super) fn dependency_order(edges: &[Vec<usize>]) -> Vec<usize> {
    let count = edges.len();
    // What each node reaches; the graphs are a few dozen modules at most, so a search per
    // node is simpler than it is slow.
    let reaches: Vec<Vec<bool>> = (0..count)
        .map(|start| {
            let mut seen = vec![false; count];
            let mut stack = vec![start];
            while let Some(node) = stack.pop() {
                if !std::mem::replace(&mut seen[node], true) {
                    stack.extend(&edges[node]);
                }
            }
            seen
        })
        .collect();
    // Each node's component is named by its first member.
    let component: Vec<usize> = (0..count)
        .map(|node| {
            (0..count).find(|&other| reaches[node][other] && reaches[other][node]).unwrap_or(node)
        })
        .collect();
    let mut component_edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (node, targets) in edges.iter().enumerate() {
        for &target in targets {
            if component[node] != component[target] {
                component_edges.insert((component[node], component[target]));
            }
        }
    }
    let mut incoming = vec![0usize; count];
    for &(_, to) in &component_edges {
        incoming[to] += 1;
    }
    let mut ready: BTreeSet<usize> =
        (0..count).filter(|&node| component[node] == node && incoming[node] == 0).collect();
    let mut order = Vec::with_capacity(count);
    while let Some(next) = ready.pop_first() {
        order.extend((0..count).filter(|&node| component[node] == next));
        for &(_, to) in component_edges.range((next, 0)..=(next, usize::MAX)) {
            incoming[to] -= 1;
            if incoming[to] == 0 {
                ready.insert(to);
            }
        }
    }
    order
}

/// The weakly connected component of each node of the DepMods graph, named by a
/// representative node: the modules translated together.
pub(super) fn weak_components(edges: &[Vec<usize>]) -> Vec<usize> {
    pub(super) fn root(parent: &mut [usize], mut node: usize) -> usize {
        while parent[node] != node {
            parent[node] = parent[parent[node]];
            node = parent[node];
        }
        node
    }
    let mut parent: Vec<usize> = (0..edges.len()).collect();
    for (node, targets) in edges.iter().enumerate() {
        for &target in targets {
            let (a, b) = (root(&mut parent, node), root(&mut parent, target));
            parent[a.max(b)] = a.min(b);
        }
    }
    (0..edges.len()).map(|node| root(&mut parent, node)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_order_is_topological_and_otherwise_keeps_the_written_order() {
        // (edges, order): edges[a] lists what a depends on.
        let cases: &[(&[&[usize]], &[usize])] = &[
            (&[], &[]),
            (&[&[], &[], &[]], &[0, 1, 2]),
            (&[&[1], &[2], &[]], &[0, 1, 2]),
            (&[&[], &[0], &[1]], &[2, 1, 0]),
            (&[&[1], &[0], &[]], &[0, 1, 2]),
            (&[&[2], &[], &[], &[1]], &[0, 2, 3, 1]),
            (&[&[1], &[0, 2], &[], &[3]], &[0, 1, 2, 3]),
        ];
        for (edges, expected) in cases {
            let edges: Vec<Vec<usize>> = edges.iter().map(|e| e.to_vec()).collect();
            assert_eq!(dependency_order(&edges), *expected, "{edges:?}");
        }
        assert_eq!(weak_components(&[vec![2], vec![], vec![], vec![1]]), vec![0, 1, 0, 1]);
    }
}
