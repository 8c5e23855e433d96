//! Bad input: each case is a typed error naming the file or module, and changes nothing.

use std::path::Path;

use hotcode::{CallError, CodeServer, CodeServerError, LoadError, LoadErrorKind, Purged};

use crate::{SoftPurge, answering, fixtures, serving};

/// Asserts the server still serves v1 exactly as before: nothing staged, one copy mapped,
/// and no file in the scratch directory (a copy is unlinked once it is open, and a refused
/// one at once).
fn unchanged(server: &CodeServer, greeter: &hotcode::Handle<plugin_api::interfaces::Greeter>) {
    assert_eq!(answering(greeter), 1);
    let status = server.status();
    assert_eq!(status.modules.len(), 1);
    assert_eq!(status.modules[0].staged, None);
    assert_eq!(status.modules[0].old, None);
    let copies = std::fs::read_dir(server.scratch_dir()).unwrap().count();
    assert_eq!(copies, 0, "no private copy left behind");
    let mapped = hotcode::code::maps::mapped_files_under(server.scratch_dir()).unwrap();
    assert_eq!(mapped.len(), 1, "only the serving version is mapped: {mapped:?}");
}

fn load_err(server: &CodeServer, module: &str, path: &Path) -> LoadError {
    match server.load_object_code(module, path) {
        Ok(v) => panic!("loading {} as {module} should fail, got {v:?}", path.display()),
        Err(e) => {
            assert_eq!(e.module, module);
            assert_eq!(e.path, path);
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "message names the file: {msg}");
            e
        }
    }
}

#[test]
fn missing_file() {
    let (server, greeter) = serving(1);
    let path = Path::new("/nonexistent/greeter.so");
    assert!(matches!(load_err(&server, "greeter", path).kind, LoadErrorKind::NotFound));
    unchanged(&server, &greeter);
}

#[test]
fn not_an_elf() {
    let (server, greeter) = serving(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greeter.so");
    std::fs::write(&path, "this is a text file, not a library\n").unwrap();
    let err = load_err(&server, "greeter", &path);
    assert!(matches!(err.kind, LoadErrorKind::NotSharedObject(_)), "{err}");
    // An ELF that is not a shared object (an executable) is refused the same way.
    let exe = std::env::current_exe().unwrap();
    let err = load_err(&server, "greeter", &exe);
    assert!(
        matches!(err.kind, LoadErrorKind::NotSharedObject(_) | LoadErrorKind::Dlopen(_)),
        "{err}"
    );
    unchanged(&server, &greeter);
}

#[test]
fn elf_without_the_module_symbol() {
    let (server, greeter) = serving(1);
    let path = fixtures::plugin("fixture-no-symbol");
    let err = load_err(&server, "greeter", &path);
    assert!(matches!(err.kind, LoadErrorKind::MissingSymbol), "{err}");
    assert!(err.to_string().contains("HOTCODE_MODULE"));
    unchanged(&server, &greeter);
}

#[test]
fn plugin_built_against_an_incompatible_interface_layout() {
    let (server, greeter) = serving(1);
    let path = fixtures::plugin("fixture-layout-mismatch");
    let err = load_err(&server, "greeter", &path);
    assert!(matches!(err.kind, LoadErrorKind::LayoutMismatch { .. }), "{err}");
    assert!(err.to_string().contains("interface Greeter"), "{err}");
    unchanged(&server, &greeter);
}

#[test]
fn incompatible_layout_is_caught_against_the_current_version_without_a_handle() {
    let _ = env_logger::builder().is_test(true).try_init();
    let server = CodeServer::new().unwrap();
    server.load_object_code("greeter", fixtures::greeter_v1()).unwrap();
    server.load("greeter", SoftPurge, SoftPurge).unwrap();
    let path = fixtures::plugin("fixture-layout-mismatch");
    let err = load_err(&server, "greeter", &path);
    assert!(matches!(err.kind, LoadErrorKind::LayoutMismatch { .. }), "{err}");
    // And the first-ever load of it succeeds, but no Greeter handle can be made for it.
    server.load_object_code("odd", &path).unwrap_err(); // named `greeter` inside
    let other = CodeServer::new().unwrap();
    other.load_object_code("greeter", &path).unwrap();
    other.load("greeter", SoftPurge, SoftPurge).unwrap();
    match other.handle::<plugin_api::interfaces::Greeter>("greeter") {
        Err(CodeServerError::Load(e)) => {
            assert!(matches!(e.kind, LoadErrorKind::LayoutMismatch { .. }))
        }
        other => panic!("expected a layout error, got {other:?}"),
    }
}

#[test]
fn descriptor_names_another_module() {
    let (server, greeter) = serving(1);
    let path = fixtures::greeter_v2();
    let err = load_err(&server, "farewell", &path);
    match &err.kind {
        LoadErrorKind::NameMismatch { expected, found } => {
            assert_eq!((expected.as_str(), found.as_str()), ("farewell", "greeter"));
        }
        other => panic!("expected NameMismatch, got {other:?}"),
    }
    unchanged(&server, &greeter);
}

#[test]
fn load_without_staged_object_code() {
    let (server, greeter) = serving(1);
    match server.load("greeter", SoftPurge, SoftPurge) {
        Err(CodeServerError::NoStagedCode { module }) => assert_eq!(module, "greeter"),
        other => panic!("expected NoStagedCode, got {other:?}"),
    }
    assert!(matches!(
        server.load("ghost", SoftPurge, SoftPurge),
        Err(CodeServerError::NoStagedCode { .. })
    ));
    unchanged(&server, &greeter);
}

#[test]
fn call_to_a_removed_module() {
    let (server, greeter) = serving(1);
    assert_eq!(server.remove("greeter", SoftPurge, SoftPurge).unwrap(), Purged::Unloaded);
    let err = greeter.call(|g| g.version()).unwrap_err();
    assert!(matches!(&err, CallError::NotLoaded { module } if module == "greeter"));
    assert_eq!(err.to_string(), "module `greeter` is not loaded");
}

#[test]
fn handle_for_an_unknown_module() {
    let (server, _greeter) = serving(1);
    match server.handle::<plugin_api::interfaces::Greeter>("nope") {
        Err(CodeServerError::NotLoaded { module }) => assert_eq!(module, "nope"),
        other => panic!("expected NotLoaded, got {other:?}"),
    }
    assert!(matches!(server.holders("nope"), Err(CodeServerError::NotLoaded { .. })));
}
