//! The layers of `src/`: each folder imports only from the folders below
//! it, and the dev server is reached from `cli/demo.rs` alone.
//!
//! A short scan of `crate::` paths rather than a module-graph tool: the
//! tools that build that graph (cargo-modules) compile rust-analyzer, which
//! costs CI more than every test here, and the rule is about top-level
//! folders only, which the paths name exactly. `super::` paths cannot leave
//! a folder without naming `crate::` unless they climb past its root, which
//! the scan refuses too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first: a layer may import from the ones before it.
const LAYERS: &[&str] = &["runtime", "config", "sync", "agent", "cli"];

/// The only file of product code that may start the dev server.
const DEVSERVER_USER: &str = "cli/demo.rs";

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments, so that prose naming a module
/// is no import.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module a piece of code names through `crate::`,
/// including those inside `crate::{a, b::c}`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn layers_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        let code = code(&text);
        let Some(layer) = rel.components().next().and_then(|c| c.as_os_str().to_str()) else {
            continue;
        };
        let Some(own) = rank(layer) else {
            // lib.rs declares the layers; main.rs is the binary, above all.
            assert!(
                ["lib.rs", "main.rs"].contains(&layer),
                "{}: a file outside the layers {LAYERS:?}",
                rel.display()
            );
            continue;
        };
        if code.contains("passbolt_devserver") && rel != Path::new(DEVSERVER_USER) {
            wrong.push(format!("{}: uses the dev server", rel.display()));
        }
        if code.contains("super::super::") && rel.components().count() <= 2 {
            wrong.push(format!(
                "{}: `super::` climbs out of {layer}",
                rel.display()
            ));
        }
        for target in crate_paths(&code) {
            match rank(&target) {
                Some(r) if r == own => {}
                Some(r) => {
                    *edges
                        .entry((layer.to_string(), target.clone()))
                        .or_default() += 1;
                    if r > own {
                        wrong.push(format!(
                            "{}: imports crate::{target}, a layer above {layer}",
                            rel.display()
                        ));
                    }
                }
                None => wrong.push(format!(
                    "{}: crate::{target} is not one of the layers {LAYERS:?}",
                    rel.display()
                )),
            }
        }
    }
    // What CI shows: every edge between the layers, with its count.
    eprintln!("layer imports (from -> to: paths), lowest layer last:");
    for ((from, to), n) in &edges {
        eprintln!("  {from:>7} -> {to:<7} {n}");
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    assert!(
        !edges.is_empty(),
        "no import between layers found: the scan is broken"
    );
}

#[test]
fn the_scan_sees_grouped_and_nested_paths() {
    let paths = crate_paths(
        "use crate::{agent::setup, sync};\nlet x = crate::config::expand(p);\nmycrate::no;",
    );
    assert_eq!(paths, ["agent", "sync", "config"]);
}
