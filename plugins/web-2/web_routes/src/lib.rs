//! The axum example's route handlers, version 2: another greeting, the same interface.
#![forbid(unsafe_code)]

use std::time::Duration;

use plugin_api::abi_stable::std_types::RString;
use plugin_api::interfaces::{WebRoutes, WebRoutesImpl};

struct V2;

impl WebRoutesImpl for V2 {
    async fn hello(name: RString) -> RString {
        plugin_api::future::sleep(Duration::from_millis(1)).await;
        format!("hi {name}, welcome back (v2)").into()
    }

    async fn boom(name: RString) -> RString {
        plugin_api::future::sleep(Duration::from_millis(1)).await;
        panic!("boom, {name}")
    }
}

plugin_api::export_module! { name: "web_routes", vsn: "2", library: WebRoutes = V2 }
