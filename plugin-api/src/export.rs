//! The plugin side: exporting a module and keeping panics inside the plugin.
//!
//! A plugin author writes one [`export_module!`](crate::export_module) invocation and plain
//! Rust. The macro builds the descriptor and exports the header symbol; everything that runs
//! on the plugin side of a call goes through [`guard`](crate::__private::guard), which
//! catches a panic before it can unwind into an `extern "C"` frame and returns it as an
//! error naming where it happened.
//!
//! At load, the host calls the descriptor's `on_load` with its
//! [`HostServices`](crate::HostServices): the plugin installs its panic hook and sets its own
//! `log` crate's logger to one that forwards records to the host (see the `log_forward`
//! module's docs for the target, level and formatting rules).
//!
//! Care is taken that the plugin's own runtime never registers a thread-local destructor:
//! glibc keeps a library mapped after `dlclose` for as long as a thread that registered one
//! is alive. So the panic hook installed at load time stores the panic's location in a
//! `Copy` thread-local (no destructor), the payload is dropped inside the plugin, and the
//! log forwarder keeps its state in a plain `static` and formats into a plain `String`.

/// Exports a module: its name, version, behaviour, function table and `apply` functions.
///
/// One invocation per plugin crate, at its root. The forms:
///
/// ```ignore
/// // A library module with a typed interface:
/// plugin_api::export_module! { name: "greeter", vsn: "1", library: Greeter = V1 }
/// // A gen_server, a supervisor, an application callback module:
/// plugin_api::export_module! { name: "ch3", vsn: "1", gen_server: Ch3 }
/// plugin_api::export_module! { name: "ch_sup", vsn: "1", supervisor: ChSup }
/// plugin_api::export_module! { name: "ch_app", vsn: "1", application: ChApp }
/// // Any form may end with functions for `{apply, {M, F, Args}}`:
/// plugin_api::export_module! {
///     name: "ch3", vsn: "1", gen_server: Ch3,
///     functions: { "reset" => reset },   // fn reset(args: Vec<Term>) -> Result<Term, Term>
/// }
/// ```
///
/// The macro expands to the one exported symbol, `HOTCODE_MODULE`, and, for each function
/// `"name" => path` under `functions`, to one more dynamic symbol, `hotcode_apply_<name>`
/// ([`APPLY_SYMBOL_PREFIX`](crate::APPLY_SYMBOL_PREFIX) followed by the name exactly as
/// written). Those symbols are there so that a relup check can see which functions a module
/// file exports for `apply` by reading its dynamic symbol table, without loading it (SPEC
/// §5.1). The host never calls through them: it calls the `functions` table of the
/// descriptor, whose entries are the same shims. Two functions with the same name in one
/// module clash as duplicate symbols, so such a plugin does not link.
///
/// # The plugin crate
///
/// Every path the macro writes goes through `$crate` (this crate, and `abi_stable` through
/// its re-export [`plugin_api::abi_stable`](crate::abi_stable)), so `plugin-api` is the only
/// dependency a plugin needs. A plugin's `Cargo.toml`:
///
/// ```toml
/// [package]
/// name = "ch3-v1"          # one package per module version
/// version = "0.1.0"
/// edition = "2024"
///
/// [lib]
/// crate-type = ["cdylib"]  # a shared object the host loads, with one exported symbol
///
/// [dependencies]
/// plugin-api = { path = "../../plugin-api" }   # the only one
/// ```
///
/// and, in the workspace's root `Cargo.toml` (Cargo reads profiles only there):
///
/// ```toml
/// [profile.release]
/// strip = "debuginfo"      # every load copies the whole file; DWARF was most of it
/// # Never `panic = "abort"`: the host refuses such a plugin, whose first panic would
/// # abort the node instead of becoming an error at the boundary.
/// ```
///
/// Declaring a new [`interface!`](macro@crate::interface) is the exception: abi_stable's layout
/// derive names its own crate, so a crate that declares one depends on `abi_stable` too.
///
/// # Logging
///
/// Plugin code logs with the `log` crate's macros, re-exported as
/// [`plugin_api::log`](crate::log): `plugin_api::log::info!("{n} channels free")`. The
/// records reach the host's logger, under the target `<module>@<vsn>` (`ch3@1`), followed by
/// `::` and the rest of the plugin's own target: the Rust module below the crate root
/// (`ch3@1::state`) or an explicit `target:` (`ch3@1::audit`). The host's level and filters
/// decide, record by record and including changes made after the load: a record the host
/// would drop costs the plugin a call to the host and is never formatted. Key-values are
/// not forwarded.
#[macro_export]
macro_rules! export_module {
    (
        name: $name:literal,
        vsn: $vsn:literal,
        library: $iface:ty = $imp:ty
        $(, functions: { $($fname:literal => $fpath:path),* $(,)? })? $(,)?
    ) => {
        $crate::export_module!(@module $name, $vsn, Library, $iface, <$iface>::table_for::<$imp>(),
            [$($($fname => $fpath),*)?]);
    };
    (
        name: $name:literal,
        vsn: $vsn:literal,
        gen_server: $imp:ty
        $(, functions: { $($fname:literal => $fpath:path),* $(,)? })? $(,)?
    ) => {
        $crate::export_module!(@module $name, $vsn, GenServer, $crate::behaviour::GenServerTable,
            $crate::behaviour::GenServerTable::table_for::<$imp>(), [$($($fname => $fpath),*)?]);
    };
    (
        name: $name:literal,
        vsn: $vsn:literal,
        supervisor: $imp:ty
        $(, functions: { $($fname:literal => $fpath:path),* $(,)? })? $(,)?
    ) => {
        $crate::export_module!(@module $name, $vsn, Supervisor, $crate::behaviour::SupervisorTable,
            $crate::behaviour::SupervisorTable::table_for::<$imp>(), [$($($fname => $fpath),*)?]);
    };
    (
        name: $name:literal,
        vsn: $vsn:literal,
        application: $imp:ty
        $(, functions: { $($fname:literal => $fpath:path),* $(,)? })? $(,)?
    ) => {
        $crate::export_module!(@module $name, $vsn, Application, $crate::behaviour::ApplicationTable,
            $crate::behaviour::ApplicationTable::table_for::<$imp>(), [$($($fname => $fpath),*)?]);
    };
    (@module $name:literal, $vsn:literal, $behaviour:ident, $table_ty:ty, $table:expr,
        [$($fname:literal => $fpath:path),*]) => {
        const _: () = {
            static TABLE: $table_ty = $table;
            static FUNCTIONS: &[$crate::ExportedFn] = &[
                $(
                    $crate::ExportedFn {
                        name: $crate::abi_stable::std_types::RStr::from_str($fname),
                        call: {
                            // The dynamic symbol lets a checker read this function's name
                            // from the file without loading it; see the macro's docs.
                            // SAFETY: no other symbol of a plugin has a name with this
                            // prefix (two functions of one name fail to link), so this one
                            // replaces or shadows nothing.
                            #[unsafe(export_name = concat!("hotcode_apply_", $fname))]
                            extern "C" fn shim(
                                args: $crate::RTermRef<'_>,
                            ) -> $crate::abi_stable::std_types::RResult<$crate::RTerm, $crate::RPluginError> {
                                $crate::behaviour::apply_shim(args, $fpath)
                            }
                            shim
                        },
                    },
                )*
            ];
            static DESCRIPTOR: $crate::ModuleDescriptor = $crate::ModuleDescriptor {
                name: $crate::abi_stable::std_types::RStr::from_str($name),
                vsn: $crate::abi_stable::std_types::RStr::from_str($vsn),
                behaviour: $crate::Behaviour::$behaviour,
                panic_strategy: $crate::PanicStrategy::COMPILED,
                on_load: {
                    extern "C" fn on_load(host: &'static $crate::HostServices) {
                        $crate::__private::on_load(
                            host,
                            ::core::concat!($name, "@", $vsn),
                            ::core::module_path!(),
                        );
                    }
                    on_load
                },
                interface: $crate::abi_stable::std_types::ROption::RSome(
                    $crate::InterfaceExport::new::<$table_ty>(&TABLE),
                ),
                functions: $crate::abi_stable::std_types::RSlice::from_slice(FUNCTIONS),
            };
            /// Tells a release check, from the file alone, that this plugin unwinds on panic
            /// (see `PANIC_UNWIND_SYMBOL`); absent from a `panic = "abort"` build.
            // SAFETY: no other symbol of a plugin has this name, so it shadows nothing.
            #[cfg(panic = "unwind")]
            #[unsafe(export_name = "hotcode_panic_unwind")]
            static PANIC_UNWIND: u8 = 1;
            /// The hotcode module header: the one symbol the host looks for.
            #[unsafe(no_mangle)]
            pub static HOTCODE_MODULE: $crate::ModuleHeader = $crate::ModuleHeader::new(&DESCRIPTOR);
        };
    };
}

/// Support for the macros; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::Cell;
    use std::mem::MaybeUninit;
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::Once;

    use abi_stable::std_types::{ROption, RResult, RString};

    use crate::abi::{PluginError, PluginErrorKind, RPluginError};
    use crate::services::HostServices;

    /// How much of a panic's file name is kept; longer names keep their tail.
    const FILE_CAP: usize = 120;

    /// Where the last panic on this thread happened. `Copy`, so the thread-local that holds
    /// it needs no destructor and never pins the library.
    #[derive(Clone, Copy)]
    struct PanicSite {
        file: [u8; FILE_CAP],
        len: usize,
        line: u32,
        column: u32,
    }

    thread_local! {
        static LAST_PANIC: Cell<Option<PanicSite>> = const { Cell::new(None) };
    }

    /// Called once after loading, through the `on_load` shim `export_module!` writes:
    /// installs this plugin's panic hook and sets its `log` logger to one that forwards to
    /// `host`. `prefix` is `<module>@<vsn>`, the target the host shows; `module_path` is the
    /// `export_module!` site's, whose first segment names the plugin crate.
    ///
    /// The default panic hook would print to stderr and look up the thread's name, which
    /// initialises a thread-local with a destructor inside this plugin's copy of std.
    ///
    /// It must not panic: it runs inside an `extern "C"` function, where a panic aborts.
    /// Nothing it calls panics (`Once`, `OnceLock`, `log::set_logger` all return).
    pub fn on_load(host: &'static HostServices, prefix: &'static str, module_path: &'static str) {
        crate::log_forward::install(host, prefix, module_path);
        crate::future::install(host);
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            panic::set_hook(Box::new(|info| {
                let site = info.location().map(|loc| {
                    let bytes = loc.file().as_bytes();
                    let tail = &bytes[bytes.len().saturating_sub(FILE_CAP)..];
                    let mut file = [0u8; FILE_CAP];
                    file[..tail.len()].copy_from_slice(tail);
                    PanicSite { file, len: tail.len(), line: loc.line(), column: loc.column() }
                });
                let previous = LAST_PANIC.with(|last| last.replace(site));
                if previous.is_some() || cfg!(panic = "abort") {
                    // A panic while an earlier one on this thread is still unwinding (a
                    // destructor panicked), or a plugin built to abort: Rust is about to
                    // abort the process, and this line is the only trace it leaves. A mark
                    // left by a panic the plugin caught itself is cleared only by the next
                    // panic a guard catches (the guards touch no thread-local on success),
                    // so this may also print for a panic that then unwinds normally; the
                    // line says "if" for that reason.
                    warn_abort(info, site.as_ref(), previous.as_ref());
                }
            }));
        });
    }

    /// Writes one line to stderr about a panic Rust will not let unwind: the process is
    /// about to abort, and the host never sees it.
    fn warn_abort(
        info: &panic::PanicHookInfo<'_>,
        site: Option<&PanicSite>,
        previous: Option<&PanicSite>,
    ) {
        use std::io::Write;
        fn at(site: Option<&PanicSite>) -> String {
            match site {
                Some(s) => {
                    format!("{}:{}:{}", String::from_utf8_lossy(&s.file[..s.len]), s.line, s.column)
                }
                None => "an unknown place".to_owned(),
            }
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a non-string panic payload");
        let line = if previous.is_some() {
            format!(
                "hotcode plugin: panicked at {} while the panic from {} was not yet caught by \
                 hotcode's guard: {what}; if this one escapes a destructor during unwinding, \
                 Rust aborts the process now\n",
                at(site),
                at(previous)
            )
        } else {
            format!(
                "hotcode plugin: panicked at {}: {what}; this plugin was built with \
                 panic = \"abort\", so the process aborts\n",
                at(site)
            )
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    /// Runs `f`, turning a panic into an [`RPluginError`] instead of unwinding.
    ///
    /// The success path touches no thread-local (in a `dlopen`ed library each access is a
    /// call to `__tls_get_addr`): the panic hook's mark is read and cleared only on the
    /// failure branch.
    #[inline]
    pub fn guard<T>(f: impl FnOnce() -> T) -> RResult<T, RPluginError> {
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => RResult::ROk(value),
            Err(payload) => RResult::RErr(panic_error(payload)),
        }
    }

    /// Runs `f` for an interface shim: its value on success, with `error` left untouched;
    /// on a panic, the panic as an error in `error` and an uninitialised value, which the
    /// caller must not read (the interface's host-side methods test `error` first).
    #[inline]
    pub fn guard_out<T>(
        f: impl FnOnce() -> T,
        error: &mut ROption<RPluginError>,
    ) -> MaybeUninit<T> {
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => MaybeUninit::new(value),
            Err(payload) => {
                *error = ROption::RSome(panic_error(payload));
                MaybeUninit::uninit()
            }
        }
    }

    /// Copies a plugin's error into host memory: the failure branch of every interface
    /// method, kept out of line and marked cold so the success path stays short.
    #[cold]
    #[inline(never)]
    pub fn cold_error(error: RPluginError) -> PluginError {
        error.into_host()
    }

    /// A caught panic as an error naming where it happened: the guards' failure branch.
    #[cold]
    #[inline(never)]
    fn panic_error(payload: Box<dyn Any + Send>) -> RPluginError {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        // The hook's mark for this panic; taking it also clears it, so the next panic on
        // this thread is not mistaken for one raised while this one was unwinding.
        let site = LAST_PANIC.with(|last| last.take());
        // The payload's drop glue lives in this plugin: drop it here, not in the host, and
        // inside `catch_unwind`: a payload whose `Drop` panics is leaked rather than let
        // that second panic unwind out of the plugin.
        if let Err(second) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            LAST_PANIC.with(|last| last.set(None));
            std::mem::forget(second);
        }
        let message = match site {
            Some(site) => {
                let file = String::from_utf8_lossy(&site.file[..site.len]);
                format!("panicked at {file}:{}:{}: {what}", site.line, site.column)
            }
            None => format!("panicked: {what}"),
        };
        RPluginError {
            kind: PluginErrorKind::Panic,
            message: RString::from(message),
            reason: ROption::RNone,
        }
    }
}
