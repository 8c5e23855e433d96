//! Typed errors. Each names the file, module or version it is about, and each failure
//! leaves the code server as it was.

use std::path::PathBuf;

use crate::code::code_server::Holder;

/// Loading a module's object code failed; nothing was loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load module `{module}` from {}: {kind}", path.display())]
pub struct LoadError {
    /// The module that was asked for.
    pub module: String,
    /// The file that was asked for (not the private copy).
    pub path: PathBuf,
    /// What was wrong.
    pub kind: LoadErrorKind,
}

/// What was wrong with a library file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// The file does not exist.
    #[error("no such file")]
    NotFound,
    /// The file could not be read or copied.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The file is not an ELF shared object for this target.
    #[error("not a shared object for this target: {0}")]
    NotSharedObject(String),
    /// The dynamic loader refused the file.
    #[error("dlopen failed: {0}")]
    Dlopen(String),
    /// The library does not export the module header symbol.
    #[error("it exports no `{}` symbol, so it is not a hotcode plugin", plugin_api::MODULE_SYMBOL)]
    MissingSymbol,
    /// The header's magic bytes are wrong.
    #[error("the `{}` symbol is not a hotcode module header", plugin_api::MODULE_SYMBOL)]
    BadMagic,
    /// The plugin was built against another plugin-api ABI version.
    #[error("plugin ABI version {found}, but this host speaks version {expected}")]
    AbiVersion {
        /// The plugin's version.
        found: u32,
        /// The host's version.
        expected: u32,
    },
    /// The plugin was built with `panic = "abort"`: its first panic would abort the node.
    #[error(
        "it was built with panic = \"abort\", so its first panic would abort the whole node; \
         build it with unwinding panics (remove `panic = \"abort\"` from its Cargo profile)"
    )]
    PanicAbort,
    /// A type at the boundary has another layout in the plugin than the host expects.
    #[error("incompatible layout of {what} (built against an incompatible plugin-api?): {details}")]
    LayoutMismatch {
        /// Which type: the descriptor, or an interface.
        what: String,
        /// abi_stable's report, or a summary of it.
        details: String,
    },
    /// The descriptor names another module.
    #[error("the library is module `{found}`, not `{expected}`")]
    NameMismatch {
        /// The name asked for.
        expected: String,
        /// The name in the descriptor.
        found: String,
    },
    /// The file, or a directory above it, is not the node's own: owned by another uid, or
    /// writable by group or others, so what gets loaded is not under the owner's control.
    #[error("{0}")]
    Untrusted(crate::code::trust::Untrusted),
    /// The file's SHA-256 is not the one its release recorded.
    #[error("SHA-256 mismatch: the release recorded {expected}, the file has {found}")]
    HashMismatch {
        /// The recorded digest (hex).
        expected: String,
        /// The file's digest (hex).
        found: String,
    },
    /// A library module without a typed interface.
    #[error("library module exports no interface")]
    NoInterface,
    /// The module exports another interface than the one its handles use.
    #[error("it exports interface `{found}`, but `{expected}` is expected")]
    WrongInterface {
        /// The interface in use.
        expected: String,
        /// The interface the file exports.
        found: String,
    },
}

/// A code server operation was refused; the code server is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodeServerError {
    /// Loading object code failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `load` of a module for which no object code was staged by `load_object_code`.
    #[error("no object code staged for module `{module}`: load_object_code must come first")]
    NoStagedCode {
        /// The module.
        module: String,
    },
    /// The module's old code is still in use, and the purge method was `soft_purge`.
    #[error("old code of module `{module}` is still in use by {}", holders_list(.holders))]
    OldProcesses {
        /// The module.
        module: String,
        /// Who holds the old code.
        holders: Vec<Holder>,
    },
    /// The module is unknown to this code server.
    #[error("module `{module}` is not loaded")]
    NotLoaded {
        /// The module.
        module: String,
    },
    /// A handle asked for another interface than the module exports.
    #[error("module `{module}` exports interface `{found}`, not `{expected}`")]
    WrongInterface {
        /// The module.
        module: String,
        /// The interface asked for.
        expected: String,
        /// The interface the module exports.
        found: String,
    },
    /// The directory for private library copies could not be made or examined.
    #[error("cannot make the directory for private library copies {}: {source}", path.display())]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The directory for private library copies, or the one holding it, is not safe to
    /// use: whoever else could write it could change the code the node maps.
    #[error("refusing {} for private library copies: it {problem}", path.display())]
    UnsafeScratch {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

fn holders_list(holders: &[Holder]) -> String {
    let names: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
    names.join(", ")
}

/// A call through a handle failed. The module's state is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// An async call's future was dropped because the version it entered was purged
    /// (a brutal purge drops in-flight futures before unloading their version).
    #[error("`{module}`: the version this async call entered was purged before it completed")]
    Purged {
        /// The module.
        module: String,
    },
    /// The module has no current version (never loaded, or removed).
    #[error("module `{module}` is not loaded")]
    NotLoaded {
        /// The module.
        module: String,
    },
    /// The plugin panicked or returned an error.
    #[error("call into module `{module}` failed: {error}")]
    Plugin {
        /// The module.
        module: String,
        /// What the plugin reported.
        #[source]
        error: plugin_api::PluginError,
    },
    /// Calls nested deeper than the per-thread limit.
    #[error(
        "calls nest deeper than {} levels (entering module `{module}`)",
        crate::code::hold::MAX_DEPTH
    )]
    TooDeep {
        /// The module.
        module: String,
    },
    /// The thread is exiting and can no longer enter plugin code.
    #[error("the calling thread is exiting (entering module `{module}`)")]
    ThreadExiting {
        /// The module.
        module: String,
    },
}

/// An `apply` of a plugin-exported function failed. Nothing changed on the host side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The module has no current version.
    #[error("module `{module}` is not loaded")]
    NotLoaded {
        /// The module.
        module: String,
    },
    /// The module exports no such function.
    #[error(
        "module `{module}` exports no function `{function}` for apply (it exports: {exported})"
    )]
    Undefined {
        /// The module.
        module: String,
        /// The function.
        function: String,
        /// What it does export, comma-separated.
        exported: String,
    },
    /// The function returned an error or panicked.
    #[error("{module}:{function} failed: {error}")]
    Failed {
        /// The module.
        module: String,
        /// The function.
        function: String,
        /// What the plugin reported.
        #[source]
        error: plugin_api::PluginError,
    },
}
