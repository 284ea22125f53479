//! The modules of yaplr-core form layers: no module reaches, through the
//! `crate::` paths of its code (tests aside), a module that reaches it back.
//! See the table at the top of src/lib.rs.

#![allow(clippy::unwrap_used, reason = "a test: a failure is a panic")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module of a source file (`session/stage.rs` -> `session`).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "bin")).then(|| name.to_string())
}

/// The code of a file without its test modules and test files.
fn code_of(path: &Path, text: &str) -> Option<String> {
    if path.file_name()? == "tests.rs" {
        return None;
    }
    Some(match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    })
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let Some(module) = module_of(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        let Some(code) = code_of(&f, &text) else {
            continue;
        };
        let uses = deps.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                uses.insert(name);
            }
        }
    }
    deps
}

#[test]
fn no_module_reaches_itself() {
    let deps = graph();
    assert!(deps.len() > 10, "the source tree was not found: {deps:?}");
    for start in deps.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = deps[start].iter().collect();
        while let Some(m) = todo.pop() {
            assert_ne!(m, start, "{start} reaches itself: {deps:#?}");
            if seen.insert(m.clone()) {
                todo.extend(deps.get(m).into_iter().flatten());
            }
        }
    }
}

#[test]
fn the_bottom_layers_use_nothing_above_them() {
    let deps = graph();
    let allowed: &[(&str, &[&str])] = &[
        ("key", &[]),
        ("error", &["key"]),
        ("sys", &[]),
        ("codec", &["error"]),
        ("coord", &["key", "error", "codec", "sys", "store", "lock"]),
        ("index", &["key", "error", "codec", "sys", "store", "coord"]),
    ];
    for (module, may) in allowed {
        let uses = deps.get(*module).cloned().unwrap_or_default();
        let extra: Vec<&String> = uses.iter().filter(|u| !may.contains(&u.as_str())).collect();
        assert!(extra.is_empty(), "{module} uses {extra:?}");
    }
}
