//! The rooms' walls, checked: which top-level module uses which, read from the sources. No two
//! top-level modules may use each other, directly or around a loop, and the route table uses
//! nothing of ours. Run it alone with `cargo test --lib layout`; on failure it prints the graph.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The top-level modules (`src/<name>.rs` or `src/<name>/`), and the others each one uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut tops = BTreeMap::new();
    for entry in fs::read_dir(&src).expect("src/").flatten() {
        let path = entry.path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !matches!(name.as_str(), "lib" | "main") {
            tops.insert(name, path);
        }
    }
    let names: BTreeSet<String> = tops.keys().cloned().collect();
    tops.iter()
        .map(|(name, path)| {
            let mut used = BTreeSet::new();
            for file in rust_files(path) {
                let text = fs::read_to_string(&file).unwrap_or_default();
                used.extend(crate_paths(&text).into_iter().filter(|m| names.contains(m)));
            }
            used.remove(name);
            (name.clone(), used)
        })
        .collect()
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            files.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            files.push(p);
        }
    }
    files
}

/// The first segment of every `crate::…` path in `text`, groups (`crate::{a, b::c}`) included.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphabetic() || c == '_') => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// A loop in `graph`, if there is one, as the modules around it.
fn find_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
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
fn no_top_level_module_loops_back_to_itself() {
    let graph = graph();
    let shown: Vec<String> = graph
        .iter()
        .map(|(m, used)| {
            format!(
                "{m} -> {}",
                used.iter().cloned().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    assert!(graph.len() > 5, "the modules were found: {shown:#?}");
    if let Some(cycle) = find_loop(&graph) {
        panic!("an import loop: {cycle:?}\n{}", shown.join("\n"));
    }
    assert!(
        graph["route"].is_empty(),
        "the route table uses nothing of ours"
    );
    // The store's rooms, bottom up: each may use the ones before it, never one after.
    let rooms = ["db", "cache", "replication", "store", "api", "startup"];
    for (at, room) in rooms.iter().enumerate() {
        for above in &rooms[at + 1..] {
            assert!(
                !graph[*room].contains(*above),
                "{room} uses {above}, which sits above it\n{}",
                shown.join("\n")
            );
        }
    }
    assert!(!graph["dashboard"].contains("api"), "{}", shown.join("\n"));
    println!("{}", shown.join("\n"));
}

#[test]
fn reads_grouped_and_plain_paths() {
    let text = "use crate::{api::x, store::{a, b}, config};\nlet m = crate::metrics::M;";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["api", "config", "metrics", "store"]);
    let mut looped = BTreeMap::new();
    looped.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    looped.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert!(find_loop(&looped).is_some(), "a loop of two is found");
}
