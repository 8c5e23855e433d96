//! Tidy tests: the layering of `host/src` that ARCHITECTURE.md describes, checked on the
//! source itself (after rust-analyzer's tidy tests).
//!
//! Each folder under `host/src` is a layer, and a file may name (through `crate::…` or
//! `super::…` paths, in `use` lines or inline) only its own layer and the layers below it.
//! The rule is read from the text, not from the compiler, so it also holds for code behind
//! `cfg`s that this build does not compile.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, and which layers each one may name.
const LAYERS: &[(&str, &[&str])] = &[
    ("code", &["code"]),
    ("release", &["release"]),
    // The application controller reads `.app` specs, which are the release layer's words.
    ("runtime", &["runtime", "code", "release"]),
    ("release_handler", &["release_handler", "runtime", "code", "release"]),
    ("front", &["front", "release_handler", "runtime", "code", "release"]),
];

fn src_dir() -> PathBuf {
    crate::fixtures::host_dir().join("src")
}

/// Every `.rs` file below `dir`, as paths relative to `host/src`.
fn rust_files(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, base, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path.strip_prefix(base).expect("under src").to_path_buf());
        }
    }
}

/// The module path of a file: `code/hold.rs` is `[code, hold]`, `code/mod.rs` is `[code]`.
fn module_path(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> =
        file.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The code of a line without its comment (good enough for this source: no `//` in the
/// string literals that also name crate paths).
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// The first path segments of every crate path a line names, resolved from the module
/// `here`: `crate::code::hold` gives `code`, `crate::{code::x, release}` gives `code` and
/// `release`, and `super::super::runtime` from `[front, watch, worker]` gives `front`.
fn named_top_modules(line: &str, here: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let at_word_start = i == 0 || !is_ident(bytes[i - 1]);
        if at_word_start && rest.starts_with("crate::") {
            let after = &rest["crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `crate::{a::x, b}`: the first segment of each item at depth one.
                let mut depth = 0;
                let mut item = String::new();
                let mut items = Vec::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                        _ => {}
                    }
                    if depth == 0 && c != ',' {
                        item.push(c);
                    }
                }
                items.push(item);
                for item in items {
                    let first: String =
                        item.trim().chars().take_while(|&c| is_ident(c as u8)).collect();
                    if !first.is_empty() {
                        found.push(first);
                    }
                }
            } else {
                let first: String = after.chars().take_while(|&c| is_ident(c as u8)).collect();
                found.push(first);
            }
            i += "crate::".len();
        } else if at_word_start && rest.starts_with("super::") {
            let mut ups = 0;
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                ups += 1;
                tail = t;
            }
            let next: String = tail.chars().take_while(|&c| is_ident(c as u8)).collect();
            if ups >= here.len() {
                found.push(next);
            } else {
                found.push(here[0].clone());
            }
            i += "super::".len() * ups;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    found
}

/// The layer violations of one file: `(line number, named layer)`.
fn violations(file: &Path, text: &str) -> Vec<(usize, String)> {
    let here = module_path(file);
    let Some(layer) = here.first() else { return Vec::new() };
    let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| name == layer) else {
        return Vec::new(); // the crate root and the binary may use every layer
    };
    let layer_names: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for named in named_top_modules(code_of(line), &here) {
            if layer_names.contains(named.as_str()) && !allowed.contains(&named.as_str()) {
                out.push((n + 1, named));
            } else if !layer_names.contains(named.as_str()) && !named.is_empty() {
                // A name at the crate root (a re-export) hides which layer it comes from.
                out.push((n + 1, format!("the crate root (`crate::{named}`)")));
            }
        }
    }
    out
}

#[test]
fn no_file_imports_from_a_layer_above_its_own() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    assert!(files.len() > 30, "found only {} files under {}", files.len(), src.display());
    let mut problems = Vec::new();
    for file in &files {
        let text = fs::read_to_string(src.join(file)).expect("read source");
        let layer = module_path(file).first().cloned().unwrap_or_default();
        for (line, named) in violations(file, &text) {
            problems.push(format!(
                "host/src/{}:{line}: the {layer} layer names {named}; it may use only {:?}",
                file.display(),
                LAYERS.iter().find(|(name, _)| *name == layer).map_or(&[][..], |(_, a)| *a)
            ));
        }
    }
    assert!(problems.is_empty(), "upward imports (see ARCHITECTURE.md):\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_every_form_of_crate_path() {
    let here = |s: &str| module_path(Path::new(s));
    let cases: &[(&str, &str, &[&str])] = &[
        ("code/hold.rs", "use crate::runtime::node::Node;", &["runtime"]),
        (
            "code/hold.rs",
            "use crate::{code::maps, runtime::{node, process}};",
            &["code", "runtime"],
        ),
        ("code/hold.rs", "let x = crate::front::control::request();", &["front"]),
        ("release/make_relup/translate.rs", "use super::super::relup::X;", &["release"]),
        ("front/watch/worker.rs", "use super::super::super::runtime::Node;", &["runtime"]),
        ("code/hold.rs", "// crate::runtime in a comment", &[]),
        ("code/hold.rs", "use hotcrate::runtime;", &[]),
    ];
    for (file, line, expected) in cases {
        let named = named_top_modules(code_of(line), &here(file));
        assert_eq!(named, *expected, "{file}: {line}");
    }
    // And a violation is reported with its line.
    let text = "//! doc\nuse crate::code::hold;\nuse crate::runtime::node::Node;\n";
    assert_eq!(violations(Path::new("code/x.rs"), text), vec![(3, "runtime".to_owned())]);
    assert_eq!(violations(Path::new("front/x.rs"), text), vec![]);
    let release = "use crate::code::code_server::PurgeMethod;";
    assert_eq!(violations(Path::new("release/relup.rs"), release), vec![(1, "code".to_owned())]);
}

/// ARCHITECTURE.md's code map names every source file of the host, and names no file that
/// is gone: the map is the tree.
#[test]
fn the_code_map_names_every_host_source_file() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    let doc_path = crate::fixtures::root().join("ARCHITECTURE.md");
    let doc = fs::read_to_string(&doc_path).expect("read ARCHITECTURE.md");
    let missing: Vec<String> = files
        .iter()
        .map(|f| f.display().to_string())
        .filter(|f| !doc.contains(&format!("`{f}`")))
        .collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md's code map does not name: {missing:?}");
    // Every `host/src`-relative path the map names exists.
    let named: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.ends_with(".rs") && s.contains('/') && !s.starts_with("host/") && !s.contains(' ')
        })
        .filter(|s| {
            LAYERS.iter().any(|(l, _)| s.starts_with(&format!("{l}/"))) || s.starts_with("cli/")
        })
        .collect();
    let gone: Vec<&&str> = named.iter().filter(|s| !src.join(s).is_file()).collect();
    assert!(gone.is_empty(), "ARCHITECTURE.md names files that do not exist: {gone:?}");
}
