//! The example library module `greeter`, version 2.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use plugin_api::Callback;
use plugin_api::abi_stable::std_types::{RStr, RString};
use plugin_api::interfaces::{Greeter, GreeterImpl};

/// Counts `bump` calls; lives in this load's statics only.
static BUMPS: AtomicU64 = AtomicU64::new(0);

/// Version 2 of the greeter.
struct V2;

impl GreeterImpl for V2 {
    fn greet(name: RStr<'_>) -> RString {
        format!("hi {name}, from v2").into()
    }

    fn version() -> u32 {
        2
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

plugin_api::export_module! {
    name: "greeter",
    vsn: "2",
    library: Greeter = V2,
}
