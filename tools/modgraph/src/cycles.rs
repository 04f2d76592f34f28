//! The rule: within every folder, the graph of its child modules (each child standing for its
//! whole subtree) has no cycle. A module may use its parent's items and its own children's (a
//! parent and its children are one unit); between siblings, imports run one way only.
//!
//! One module is left out: the crate's `error` module at the root, which holds the crate's one
//! error enum (DESIGN.md). Every module returns it, and it names the failures of every module,
//! so it sits beside the layers rather than in them.

use std::collections::{BTreeMap, BTreeSet};

use crate::refs::Reference;

/// A cycle between sibling modules of `parent`, with one written import per edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub parent: Vec<String>,
    pub members: Vec<String>,
    pub witnesses: Vec<String>,
}

/// Every cycle among siblings, in a stable order.
pub fn find(references: &[Reference]) -> Vec<Cycle> {
    // parent → (child a → child b → first witness)
    let mut levels: BTreeMap<Vec<String>, BTreeMap<String, BTreeMap<String, String>>> =
        BTreeMap::new();
    for reference in references {
        let common = reference
            .from
            .iter()
            .zip(&reference.to)
            .take_while(|(a, b)| a == b)
            .count();
        // One is the other's ancestor: parent and child are one unit.
        let (Some(a), Some(b)) = (reference.from.get(common), reference.to.get(common)) else {
            continue;
        };
        if common == 0 && (a == "error" || b == "error") {
            continue;
        }
        levels
            .entry(reference.from[..common].to_vec())
            .or_default()
            .entry(a.clone())
            .or_default()
            .entry(b.clone())
            .or_insert_with(|| reference.at.clone());
    }
    let mut cycles = Vec::new();
    for (parent, graph) in &levels {
        for component in strongly_connected(graph) {
            let members: BTreeSet<&String> = component.iter().collect();
            let mut witnesses = Vec::new();
            for a in &component {
                for (b, at) in graph.get(a).into_iter().flatten() {
                    if members.contains(b) {
                        witnesses.push(format!("{a} -> {b}   ({at})"));
                    }
                }
            }
            cycles.push(Cycle {
                parent: parent.clone(),
                members: component,
                witnesses,
            });
        }
    }
    cycles
}

/// Components of two or more nodes (Tarjan), members sorted.
fn strongly_connected(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        let targets: Vec<&'g str> = state
            .graph
            .get(node)
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for target in targets {
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.out.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.out.sort();
    state.out
}
