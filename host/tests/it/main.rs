//! Integration tests for the hotcode host, on real plugin libraries built from `plugins/`.

mod applications;
mod architecture;
mod async_calls;
mod bad_input;
mod bounded_calls;
mod checks;
mod cli;
#[cfg(feature = "cluster")]
mod cluster;
mod code_server;
mod concurrency;
mod control_concurrency;
mod control_security;
mod ctl_talk;
mod dist_layout;
mod elf;
mod fixtures;
#[cfg(feature = "cluster")]
mod fleet_rollout;
mod guide;
mod host_restart;
mod make_relup;
mod names;
mod node_exit;
mod otp_fidelity;
mod plugin_logs;
mod preflight;
mod private_copies;
mod processes;
mod release_handler;
mod release_security;
mod release_tooling;
mod runtime_mn;
mod service;
mod supervisors;
mod unloading;
mod watch;

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
    hotcode::code::maps::is_mapped(&info.copy).expect("read /proc/self/maps")
}

/// A node with these modules loaded and current: `(module, library)` pairs.
pub fn node_with(modules: &[(&str, std::path::PathBuf)]) -> hotcode::Node {
    let _ = env_logger::builder().is_test(true).try_init();
    let node = hotcode::Node::new().expect("node");
    for (module, lib) in modules {
        node.code().load_object_code(module, lib).expect("load_object_code");
        node.code().load(module, SoftPurge, SoftPurge).expect("load");
    }
    node
}

/// Loads every module of application version `app_vsn` and loads its `.app` spec, as a
/// boot script would; returns the spec.
pub fn boot_app(node: &hotcode::Node, app_vsn: &str) -> hotcode::release::files::AppSpec {
    let spec = hotcode::release::files::AppSpec::read(&fixtures::app_file(app_vsn)).expect(".app");
    for module in &spec.modules {
        node.code()
            .load_object_code(module, fixtures::module_lib(app_vsn, module))
            .expect("load_object_code");
        node.code().load(module, SoftPurge, SoftPurge).expect("load");
    }
    node.load_application(spec.clone()).expect("application:load");
    spec
}

/// Stages `lib` as the new version of `module` and makes it current (brutal pre-purge).
pub fn load_version(node: &hotcode::Node, module: &str, lib: std::path::PathBuf) {
    node.code().load_object_code(module, lib).expect("load_object_code");
    node.code().load(module, BrutalPurge, BrutalPurge).expect("load");
}

/// A generous timeout for calls that must succeed.
pub const LONG: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until a `stubborn` process is blocked inside its `block` call (inside plugin code).
pub fn until_blocked(node: &hotcode::Node) {
    while node.code().apply("stubborn", "waiting", vec![]).expect("waiting/0")
        != plugin_api::Term::Int(1)
    {
        std::thread::yield_now();
    }
}
