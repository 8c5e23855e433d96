//! The axum example's route handlers, version 1: async plugin functions ([`WebRoutes`]).
//! No tokio here: the handler awaits the host's timer through `plugin_api::future::sleep`.
#![forbid(unsafe_code)]

use std::time::Duration;

use plugin_api::abi_stable::std_types::RString;
use plugin_api::interfaces::{WebRoutes, WebRoutesImpl};

struct V1;

impl WebRoutesImpl for V1 {
    async fn hello(name: RString) -> RString {
        // A handler that waits on I/O, as a real one would: requests are in flight
        // across upgrades.
        plugin_api::future::sleep(Duration::from_millis(1)).await;
        format!("hello, {name} (v1)").into()
    }

    async fn boom(name: RString) -> RString {
        plugin_api::future::sleep(Duration::from_millis(1)).await;
        panic!("boom, {name}")
    }
}

plugin_api::export_module! { name: "web_routes", vsn: "1", library: WebRoutes = V1 }
