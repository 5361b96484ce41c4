//! The repository's shape, held by tests: no source file over [`MAX_LINES`] lines, and no two
//! files of a crate that import each other, directly or round a loop (crates cannot: cargo
//! refuses cycles between them).
//!
//! A file's imports are the `crate::`, `super::` and `self::` paths it names outside comments
//! and its `mod tests` block, each resolved to the longest module prefix that is a file, or
//! through that module's `pub use child::Item` to the child that defines the item. A parent
//! declaring its children (`mod x;`) is not an import.

#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

/// The source roots of the crates, and the trees of tests and benches.
const ROOTS: &[&str] = &[
    "src",
    "crates/domain/src",
    "crates/ceph/src",
    "crates/testbed/src",
];
const OTHER_TREES: &[&str] = &["tests", "benches"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

type Module = Vec<String>;

/// `a/b.rs` and `a/b/mod.rs` → [a, b]; `lib.rs`, `main.rs` → [].
fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut m: Module = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// The text that imports: comments and the inline `mod tests` block left out.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::`/`super::`/`self::` path in `code`, with the items of grouped imports
/// (`use super::{a::B, c}`) joined to their prefix.
fn paths(code: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = (i == 0 || !word(b[i - 1]))
            && ["crate::", "super::", "self::"]
                .iter()
                .any(|p| b[i..].starts_with(p.as_bytes()));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && word(b[i]) {
            i += 1;
        }
        let prefix: Vec<String> = code[start..i]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if i < b.len() && b[i] == b'{' {
            let end = code[i..].find('}').map_or(b.len(), |e| i + e);
            for item in code[i + 1..end].split(',').map(str::trim) {
                let item = item.split(" as ").next().unwrap_or("");
                if item.is_empty() {
                    continue;
                }
                let mut p = prefix.clone();
                p.extend(item.split("::").map(String::from));
                out.push(p);
            }
            i = end;
        } else {
            out.push(prefix);
        }
    }
    out
}

/// `pub use child::Item` (and groups) of each module: item → the child defining it.
fn reexports(modules: &BTreeMap<Module, String>) -> BTreeMap<(Module, String), Module> {
    let mut out = BTreeMap::new();
    for (m, text) in modules {
        for line in code(text).lines() {
            let line = line.trim();
            let Some(rest) = line
                .strip_prefix("pub use ")
                .or_else(|| line.strip_prefix("pub(crate) use "))
                .or_else(|| line.strip_prefix("pub(super) use "))
            else {
                continue;
            };
            let rest = rest.trim_start_matches("self::");
            let Some((child, items)) = rest.split_once("::") else {
                continue;
            };
            let mut c = m.clone();
            c.push(child.to_string());
            if !modules.contains_key(&c) {
                continue;
            }
            for item in items
                .trim_matches(|ch| "{};".contains(ch))
                .split(',')
                .map(str::trim)
            {
                out.insert((m.clone(), item.to_string()), c.clone());
            }
        }
    }
    out
}

fn resolve(
    modules: &BTreeMap<Module, String>,
    reexp: &BTreeMap<(Module, String), Module>,
    from: &Module,
    path: &[String],
) -> Option<Module> {
    let mut base: Module;
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &rest[1..];
        }
        Some("self") => {
            base = from.clone();
            rest = &rest[1..];
        }
        Some("super") => {
            base = from.clone();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    let full = base;
    (0..=full.len()).rev().find_map(|i| {
        let m: Module = full[..i].to_vec();
        if !modules.contains_key(&m) {
            return None;
        }
        Some(
            full.get(i)
                .and_then(|item| reexp.get(&(m.clone(), item.clone())).cloned())
                .unwrap_or(m),
        )
    })
}

/// The loops among a crate's files: each strongly connected set of two or more.
fn loops(root: &Path) -> Vec<BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeMap<Module, String> = files
        .iter()
        .map(|f| (module_of(root, f), std::fs::read_to_string(f).unwrap()))
        .collect();
    let reexp = reexports(&modules);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, text) in &modules {
        for p in paths(&code(text)) {
            if let Some(t) = resolve(&modules, &reexp, m, &p)
                && &t != m
            {
                edges.entry(m.clone()).or_default().insert(t);
            }
        }
    }
    // Reachability is enough at this size: a and b are in one loop when each reaches the other.
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for t in edges.get(&m).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&Module, BTreeSet<Module>> =
        modules.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<BTreeSet<Module>> = Vec::new();
    for m in modules.keys() {
        let set: BTreeSet<Module> = reached[m]
            .iter()
            .filter(|t| reached[*t].contains(m))
            .cloned()
            .collect();
        if set.len() > 1 && !out.contains(&set) {
            out.push(set);
        }
    }
    out
}

#[test]
fn no_file_is_over_the_limit() {
    let repo = crate::repo_root();
    let mut files = Vec::new();
    for dir in ROOTS.iter().chain(OTHER_TREES) {
        rust_files(&repo.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES)
                .then(|| format!("{} ({n} lines)", f.strip_prefix(repo).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn no_two_files_of_a_crate_import_each_other() {
    for root in ROOTS {
        let found = loops(&crate::repo_root().join(root));
        let named: Vec<Vec<String>> = found
            .iter()
            .map(|set| set.iter().map(|m| m.join("::")).collect())
            .collect();
        assert!(
            named.is_empty(),
            "{root}: files importing each other: {named:?}"
        );
    }
}

/// The check finds what it is for: a loop through a re-export and a grouped import.
#[test]
fn a_loop_is_found() {
    let dir = std::env::temp_dir().join(format!("rbdp-layout-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "mod inner;\npub use inner::Thing;\n").unwrap();
    std::fs::write(dir.join("a/inner.rs"), "use crate::b::{helper, Other};\n").unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "// crate::nothing in a comment\nuse crate::a::Thing;\n",
    )
    .unwrap();
    let found = loops(&dir);
    std::fs::write(dir.join("b.rs"), "use std::fmt;\n").unwrap();
    let after = loops(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let names: Vec<Vec<String>> = found
        .iter()
        .map(|s| s.iter().map(|m| m.join("::")).collect())
        .collect();
    assert_eq!(names, vec![vec!["a::inner".to_string(), "b".to_string()]]);
    assert!(after.is_empty());
}
