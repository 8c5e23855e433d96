//! The only module that opens and closes libraries.
//!
//! Loading a version: check the file is an ELF shared object for this target, copy it to a
//! private, uniquely named path (glibc hands back the already-loaded object for a path, or
//! an inode, it has seen, so two versions must never share either), `dlopen` the copy,
//! find the header symbol, check the magic, the ABI version and the descriptor's layout,
//! and only then read the descriptor, copy what the host keeps of it, and call its `on_load`
//! with the host's services table (`services.rs`; the plugin keeps pointers into the host,
//! never the reverse). Then the copy's file is unlinked, loaded or not: a mapping outlives
//! its file's name, so nothing is left on disk even if the process is killed, while
//! `/proc/self/maps` still names the mapping by the copy's path (followed by ` (deleted)`,
//! which [`maps`] strips). The path stays unique to this load: no other file gets that
//! name, and the kernel does not reuse the inode of a file that is still mapped.
//!
//! Unloading a version: `dlclose`, then look in `/proc/self/maps`. A library that is still
//! mapped is *leaked*: typically a thread that ran its code registered a TLS destructor,
//! and glibc keeps the object until that thread exits. A leaked library is retried later
//! with `RTLD_NOLOAD` + `dlclose`, which lets glibc finish the unload once the pin is gone.
//!
//! Architecture invariant: nothing outside this module calls `dlopen`, `dlsym` or `dlclose`.

use std::ffi::c_void;
use std::io::Read;
use std::path::{Path, PathBuf};

use abi_stable::StableAbi;
use abi_stable::type_layout::TypeLayout;
use libloading::os::unix::{Library, RTLD_LAZY, RTLD_LOCAL, RTLD_NOW};
use plugin_api::behaviour::{ApplicationTable, GenServerTable, SupervisorTable};
use plugin_api::{
    ABI_VERSION, Behaviour, Interface, MAGIC, MODULE_SYMBOL, ModuleDescriptor, ModuleHeader,
    PanicStrategy, RTerm, RTermRef,
};

use crate::code::error::{LoadError, LoadErrorKind};
use crate::code::maps;
use crate::code::services;
use crate::code::trust;

/// A library that passed every check, open and mapped from `copy`.
pub(crate) struct Opened {
    lib: Library,
    /// The private copy that was opened (its file is unlinked; the path names the mapping).
    pub(crate) copy: PathBuf,
    /// The SHA-256 of the copy: of the bytes that were mapped.
    pub(crate) sha256: Sha256,
    /// The module name (host-owned copy of the descriptor's).
    pub(crate) name: String,
    /// The module's vsn (host-owned copy).
    pub(crate) vsn: String,
    /// The module's behaviour.
    pub(crate) behaviour: Behaviour,
    /// The function table: a typed interface, or a behaviour's callback table.
    pub(crate) interface: Option<ExportedInterface>,
    /// Functions exported for `apply` (pointers valid while the library is open).
    pub(crate) functions: Vec<(String, ExportedFnPtr)>,
}

/// A library module's interface, as exported. `layout` and `table` point into the library
/// and are valid only while it stays loaded.
#[derive(Clone, Copy)]
pub(crate) struct ExportedInterface {
    pub(crate) name: &'static str,
    pub(crate) layout: &'static TypeLayout,
    pub(crate) table: *const c_void,
}

/// What happened when a library was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Gone from the address space.
    Unmapped,
    /// Still mapped after `dlclose` (or the check could not be made): kept for a retry.
    Leaked(String),
}

/// ELF constants for the header check.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ET_DYN: u16 = 3;
#[cfg(target_arch = "x86_64")]
const EM_HOST: u16 = 62;
#[cfg(target_arch = "aarch64")]
const EM_HOST: u16 = 183;
#[cfg(target_pointer_width = "64")]
const ELF_CLASS_HOST: u8 = 2;
#[cfg(target_pointer_width = "32")]
const ELF_CLASS_HOST: u8 = 1;
#[cfg(target_endian = "little")]
const ELF_DATA_HOST: u8 = 1;
#[cfg(target_endian = "big")]
const ELF_DATA_HOST: u8 = 2;

/// Checks that `path` is an ELF shared object for this target, reading only its header.
pub(crate) fn check_elf(path: &Path) -> Result<(), LoadErrorKind> {
    let mut file = trust::open_regular(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadErrorKind::NotFound,
        _ => LoadErrorKind::Io(e),
    })?;
    let mut header = [0u8; 20];
    let mut filled = 0;
    while filled < header.len() {
        match file.read(&mut header[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LoadErrorKind::Io(e)),
        }
    }
    let not = |why: &str| Err(LoadErrorKind::NotSharedObject(why.to_owned()));
    if filled < header.len() || &header[..4] != ELF_MAGIC {
        return not("no ELF header");
    }
    if header[4] != ELF_CLASS_HOST || header[5] != ELF_DATA_HOST {
        return not("ELF class or byte order of another target");
    }
    let read_u16 = |at: usize| {
        let bytes = [header[at], header[at + 1]];
        if ELF_DATA_HOST == 1 { u16::from_le_bytes(bytes) } else { u16::from_be_bytes(bytes) }
    };
    if read_u16(16) != ET_DYN {
        return not("an ELF file, but not a shared object");
    }
    if read_u16(18) != EM_HOST {
        return not("a shared object for another machine architecture");
    }
    Ok(())
}

/// A SHA-256 digest.
pub type Sha256 = [u8; 32];

/// Lower-case hex of a digest.
pub fn hex(digest: &Sha256) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> std::io::Result<Sha256> {
    use sha2::Digest;
    let mut file = trust::open_regular(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// Refuses a plugin file, or the directory holding it, that is not the node's own (owned
/// by another uid, or writable by group or others): whoever can write it decides what code
/// the node runs. Within a release root the release handler checks the whole way down from
/// the root ([`trust::check_under`]).
pub(crate) fn check_permissions(path: &Path) -> Result<(), LoadErrorKind> {
    match trust::check_file_and_dir(path) {
        Ok(()) => Ok(()),
        Err(_) if !path.exists() => Err(LoadErrorKind::NotFound),
        Err(untrusted) => Err(LoadErrorKind::Untrusted(untrusted)),
    }
}

/// Opens `source` as version `serial` of `module`, through a private copy in `scratch`,
/// whose file is gone again when this returns (see the module docs). With `expected`, the
/// copy's SHA-256 must match it: the digest is taken of the very bytes that get mapped, so
/// the file cannot change between the check and the load.
pub(crate) fn open(
    module: &str,
    source: &Path,
    scratch: &Path,
    serial: u64,
    expected: Option<&Sha256>,
) -> Result<Opened, LoadError> {
    let fail = |kind| LoadError { module: module.to_owned(), path: source.to_owned(), kind };
    check_elf(source).map_err(fail)?;
    check_permissions(source).map_err(fail)?;
    let copy = scratch.join(format!("{module}-{serial}.so"));
    // The digest is taken of the bytes written to the copy, the very bytes `dlopen` maps
    // (nobody else writes the copy): a file renamed over the source after a check, or
    // changed while it is read, cannot slip in.
    let found = private_copy(source, &copy).map_err(|e| fail(LoadErrorKind::Io(e)))?;
    if let Some(expected) = expected
        && &found != expected
    {
        let _ = std::fs::remove_file(&copy);
        return Err(fail(LoadErrorKind::HashMismatch {
            expected: hex(expected),
            found: hex(&found),
        }));
    }
    let opened = open_copy(module, &copy, found);
    // Open or refused (and then closed by `open_copy`), the copy's file has served its
    // purpose: the mapping, if any, stays without it.
    unlink_copy(&copy);
    opened.map_err(fail)
}

/// Unlinks a private copy's file, which may be gone already.
fn unlink_copy(copy: &Path) {
    match std::fs::remove_file(copy) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot delete private copy {}: {e}", copy.display()),
    }
}

/// Copies `source` (a regular file, opened without following a FIFO) to `copy`, a new file
/// only this process writes, and returns the SHA-256 of the bytes it wrote: one pass over
/// them (read, hash, write), not a copy and then a second read to hash it.
fn private_copy(source: &Path, copy: &Path) -> std::io::Result<Sha256> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = trust::open_regular(source)?;
    let mut to = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(copy)?;
    copy_hashing(&mut from, &mut to).inspect_err(|_| {
        let _ = std::fs::remove_file(copy);
    })
}

/// Writes everything `from` gives to `to`, hashing it on the way.
fn copy_hashing(from: &mut impl Read, to: &mut impl std::io::Write) -> std::io::Result<Sha256> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

fn open_copy(module: &str, copy: &Path, sha256: Sha256) -> Result<Opened, LoadErrorKind> {
    // RTLD_LOCAL keeps the plugin's symbols out of the global namespace, so versions
    // cannot interpose on each other.
    // SAFETY: opening runs the library's initialisers; the file passed the ELF checks, is a
    // private copy nobody else writes, and hotcode plugins only have std's initialisers.
    let lib = unsafe { Library::open(Some(copy), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| LoadErrorKind::Dlopen(e.to_string()))?;
    match read_descriptor(module, &lib) {
        Ok(d) => Ok(Opened {
            lib,
            copy: copy.to_owned(),
            sha256,
            name: d.name,
            vsn: d.vsn,
            behaviour: d.behaviour,
            interface: d.interface,
            functions: d.functions,
        }),
        Err(kind) => {
            // Nothing from the library escaped `read_descriptor` (errors are host strings).
            let _ = lib.close();
            Err(kind)
        }
    }
}

/// An exported function for `apply`, as a pointer into the library.
pub(crate) type ExportedFnPtr =
    extern "C" fn(RTermRef<'_>) -> abi_stable::std_types::RResult<RTerm, plugin_api::RPluginError>;

/// What the host keeps of a descriptor (the pointers are valid while the library is open).
struct Descriptor {
    name: String,
    vsn: String,
    behaviour: Behaviour,
    interface: Option<ExportedInterface>,
    functions: Vec<(String, ExportedFnPtr)>,
}

fn read_descriptor(module: &str, lib: &Library) -> Result<Descriptor, LoadErrorKind> {
    // SAFETY: the symbol is looked up as a data address; it is only dereferenced below
    // after the magic bytes, which every hotcode plugin puts first, have been checked.
    let header: *const ModuleHeader = unsafe { lib.get::<*const ModuleHeader>(MODULE_SYMBOL) }
        .map(|sym| *sym)
        .map_err(|_| LoadErrorKind::MissingSymbol)?;
    if header.is_null() {
        return Err(LoadErrorKind::MissingSymbol);
    }
    // SAFETY: the symbol names a static of the library, at least as large as the magic
    // field (every ModuleHeader starts with it); it stays mapped while `lib` is open.
    let magic = unsafe { std::ptr::read_unaligned(header as *const [u8; 8]) };
    if magic != MAGIC {
        return Err(LoadErrorKind::BadMagic);
    }
    // SAFETY: the magic matches, so this is a ModuleHeader, whose layout is frozen for all
    // ABI versions; it lives in the library's static memory while `lib` is open.
    let header: &ModuleHeader = unsafe { &*header };
    if header.abi_version != ABI_VERSION {
        return Err(LoadErrorKind::AbiVersion { found: header.abi_version, expected: ABI_VERSION });
    }
    check_layout(
        "the module descriptor",
        <ModuleDescriptor as StableAbi>::LAYOUT,
        header.descriptor_layout,
    )?;
    let descriptor: &ModuleDescriptor = header.descriptor;
    if descriptor.panic_strategy != PanicStrategy::Unwind {
        return Err(LoadErrorKind::PanicAbort);
    }
    let name = descriptor.name.as_str().to_owned();
    if name != module {
        return Err(LoadErrorKind::NameMismatch { expected: module.to_owned(), found: name });
    }
    let interface = descriptor.interface.as_ref().into_option().map(|export| ExportedInterface {
        name: export.name.as_str(),
        layout: export.layout,
        table: export.table.as_ptr(),
    });
    check_behaviour(descriptor.behaviour, interface)?;
    let functions = descriptor
        .functions
        .as_slice()
        .iter()
        .map(|f| (f.name.as_str().to_owned(), f.call))
        .collect();
    // The descriptor is trusted now: let the plugin set up its runtime. It gets the host's
    // services table, a static of the host that outlives every plugin.
    (descriptor.on_load)(&services::HOST_SERVICES);
    Ok(Descriptor {
        name,
        vsn: descriptor.vsn.as_str().to_owned(),
        behaviour: descriptor.behaviour,
        interface,
        functions,
    })
}

/// Checks that a behaviour module exports the host's callback table for its behaviour,
/// with a compatible layout; a library module must export some interface.
fn check_behaviour(
    behaviour: Behaviour,
    interface: Option<ExportedInterface>,
) -> Result<(), LoadErrorKind> {
    let expected: Option<(&'static str, &'static TypeLayout)> = match behaviour {
        Behaviour::Library => None,
        Behaviour::GenServer => Some((GenServerTable::NAME, <GenServerTable as StableAbi>::LAYOUT)),
        Behaviour::Supervisor => {
            Some((SupervisorTable::NAME, <SupervisorTable as StableAbi>::LAYOUT))
        }
        Behaviour::Application => {
            Some((ApplicationTable::NAME, <ApplicationTable as StableAbi>::LAYOUT))
        }
    };
    let Some(found) = interface else { return Err(LoadErrorKind::NoInterface) };
    let Some((name, layout)) = expected else { return Ok(()) };
    if found.name != name {
        return Err(LoadErrorKind::WrongInterface {
            expected: name.to_owned(),
            found: found.name.to_owned(),
        });
    }
    check_layout(&format!("the {} callback table", behaviour.as_str()), layout, found.layout)
}

/// Checks that `found` (from a library) is compatible with `expected`, reporting the
/// difference as a host-owned string (abi_stable's error borrows the library's layouts).
pub(crate) fn check_layout(
    what: &str,
    expected: &'static TypeLayout,
    found: &'static TypeLayout,
) -> Result<(), LoadErrorKind> {
    match abi_stable::abi_stability::check_layout_compatibility(expected, found).into_result() {
        Ok(()) => Ok(()),
        Err(error) => {
            let full = error.to_string();
            // abi_stable's report is long; keep the first lines, which name the mismatch.
            let details: Vec<&str> =
                full.lines().filter(|l| !l.trim().is_empty()).take(12).collect();
            Err(LoadErrorKind::LayoutMismatch {
                what: what.to_owned(),
                details: details.join(" | "),
            })
        }
    }
}

impl Opened {
    /// Closes the library and checks that it left the address space.
    pub(crate) fn close(self) -> Closed {
        let Opened { lib, copy, .. } = self;
        if let Err(e) = lib.close() {
            return Closed::Leaked(format!("dlclose failed: {e}"));
        }
        verify_gone(&copy)
    }
}

/// Retries a leaked library at `copy`: if it is still known to the dynamic loader, take a
/// new reference with `RTLD_NOLOAD` and drop it, which lets glibc unload an object whose
/// TLS destructors have all run since. glibc finds the object by the name it was opened
/// with before it looks at the file system, so this works with the copy's file unlinked.
pub(crate) fn retry_leaked(copy: &Path) -> Closed {
    // SAFETY: RTLD_NOLOAD never maps or initialises anything: it only returns a new
    // reference to an object that is already loaded (or fails).
    match unsafe { Library::open(Some(copy), RTLD_LAZY | RTLD_LOCAL | libc::RTLD_NOLOAD) } {
        Ok(lib) => {
            if let Err(e) = lib.close() {
                return Closed::Leaked(format!("dlclose failed: {e}"));
            }
        }
        Err(_) => { /* The loader already forgot it; the maps check below decides. */ }
    }
    verify_gone(copy)
}

fn verify_gone(copy: &Path) -> Closed {
    match maps::is_mapped(copy) {
        Ok(false) => {
            // Unlinked when it was opened; this only matters if that failed.
            unlink_copy(copy);
            Closed::Unmapped
        }
        Ok(true) => Closed::Leaked("still mapped after dlclose".to_owned()),
        Err(e) => Closed::Leaked(format!("cannot read /proc/self/maps: {e}")),
    }
}
