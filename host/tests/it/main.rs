//! Integration tests for the hotcode host, on real plugin libraries built from `plugins/`.

mod bad_input;
mod code_server;
mod concurrency;
mod fixtures;
mod unloading;

use hotcode::{CodeServer, Handle, PurgeMethod};
use plugin_api::interfaces::Greeter;

use PurgeMethod::{BrutalPurge, SoftPurge};

/// A code server with greeter version `vsn` (1 or 2) current and a handle to it.
pub fn serving(vsn: u32) -> (CodeServer, Handle<Greeter>) {
    let _ = env_logger::builder().is_test(true).try_init();
    let server = CodeServer::new().expect("code server");
    let path = if vsn == 1 { fixtures::greeter_v1() } else { fixtures::greeter_v2() };
    server.load_object_code("greeter", path).expect("load_object_code");
    server.load("greeter", SoftPurge, SoftPurge).expect("load");
    let handle = server.handle::<Greeter>("greeter").expect("handle");
    (server, handle)
}

/// Stages `vsn` of greeter and makes it current, brutally purging older code.
pub fn upgrade(server: &CodeServer, vsn: u32) -> hotcode::Purged {
    let path = if vsn == 1 { fixtures::greeter_v1() } else { fixtures::greeter_v2() };
    server.load_object_code("greeter", path).expect("load_object_code");
    server.load("greeter", BrutalPurge, SoftPurge).expect("load")
}

/// Which version answers `handle` now.
pub fn answering(handle: &Handle<Greeter>) -> u32 {
    handle.call(|g| g.version()).expect("call")
}

/// Whether the private copy of `info` is mapped in this process.
pub fn mapped(info: &hotcode::VersionInfo) -> bool {
    hotcode::maps::is_mapped(&info.copy).expect("read /proc/self/maps")
}
