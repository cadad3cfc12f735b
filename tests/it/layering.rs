//! The layering stated in `src/lib.rs` holds: every `crate::` path under
//! `src/` points to a lower layer, and README's copy of the table is the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The ```text block following `heading` in `text`, with `prefix` stripped
/// from each line (`//!` in lib.rs, nothing in README) and blanks trimmed.
fn table(text: &str, heading: &str, prefix: &str) -> Vec<String> {
    let mut lines = text.lines().map(|l| l.strip_prefix(prefix).unwrap_or(l).trim());
    lines.by_ref().find(|l| l.contains(heading)).unwrap_or_else(|| panic!("no '{heading}'"));
    lines.by_ref().find(|l| *l == "```text").expect("a ```text block");
    lines.take_while(|l| *l != "```").map(str::to_string).collect()
}

/// Module name → layer (0 is the top).
fn layers(table: &[String]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (i, line) in table.iter().enumerate() {
        // "a, b, c   description": the names end at the first word not
        // followed by a comma.
        for word in line.split_whitespace() {
            let name = word.trim_end_matches(',');
            out.insert(name.to_string(), i);
            if !word.ends_with(',') {
                break;
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a line of code names through `crate::`: both
/// `crate::x::…` and `use crate::{x, y::…}` (comments are not code).
fn targets(line: &str) -> Vec<String> {
    targets_after(line, "crate::")
}

/// The names a line of code reaches through `prefix` (`crate::`,
/// `crate::engine::`, `super::`), single or grouped.
fn targets_after(line: &str, prefix: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        // `csync::crate::` cannot occur; `$crate::` (macros) is not ours.
        let before = &rest[..at];
        rest = &rest[at + prefix.len()..];
        if before.ends_with('$') || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let name: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn every_crate_path_points_down_the_stated_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let stated = table(&lib, "# Layers", "//!");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert_eq!(
        table(&readme, "Dependencies point one way", ""),
        stated,
        "README's layer table differs from src/lib.rs's"
    );
    let layer = layers(&stated);
    // Every module of the crate has a place.
    for l in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let m = l.trim_end_matches(';');
        assert!(layer.contains_key(m), "module '{m}' is in no layer of src/lib.rs's table");
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root.join("src")).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        let from = first.trim_end_matches(".rs");
        if from == "lib" || from == "main" {
            continue;
        }
        let Some(&from_layer) = layer.get(from) else {
            wrong.push(format!("{}: module '{from}' is in no layer", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for to in targets(line) {
                if to == from {
                    continue;
                }
                match layer.get(&to) {
                    Some(&l) if l > from_layer => {}
                    Some(_) => wrong.push(format!(
                        "src/{}:{}: {from} uses {to}, which is not below it",
                        rel.display(),
                        n + 1
                    )),
                    None => wrong.push(format!(
                        "src/{}:{}: {from} uses '{to}', in no layer",
                        rel.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(wrong.is_empty(), "arrows against the layering:\n{}", wrong.join("\n"));
}

#[test]
fn the_engine_submodules_point_down_its_stated_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let engine = root.join("src/engine");
    let text = std::fs::read_to_string(engine.join("mod.rs")).unwrap();
    let layer = layers(&table(&text, "# Inside", "//!"));
    for l in text.lines().filter_map(|l| l.trim_start_matches("pub ").strip_prefix("mod ")) {
        let m = l.trim_end_matches(';');
        assert!(layer.contains_key(m), "engine::{m} is in no layer of src/engine/mod.rs's table");
    }
    let mut files = Vec::new();
    rust_files(&engine, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&engine).unwrap();
        let depth = rel.components().count();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        let from = first.trim_end_matches(".rs");
        let Some(&from_layer) = layer.get(from) else { continue };
        // From engine/x.rs `super::y` is a sibling; from engine/x/z.rs it is
        // `super::super::y`.
        let up = if depth == 1 { "super::" } else { "super::super::" };
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let mut to = targets_after(line, "crate::engine::");
            to.extend(targets_after(line, up));
            for to in to.into_iter().filter(|t| *t != from) {
                if let Some(&l) = layer.get(&to)
                    && l <= from_layer
                {
                    wrong.push(format!(
                        "src/engine/{}:{}: engine::{from} uses engine::{to}, which is not below it",
                        rel.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "arrows against the engine's layering:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_inline_paths_and_skips_comments() {
    assert_eq!(
        targets("use crate::{blockdelta, config::X, pattern};"),
        ["blockdelta", "config", "pattern"]
    );
    assert_eq!(targets("    let x = crate::paths::display(p); // crate::engine"), ["paths"]);
    assert!(targets("//! see [`crate::engine`]").is_empty());
    assert!(targets("$crate::x").is_empty());
    let t: Vec<String> = ["a, b   words, here", "c"].map(String::from).to_vec();
    let l = layers(&t);
    assert_eq!((l["a"], l["b"], l["c"]), (0, 0, 1));
    assert!(!l.contains_key("words"));
}
