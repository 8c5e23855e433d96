//! Checks that check: `hotcode check --root`, `check_install` and the loader refuse, from
//! the files, what `install` would refuse or mishandle (issue: no silent failure).

use std::ffi::OsStr;
use std::path::Path;

use hotcode::LoadErrorKind;
use hotcode::code::elf::inspect_plugin;
use hotcode::release_handler::{ErrorAction, ReleaseError, ReleaseHandler};

use crate::cli::hotcode;
use crate::fixtures;

/// Puts `lib` in B's ch_app as ch3 and records B's hashes again, as a rebuild would.
fn replace_ch3(root: &Path, lib: &Path) {
    std::fs::copy(lib, root.join("lib/ch_app-1/ch3.so")).expect("copy ch3");
    fixtures::record_release(
        root,
        "B",
        &[
            "lib/prim_app-2/prim_app.so",
            "lib/prim_app-2/prim_sup.so",
            "lib/ch_app-1/ch_app.so",
            "lib/ch_app-1/ch_sup.so",
            "lib/ch_app-1/ch3.so",
        ],
    );
}

fn check_root(relup: &Path, root: &Path) -> (Option<i32>, String) {
    let out =
        hotcode(&[OsStr::new("check"), relup.as_os_str(), OsStr::new("--root"), root.as_os_str()]);
    (out.code, out.stdout)
}

fn refused(h: &ReleaseHandler, vsn: &str) -> String {
    match h.check_install(vsn) {
        Err(ReleaseError::Check { problems, .. }) => problems.join("\n"),
        other => panic!("check_install {vsn} should refuse, got {other:?}"),
    }
}

#[test]
fn the_files_say_abi_version_and_panic_strategy() {
    match inspect_plugin(&fixtures::plugin("fixture-abi-mismatch")) {
        Err(LoadErrorKind::AbiVersion { found, expected }) => {
            assert_eq!((found, expected), (plugin_api::ABI_VERSION - 1, plugin_api::ABI_VERSION))
        }
        other => panic!("expected an ABI version error, got {other:?}"),
    }
    let err = inspect_plugin(&fixtures::plugin("fixture-panic-abort")).unwrap_err();
    assert!(matches!(err, LoadErrorKind::PanicAbort), "{err:?}");
    assert!(err.to_string().contains("panic = \"abort\""), "{err}");
    // Every real plugin carries the unwind marker the macro exports, under the name the
    // host looks for.
    for lib in [fixtures::greeter_v1(), fixtures::module_lib("ch_app-1", "ch3")] {
        inspect_plugin(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    }
}

#[test]
fn the_loader_refuses_a_panic_abort_plugin_and_an_old_abi() {
    let node = crate::node_with(&[]);
    for (lib, want) in [
        (fixtures::plugin("fixture-panic-abort"), "panic = \"abort\""),
        (fixtures::plugin("fixture-abi-mismatch"), "plugin ABI version"),
    ] {
        let err = node.code().load_object_code("ch3", &lib).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains(&lib.display().to_string()), "{err}");
    }
    assert!(node.code().status().modules.iter().all(|m| m.staged.is_none()), "nothing staged");
}

#[test]
fn check_with_a_root_refuses_a_panic_abort_plugin() {
    let root = fixtures::release_root("included-app-supervisor");
    replace_ch3(root.path(), &fixtures::plugin("fixture-panic-abort"));
    let relup = root.path().join("releases/B/relup");
    let (code, out) = check_root(&relup, root.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("module ch3") && out.contains("panic = \"abort\""), "{out}");
    // The release handler's own check says the same before anything is loaded.
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot A");
    let problems = refused(&h, "B");
    assert!(problems.contains("panic = \"abort\""), "{problems}");
}

#[test]
fn check_install_refuses_an_abi_mismatch_before_install_would() {
    let root = fixtures::release_root("included-app-supervisor");
    replace_ch3(root.path(), &fixtures::plugin("fixture-abi-mismatch"));
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot A");
    let problems = refused(&h, "B");
    let (old, ours) = (plugin_api::ABI_VERSION - 1, plugin_api::ABI_VERSION);
    assert!(
        problems.contains("lib/ch_app-1/ch3.so")
            && problems.contains(&format!("ABI version {old}")),
        "{problems}"
    );
    let (code, out) = check_root(&root.path().join("releases/B/relup"), root.path());
    assert_eq!(code, Some(1), "{out}");
    let says = format!("plugin ABI version {old}, but this host speaks version {ours}");
    assert!(out.contains(&says), "{out}");
    assert_eq!(h.current(), "A");
}

#[test]
fn a_relup_for_another_release_than_its_directory_is_refused() {
    let root = fixtures::release_root("included-app-supervisor");
    let relup = root.path().join("releases/B/relup");
    let text = std::fs::read_to_string(&relup).expect("relup");
    let renamed = text.replacen("{\"B\"", "{\"2.0\"", 1);
    assert_ne!(text, renamed, "the seed relup starts with {{\"B\"");
    std::fs::write(&relup, renamed).expect("write relup");
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot A");
    for err in [h.check_install("B").unwrap_err(), h.install("B").unwrap_err()] {
        let text = err.to_string();
        assert!(text.contains("for release \"2.0\"") && text.contains("release \"B\""), "{text}");
    }
    assert_eq!(h.current(), "A", "nothing installed");
    let (code, out) = check_root(&relup, root.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("for release \"2.0\""), "{out}");
}

#[test]
fn a_module_that_its_app_does_not_list_is_refused() {
    let root = fixtures::release_root("included-app-supervisor");
    let app = root.path().join("lib/ch_app-1/ch_app.app");
    let text = std::fs::read_to_string(&app).expect(".app");
    let without = text.replace(", ch3]", "]").replace("ch3, ", "");
    assert_ne!(text, without, "ch_app.app lists ch3");
    std::fs::write(&app, without).expect("write .app");
    let h = ReleaseHandler::boot(root.path(), ErrorAction::Return).expect("boot A");
    let problems = refused(&h, "B");
    assert!(problems.contains("module ch3 is not a module of ch_app 1"), "{problems}");
    let (code, out) = check_root(&root.path().join("releases/B/relup"), root.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("module ch3 is not a module of ch_app 1"), "{out}");
}

#[test]
fn a_panic_payload_whose_drop_panics_is_an_error_not_an_abort() {
    let node = crate::node_with(&[("stubborn", fixtures::plugin("fixture-stubborn"))]);
    let err = node.code().apply("stubborn", "bomb", vec![]).unwrap_err().to_string();
    assert!(err.contains("panicked") && err.contains("a non-string panic payload"), "{err}");
    // The node goes on: the module still answers.
    assert_eq!(node.code().apply("stubborn", "waiting", vec![]).unwrap(), plugin_api::Term::Int(0));
}

/// Set in the child process of the test below.
const CHILD_ENV: &str = "HOTCODE_TEST_PANIC_IN_DROP_CHILD";

#[test]
fn a_panic_in_drop_during_unwinding_is_logged_before_rust_aborts() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: Rust aborts the process inside this call.
        let node = crate::node_with(&[("stubborn", fixtures::plugin("fixture-stubborn"))]);
        let _ = node.code().apply("stubborn", "panic_in_drop", vec![]);
        unreachable!("a panic escaping a destructor during unwinding aborts the process");
    }
    let exe = std::env::current_exe().expect("test executable");
    let out = std::process::Command::new(exe)
        .args(["--exact", "checks::a_panic_in_drop_during_unwinding_is_logged_before_rust_aborts"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}\n{stderr}", out.status);
    assert!(
        stderr.contains("hotcode plugin: panicked at")
            && stderr.contains("while the panic from")
            && stderr.contains("Rust aborts the process")
            && stderr.contains("stubborn/src/lib.rs"),
        "{stderr}"
    );
}
