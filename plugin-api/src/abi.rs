//! The exported module header and descriptor: the frozen part of the boundary.
//!
//! A plugin exports exactly one symbol, [`MODULE_SYMBOL`], a [`ModuleHeader`]. The header's own
//! layout never changes: a magic number, the [`ABI_VERSION`], and two pointers. The host reads
//! the magic and the version first, then checks the descriptor's layout against its own with
//! abi_stable's layout checker, and only then reads the [`ModuleDescriptor`]. Everything the
//! descriptor points at lives in the plugin's image, so the host copies what it needs (names,
//! version strings) into its own memory before it ever unloads the plugin.
//!
//! Architecture invariant: no type here uses abi_stable's prefix types, non-exhaustive enums
//! or extra checks. Checking those makes abi_stable remember metadata in process-wide maps,
//! and that metadata would point into a library after it is unloaded.
//!
//! Symbol naming contract: [`MODULE_SYMBOL`] is the only symbol the host reads through. A
//! module with `apply` functions also exports one marker symbol per function, named
//! [`APPLY_SYMBOL_PREFIX`] followed by the function's name, so that a file can be checked
//! without loading it.

use std::ffi::c_void;

use abi_stable::StableAbi;
use abi_stable::std_types::{ROption, RSlice, RStr, RString};
use abi_stable::type_layout::TypeLayout;

use crate::interface::Interface;
use crate::services::HostServices;
use crate::term::{RTerm, RTermRef, Term};

/// The name of the one symbol a plugin exports: a `static` [`ModuleHeader`].
pub const MODULE_SYMBOL: &str = "HOTCODE_MODULE";

/// The prefix of the dynamic symbols that name a module's `apply` functions.
///
/// Besides [`MODULE_SYMBOL`], [`export_module!`](crate::export_module) exports one symbol
/// per function listed under `functions`: `hotcode_apply_<name>`, where `<name>` is `F` of
/// `{apply, {M, F, Args}}` exactly as written in the macro. They let a relup check list a
/// module file's `apply` functions from its dynamic symbol table without loading the file
/// (SPEC §5.1: "every `apply` target exists"). They are names, not an entry point: the host
/// calls the functions only through [`ModuleDescriptor::functions`] of a loaded, checked
/// module. The macro spells this prefix out in a `concat!`, which cannot read a constant;
/// the host's tests check that the two agree.
pub const APPLY_SYMBOL_PREFIX: &str = "hotcode_apply_";

/// The dynamic symbol a plugin built with `panic = "unwind"` exports (a one-byte static).
///
/// [`export_module!`](crate::export_module) exports it only when the plugin is compiled with
/// unwinding panics, so a release check can tell from the file alone that a plugin would
/// abort the whole node on its first panic. The descriptor records the same fact in
/// [`ModuleDescriptor::panic_strategy`] for the loader. The macro spells the name out; the
/// host's tests check that the two agree.
pub const PANIC_UNWIND_SYMBOL: &str = "hotcode_panic_unwind";

/// The magic bytes at the start of every [`ModuleHeader`].
pub const MAGIC: [u8; 8] = *b"HOTCODE\0";

/// The version of this boundary. Bumped on every incompatible change to the header, the
/// descriptor, or the way function tables are called; the host refuses any other version.
///
/// Version 2 added [`ModuleDescriptor::panic_strategy`]; version 3 passes the host's
/// [`HostServices`] to [`ModuleDescriptor::on_load`]; version 4 adds the host's async services
/// ([`HostServices::sleep_ms`]) and futures across the boundary ([`FfiFuture`](crate::future::FfiFuture));
/// version 5 has a library interface's functions return their value directly (in registers
/// when it fits) and write an error only on failure, through a trailing
/// `&mut ROption<RPluginError>` argument, instead of returning an `RResult`.
pub const ABI_VERSION: u32 = 5;

/// How a plugin was compiled to handle panics (its `panic` profile setting).
///
/// The host runs only `Unwind` plugins: with `panic = "abort"` the plugin's first panic
/// aborts the whole node, where an unwinding panic is caught at the boundary and becomes an
/// error (a crashed process, a failed call).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicStrategy {
    /// `panic = "unwind"` (Cargo's default).
    Unwind,
    /// `panic = "abort"`.
    Abort,
}

impl PanicStrategy {
    /// The strategy this crate, and so the plugin that links it, was compiled with.
    pub const COMPILED: PanicStrategy =
        if cfg!(panic = "unwind") { PanicStrategy::Unwind } else { PanicStrategy::Abort };
}

/// What kind of module a plugin is, in OTP's words.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A library module: a typed interface that threads call through a `Handle`.
    Library,
    /// A `gen_server`-like callback module run by a host process.
    GenServer,
    /// A supervisor callback module.
    Supervisor,
    /// An application callback module.
    Application,
}

impl Behaviour {
    /// The behaviour's name as OTP writes it (`library` for plain modules).
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Library => "library",
            Behaviour::GenServer => "gen_server",
            Behaviour::Supervisor => "supervisor",
            Behaviour::Application => "application",
        }
    }
}

/// The frozen header behind [`MODULE_SYMBOL`].
///
/// Its layout is part of the contract forever: only [`ABI_VERSION`] changes say what the
/// descriptor looks like.
#[repr(C)]
pub struct ModuleHeader {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The [`ABI_VERSION`] the plugin was built with.
    pub abi_version: u32,
    /// The layout of [`ModuleDescriptor`] as the plugin saw it when it was compiled.
    pub descriptor_layout: &'static TypeLayout,
    /// The module's descriptor; read only after `descriptor_layout` checked out.
    pub descriptor: &'static ModuleDescriptor,
}

impl ModuleHeader {
    /// Builds the header for a descriptor; used by [`export_module!`](crate::export_module).
    pub const fn new(descriptor: &'static ModuleDescriptor) -> Self {
        ModuleHeader {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            descriptor_layout: <ModuleDescriptor as StableAbi>::LAYOUT,
            descriptor,
        }
    }
}

/// Everything the host needs to know about one module version.
#[repr(C)]
#[derive(StableAbi)]
pub struct ModuleDescriptor {
    /// The module's name; must equal the name the host loads it as.
    pub name: RStr<'static>,
    /// The module's version string (OTP's `-vsn`), passed to `code_change`.
    pub vsn: RStr<'static>,
    /// What kind of module this is.
    pub behaviour: Behaviour,
    /// How the plugin handles panics; the host refuses [`PanicStrategy::Abort`].
    pub panic_strategy: PanicStrategy,
    /// Called by the host once, right after loading and checking the library, before any
    /// other call. It prepares the plugin's own runtime: its panic hook, and its `log`
    /// crate's logger, which forwards to the host through `host`. The table is the host's
    /// and outlives the plugin, so the plugin may keep the reference.
    pub on_load: extern "C" fn(host: &'static HostServices),
    /// The function table: a library module's typed interface, or the callback table of
    /// its behaviour (`GenServer`, `Supervisor`, `Application`).
    pub interface: ROption<InterfaceExport>,
    /// Functions exported for `{apply, {M, F, Args}}`.
    pub functions: RSlice<'static, ExportedFn>,
}

/// A function a module exports for `apply`: takes the argument list, returns a term.
#[repr(C)]
#[derive(StableAbi)]
pub struct ExportedFn {
    /// The function's name (`F` in `{apply, {M, F, Args}}`).
    pub name: RStr<'static>,
    /// The function, wrapped so that a panic or an error comes back as [`RPluginError`].
    pub call:
        extern "C" fn(args: RTermRef<'_>) -> abi_stable::std_types::RResult<RTerm, RPluginError>,
}

/// A typed function table exported by a library module.
#[repr(C)]
#[derive(StableAbi)]
pub struct InterfaceExport {
    /// The interface's name (the Rust type name of its table, e.g. `Greeter`).
    pub name: RStr<'static>,
    /// The table's layout as the plugin compiled it.
    pub layout: &'static TypeLayout,
    /// The table itself, type-erased; the host casts it back only after checking `layout`.
    pub table: TablePtr,
}

impl InterfaceExport {
    /// Describes `table` as an export of interface `I`.
    pub const fn new<I: Interface>(table: &'static I) -> Self {
        InterfaceExport {
            name: RStr::from_str(I::NAME),
            layout: <I as StableAbi>::LAYOUT,
            table: TablePtr(table as *const I as *const c_void),
        }
    }
}

/// A type-erased pointer to a function table in a plugin's static memory.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct TablePtr(*const c_void);

impl TablePtr {
    /// The raw pointer; only the host's loader casts it back to a table type.
    pub fn as_ptr(self) -> *const c_void {
        self.0
    }
}

// SAFETY: a TablePtr only ever points at an immutable `static` table of `extern "C"` fn
// pointers (see `InterfaceExport::new`), which is safe to read from any thread.
unsafe impl Sync for TablePtr {}
// SAFETY: as above; the pointee is immutable static data.
unsafe impl Send for TablePtr {}

/// How a plugin call failed, as it crosses the boundary.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginErrorKind {
    /// The plugin panicked; the panic was caught on the plugin side.
    Panic,
    /// The plugin returned an error of its own.
    Failed,
}

/// A plugin-side error as it crosses the boundary.
///
/// Its `RString` was allocated by the plugin and carries a vtable into the plugin, so the
/// host turns it into a [`PluginError`] (copying the text) before the call returns.
#[repr(C)]
#[derive(StableAbi)]
pub struct RPluginError {
    /// What kind of failure this is.
    pub kind: PluginErrorKind,
    /// A human-readable message.
    pub message: RString,
    /// For [`PluginErrorKind::Failed`]: the reason term the plugin gave (OTP's `Reason`).
    pub reason: ROption<RTerm>,
}

impl RPluginError {
    /// A failure with a reason term, as a plugin returns `{error, Reason}` or `{stop, Reason}`.
    pub fn failed(reason: &Term) -> RPluginError {
        RPluginError {
            kind: PluginErrorKind::Failed,
            message: RString::from(reason.to_string()),
            reason: ROption::RSome(RTerm::from_term(reason)),
        }
    }

    /// Copies the error into host-owned memory.
    pub fn into_host(self) -> PluginError {
        let reason = self.reason.as_ref().into_option().map(|r| {
            r.decode().unwrap_or_else(|e| {
                Term::tuple([Term::atom("undecodable_reason"), Term::Str(e.to_string())])
            })
        });
        PluginError { kind: self.kind, message: self.message.as_str().to_owned(), reason }
    }
}

/// A plugin-side error, owned by the host.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginError {
    /// What kind of failure this is.
    pub kind: PluginErrorKind,
    /// A human-readable message; for a panic, `panicked at FILE:LINE:COL: MESSAGE`.
    pub message: String,
    /// The reason term of a [`PluginErrorKind::Failed`] error.
    pub reason: Option<Term>,
}

impl PluginError {
    /// The OTP exit reason this error stands for: the plugin's reason term, or for a panic
    /// `{panic, Message}`.
    pub fn exit_reason(&self) -> Term {
        match &self.reason {
            Some(reason) => reason.clone(),
            None => Term::tuple([Term::atom("panic"), Term::Str(self.message.clone())]),
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            PluginErrorKind::Panic => write!(f, "plugin {}", self.message),
            PluginErrorKind::Failed => write!(f, "plugin error: {}", self.message),
        }
    }
}

impl std::error::Error for PluginError {}
