//! Checking a plugin file without loading it.
//!
//! A relup check must not change the running node (SPEC §5.1), yet it must say whether every
//! module file of the target release is a hotcode plugin and whether every `apply` target
//! exists. Opening a library with `dlopen` runs its initialisers and maps it into the process,
//! so this module reads the file instead: the ELF header (the same check the loader makes
//! first, `loader::check_elf`), the dynamic symbol table, which is what `dlsym`
//! would search, and the first bytes of the module header (magic and ABI version, which are
//! never relocated). The full checks (descriptor layout, module name) still run at
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
use object::{Object, ObjectKind, ObjectSection, ObjectSymbol};
use plugin_api::{ABI_VERSION, APPLY_SYMBOL_PREFIX, MAGIC, MODULE_SYMBOL, PANIC_UNWIND_SYMBOL};

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
/// an ELF shared object for this target, its dynamic symbol table defines [`MODULE_SYMBOL`],
/// whose bytes in the file start with [`MAGIC`] and this host's [`ABI_VERSION`], and
/// [`PANIC_UNWIND_SYMBOL`] (a plugin built with `panic = "abort"` lacks it). Returns the
/// `apply` functions it exports.
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
/// - [`LoadErrorKind::MissingSymbol`] if it does not define [`MODULE_SYMBOL`];
/// - [`LoadErrorKind::BadMagic`] or [`LoadErrorKind::AbiVersion`] if the header is not one
///   this host reads;
/// - [`LoadErrorKind::PanicAbort`] if it was built with `panic = "abort"`.
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
    let mut header = None;
    let mut unwinds = false;
    let mut apply_functions = Vec::new();
    for symbol in elf.dynamic_symbols() {
        // Only a global definition is something `dlsym` would find in this file.
        if !symbol.is_definition() || symbol.is_local() {
            continue;
        }
        // A name that is not UTF-8 is neither the header nor a function a macro could name.
        let Ok(name) = symbol.name() else { continue };
        if name == MODULE_SYMBOL {
            header = Some(header_prefix(&elf, &symbol)?);
        } else if name == PANIC_UNWIND_SYMBOL {
            unwinds = true;
        } else if let Some(function) = name.strip_prefix(APPLY_SYMBOL_PREFIX) {
            apply_functions.push(function.to_owned());
        }
    }
    let Some((magic, abi_version)) = header else {
        return Err(LoadErrorKind::MissingSymbol);
    };
    // The same checks, in the same order, as the loader makes on the mapped header.
    if magic != MAGIC {
        return Err(LoadErrorKind::BadMagic);
    }
    if abi_version != ABI_VERSION {
        return Err(LoadErrorKind::AbiVersion { found: abi_version, expected: ABI_VERSION });
    }
    if !unwinds {
        return Err(LoadErrorKind::PanicAbort);
    }
    apply_functions.sort_unstable();
    apply_functions.dedup();
    Ok(PluginFile { apply_functions })
}

/// The frozen start of the module header as the file holds it: the magic bytes and the
/// ABI version (neither is relocated, so the bytes on disk are the bytes `dlopen` maps).
fn header_prefix<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    symbol: &object::Symbol<'data, '_, R>,
) -> Result<([u8; 8], u32), LoadErrorKind> {
    const LEN: u64 = 12;
    let bad = |why: &str| LoadErrorKind::NotSharedObject(format!("`{MODULE_SYMBOL}` {why}"));
    let index = symbol.section_index().ok_or_else(|| bad("is not in a section"))?;
    let section = elf.section_by_index(index).map_err(|e| bad(&e.to_string()))?;
    let bytes = section
        .data_range(symbol.address(), LEN)
        .map_err(|e| bad(&e.to_string()))?
        .ok_or_else(|| bad("lies outside its section's data"))?;
    let magic: [u8; 8] = bytes[..8].try_into().map_err(|_| bad("is too short"))?;
    let version: [u8; 4] = bytes[8..12].try_into().map_err(|_| bad("is too short"))?;
    Ok((magic, u32::from_ne_bytes(version)))
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
