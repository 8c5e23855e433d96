//! The example library module `greeter`, version 1.
//!
//! Besides its `Greeter` table it exports two plain functions for the call-path benchmark:
//! [`hotcode_bench_bare_add`], its floor (a bare `extern "C"` fn pointer into this same
//! `.so`), and [`hotcode_bench_hlr_add`], the same body with the Rust ABI, which is how the
//! hot-lib-reloader crate the benchmark measures beside hotcode calls a library.
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use plugin_api::Callback;
use plugin_api::abi_stable::std_types::{RStr, RString};
use plugin_api::interfaces::{Greeter, GreeterImpl};

/// Counts `bump` calls; lives in this load's statics only.
static BUMPS: AtomicU64 = AtomicU64::new(0);

/// Version 1 of the greeter.
struct V1;

impl GreeterImpl for V1 {
    fn greet(name: RStr<'_>) -> RString {
        format!("hello, {name}").into()
    }

    fn version() -> u32 {
        1
    }

    fn add(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    fn bump() -> u64 {
        BUMPS.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn park(cb: Callback<'_>) -> u64 {
        cb.invoke().unwrap_or(0)
    }

    fn fail(message: RStr<'_>) -> u32 {
        panic!("{message}")
    }
}

/// `Greeter::add` without the interface's shim (no panic guard, no error slot): what a bare
/// `extern "C"` fn pointer costs, for `host/benches/call_path.rs` to compare the handle with.
/// Not part of the module's interface; nothing but the benchmark looks it up.
// One of the two symbols exported outside `export_module!`. `no_mangle` counts as unsafe code
// because an unmangled name can collide with another definition of the same name. The
// invariant that makes it sound here: this name is defined by this crate alone, and the host
// opens every plugin with RTLD_LOCAL, so no other object resolves a reference against this
// definition (nor this library against another's).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn hotcode_bench_bare_add(a: u64, b: u64) -> u64 {
    <V1 as GreeterImpl>::add(a, b)
}

/// [`hotcode_bench_bare_add`] with the Rust ABI: exists only for the call-path benchmark's
/// hot-lib-reloader baseline, since that crate looks functions up by name and calls them as
/// Rust `fn` pointers (calling the `extern "C"` one through such a pointer would be
/// undefined behaviour). Not part of the module's interface.
// Unmangled on the same invariant as `hotcode_bench_bare_add`. The Rust ABI is not stable
// across compilers; `cargo xtask bench` builds this plugin and the benchmark from one workspace
// with one toolchain, which is also hot-lib-reloader's own assumption.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub fn hotcode_bench_hlr_add(a: u64, b: u64) -> u64 {
    <V1 as GreeterImpl>::add(a, b)
}

plugin_api::export_module! {
    name: "greeter",
    vsn: "1",
    library: Greeter = V1,
}
