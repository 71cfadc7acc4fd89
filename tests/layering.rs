//! The crate's modules form layers that only point down: no module of
//! `src/` imports (directly or through others) a module that imports it.
//! Read from the source text: every `crate::name` path and every name in a
//! `use crate::{..}` list, comments left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top-level modules of `src/` and the files of each.
fn modules(src: &Path) -> BTreeMap<String, Vec<String>> {
    let mut mods: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let files: Vec<_> = if path.is_dir() {
            fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                .collect()
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            vec![path.clone()]
        } else {
            continue;
        };
        let texts = files
            .iter()
            .map(|f| without_comments(&fs::read_to_string(f).unwrap()))
            .collect();
        mods.insert(name, texts);
    }
    mods
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The modules of `known` that `text` refers to through `crate::`.
fn references(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            // `use crate::{a, b::C, c::{..}}`: the first segment of each item.
            Some(list) => list
                .split(['}', ';'])
                .next()
                .unwrap_or("")
                .split(',')
                .map(|item| {
                    item.trim()
                        .split(|c: char| !is_ident(c))
                        .next()
                        .unwrap_or("")
                })
                .collect(),
            None => vec![rest.split(|c: char| !is_ident(c)).next().unwrap_or("")],
        };
        found.extend(
            names
                .into_iter()
                .filter(|n| known.contains(*n))
                .map(str::to_owned),
        );
    }
    found
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in &graph[node] {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let mods = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    assert!(
        known.contains("state") && known.contains("pool"),
        "{known:?}"
    );
    let graph: BTreeMap<String, BTreeSet<String>> = mods
        .iter()
        .map(|(name, texts)| {
            let mut refs = BTreeSet::new();
            for t in texts {
                refs.extend(references(t, &known));
            }
            refs.remove(name);
            (name.clone(), refs)
        })
        .collect();
    // The reader works: the pool's top imports its state.
    assert!(graph["pool"].contains("state"), "{:?}", graph["pool"]);
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other in a circle: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let known: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let edges = |t: &str| references(t, &known);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", edges("use crate::{b::X, std};")),
        ("b", edges("fn f() { crate::c::g() }")),
        ("c", edges("use crate::a;")),
    ]
    .into_iter()
    .map(|(n, e)| (n.to_owned(), e))
    .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
}
