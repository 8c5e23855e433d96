//! The example library module `greeter`, version 1.
#![forbid(unsafe_code)]

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

plugin_api::export_module! {
    name: "greeter",
    vsn: "1",
    library: Greeter = V1,
}
