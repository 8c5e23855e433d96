//! `hotcode::code::elf::inspect_plugin`: checking real plugin files without loading them, and the
//! naming contract between `export_module!` and the checker.

use std::path::Path;

use hotcode::LoadErrorKind;
use hotcode::code::elf::{PluginFile, inspect_plugin};

use crate::fixtures;

fn inspect(path: &Path) -> PluginFile {
    inspect_plugin(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_plugin_with_apply_functions_lists_them_sorted() {
    let stubborn = inspect(&fixtures::plugin("fixture-stubborn"));
    assert_eq!(
        stubborn.apply_functions,
        ["block", "bomb", "panic_in_drop", "release", "reset", "waiting"]
    );
    assert!(stubborn.exports_apply("reset"));
    // A call it answers is not a function it exports.
    assert!(!stubborn.exports_apply("crash"));
    assert!(!stubborn.exports_apply("block_terminate"));

    let flaky = inspect(&fixtures::plugin("fixture-flaky-sup"));
    assert_eq!(flaky.apply_functions, ["break_specs", "fix_specs"]);
}

#[test]
fn a_plugin_without_apply_functions_lists_none() {
    assert!(inspect(&fixtures::plugin("greeter-v1")).apply_functions.is_empty());
    assert!(inspect(&fixtures::module_lib("prim_app-2", "prim_sup")).apply_functions.is_empty());
}

#[test]
fn the_file_lists_what_the_loaded_descriptor_exports() {
    // The symbols are written by the macro and the names in the descriptor by the same
    // macro invocation; loading the module and asking it shows the two agree.
    let path = fixtures::plugin("fixture-stubborn");
    let node = crate::node_with(&[("stubborn", path.clone())]);
    let err = node.code().apply("stubborn", "no_such_function", vec![]).unwrap_err();
    let hotcode::ApplyError::Undefined { exported, .. } = err else {
        panic!("expected an undefined-function error, got {err}");
    };
    let mut loaded: Vec<&str> = exported.split(", ").collect();
    loaded.sort_unstable();
    assert_eq!(inspect(&path).apply_functions, loaded);
}

#[test]
fn a_shared_object_without_the_module_symbol_is_refused() {
    let err = inspect_plugin(&fixtures::plugin("fixture-no-symbol")).unwrap_err();
    assert!(matches!(err, LoadErrorKind::MissingSymbol), "{err:?}");
}

#[test]
fn a_missing_file_is_not_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = inspect_plugin(&dir.path().join("prim_sup.so")).unwrap_err();
    assert!(matches!(err, LoadErrorKind::NotFound), "{err:?}");
}

#[test]
fn a_text_file_is_not_a_shared_object() {
    // A `.app` file is what a slip in a release directory would most likely put there.
    let err = inspect_plugin(&fixtures::app_file("prim_app-1")).unwrap_err();
    assert!(matches!(err, LoadErrorKind::NotSharedObject(_)), "{err:?}");
}

#[test]
fn an_executable_is_not_a_plugin() {
    // The test executable is an ELF file for this target. Built as a position-independent
    // executable it is even of type ET_DYN and passes the header check, so it is the symbol
    // table that refuses it; otherwise the header check does.
    let exe = std::env::current_exe().expect("test executable");
    let err = inspect_plugin(&exe).unwrap_err();
    assert!(
        matches!(err, LoadErrorKind::MissingSymbol | LoadErrorKind::NotSharedObject(_)),
        "{err:?}"
    );
}
