//! Checking a plugin file without loading it.
//!
//! A relup check must not change the running node (SPEC §5.1), yet it must say whether every
//! module file of the target release is a hotcode plugin and whether every `apply` target
//! exists. Opening a library with `dlopen` runs its initialisers and maps it into the process,
//! so this module reads the file instead: the ELF header (the same check the loader makes
//! first, `loader::check_elf`) and the dynamic symbol table, which is what `dlsym`
//! would search. The full checks (ABI version, descriptor layout, module name) still run at
//! `load_object_code`, before the point of no return.
//!
//! The dynamic symbol table is read with the `object` crate rather than by hand: a
//! maintained, fuzzed ELF reader copes with malformed section headers, string tables and
//! symbol counts, which is exactly what a file given on the command line may hold.
//!
//! What a plugin exports is the naming contract of `plugin_api::export_module!`: the header
//! symbol [`plugin_api::MODULE_SYMBOL`], and one symbol per `apply` function, named
//! [`plugin_api::APPLY_SYMBOL_PREFIX`] followed by the function's name.

use std::fs::File;
use std::io;
use std::path::Path;

use object::read::ReadCache;
use object::{Object, ObjectKind, ObjectSymbol};
use plugin_api::{APPLY_SYMBOL_PREFIX, MODULE_SYMBOL};

use crate::code::error::LoadErrorKind;

/// The largest file taken for a plugin. Real plugins are a few MiB (tens with debug info);
/// anything this big is not one, and refusing it early keeps a check cheap and bounded.
pub const MAX_PLUGIN_SIZE: u64 = 256 * 1024 * 1024;

/// What a plugin file says about itself without being loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginFile {
    /// The functions the module exports for `{apply, {M, F, Args}}`, sorted and without
    /// duplicates: the names of its defined dynamic symbols that start with
    /// [`APPLY_SYMBOL_PREFIX`], with the prefix removed.
    pub apply_functions: Vec<String>,
}

impl PluginFile {
    /// Whether the module exports `function` for `apply`.
    pub fn exports_apply(&self, function: &str) -> bool {
        self.apply_functions.binary_search_by(|name| name.as_str().cmp(function)).is_ok()
    }
}

/// Checks, without loading it, that the file at `path` is a hotcode plugin: it exists, it is
/// an ELF shared object for this target, and its dynamic symbol table defines
/// [`MODULE_SYMBOL`]. Returns the `apply` functions it exports.
///
/// The error says what was wrong but not which file: the caller, who knows which module and
/// release the file stands for, names it (as [`crate::LoadError`] does).
///
/// # Errors
///
/// - [`LoadErrorKind::NotFound`] if there is no such file;
/// - [`LoadErrorKind::Io`] if it cannot be read;
/// - [`LoadErrorKind::NotSharedObject`] if it is not an ELF shared object for this target,
///   is malformed, or is larger than [`MAX_PLUGIN_SIZE`];
/// - [`LoadErrorKind::MissingSymbol`] if it does not define [`MODULE_SYMBOL`].
pub fn inspect_plugin(path: &Path) -> Result<PluginFile, LoadErrorKind> {
    crate::code::loader::check_elf(path)?;
    let file = File::open(path).map_err(open_error)?;
    let size = file.metadata().map_err(LoadErrorKind::Io)?.len();
    if size > MAX_PLUGIN_SIZE {
        return Err(LoadErrorKind::NotSharedObject(format!(
            "too large ({size} bytes; a plugin may have at most {MAX_PLUGIN_SIZE})"
        )));
    }
    // The cache reads only the ranges the parser asks for (headers, the dynamic symbol and
    // string tables), never the whole file.
    let data = ReadCache::new(file);
    let malformed = |error: object::Error| {
        LoadErrorKind::NotSharedObject(format!("malformed ELF file: {error}"))
    };
    let elf = object::File::parse(&data).map_err(malformed)?;
    if elf.kind() != ObjectKind::Dynamic {
        return Err(LoadErrorKind::NotSharedObject(
            "an ELF file, but not a shared object".to_owned(),
        ));
    }
    let mut has_header = false;
    let mut apply_functions = Vec::new();
    for symbol in elf.dynamic_symbols() {
        // Only a global definition is something `dlsym` would find in this file.
        if !symbol.is_definition() || symbol.is_local() {
            continue;
        }
        // A name that is not UTF-8 is neither the header nor a function a macro could name.
        let Ok(name) = symbol.name() else { continue };
        if name == MODULE_SYMBOL {
            has_header = true;
        } else if let Some(function) = name.strip_prefix(APPLY_SYMBOL_PREFIX) {
            apply_functions.push(function.to_owned());
        }
    }
    if !has_header {
        return Err(LoadErrorKind::MissingSymbol);
    }
    apply_functions.sort_unstable();
    apply_functions.dedup();
    Ok(PluginFile { apply_functions })
}

/// The error for a file that could not be opened, telling a missing file apart.
fn open_error(error: io::Error) -> LoadErrorKind {
    match error.kind() {
        io::ErrorKind::NotFound => LoadErrorKind::NotFound,
        _ => LoadErrorKind::Io(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real plugin files are checked by the integration tests (`tests/it/elf.rs`), which build
    // them; these cover what needs no plugin.

    #[test]
    fn a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = inspect_plugin(&dir.path().join("nothing.so")).unwrap_err();
        assert!(matches!(err, LoadErrorKind::NotFound), "{err:?}");
    }

    #[test]
    fn a_text_file_is_not_a_shared_object() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notes.so");
        std::fs::write(&path, "just some text, long enough for a header\n").expect("write");
        let err = inspect_plugin(&path).unwrap_err();
        assert!(matches!(err, LoadErrorKind::NotSharedObject(_)), "{err:?}");
    }

    #[test]
    fn a_torn_shared_object_is_malformed_not_a_panic() {
        // A real ELF header for this target, cut off right after it: the header check
        // passes, the program and section headers it points at are missing.
        let exe = std::env::current_exe().expect("test executable");
        let bytes = std::fs::read(&exe).expect("read test executable");
        let mut header = bytes[..64].to_vec();
        // Make it a shared object (e_type = ET_DYN) even if the executable is not PIE.
        let et_dyn = 3u16;
        header[16..18].copy_from_slice(&if cfg!(target_endian = "little") {
            et_dyn.to_le_bytes()
        } else {
            et_dyn.to_be_bytes()
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("torn.so");
        std::fs::write(&path, &header).expect("write");
        match inspect_plugin(&path) {
            Err(LoadErrorKind::NotSharedObject(why)) => assert!(why.contains("malformed"), "{why}"),
            other => panic!("expected a malformed-file error, got {other:?}"),
        }
    }

    #[test]
    fn lookup_of_apply_functions() {
        let file = PluginFile { apply_functions: vec!["release".into(), "reset".into()] };
        assert!(file.exports_apply("reset"));
        assert!(!file.exports_apply("waiting"));
    }
}
