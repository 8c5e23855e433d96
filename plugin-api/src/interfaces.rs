//! Interfaces shared by the example plugins, the tests and the benchmarks.

use abi_stable::std_types::{RStr, RString};

use crate::callback::Callback;

crate::interface! {
    /// The example library interface: a greeter with a few probes that the tests and the
    /// benchmarks use to see which version answered and what it holds.
    pub struct Greeter: GreeterImpl;
    /// Returns a greeting; each version words it differently.
    fn greet(name: RStr<'_>) -> RString;
    /// The version number of the implementation that answered (1, 2, ...).
    fn version() -> u32;
    /// Adds two numbers: the cheapest possible call, for measuring the call path.
    fn add(a: u64, b: u64) -> u64;
    /// Increments a counter kept in the plugin's statics and returns the new value, so a
    /// test can tell a fresh load (counter starts over) from a reused one.
    fn bump() -> u64;
    /// Calls `cb` from inside the plugin and returns what it returned (0 if it panicked):
    /// the thread holds this version for as long as `cb` runs.
    fn park(cb: Callback<'_>) -> u64;
    /// Panics with `message`, to show that a panic comes back as an error.
    fn fail(message: RStr<'_>) -> u32;
}

crate::interface! {
    /// An async example interface: handlers that await the host's runtime. Used by the
    /// `napper` test fixture and the tests of async calls.
    pub struct Napper: NapperImpl;
    /// Sleeps `ms` milliseconds on the host's timer, then returns `ms`.
    async fn nap(ms: u64) -> u64;
    /// Sleeps `ms` milliseconds, then panics inside `poll`.
    async fn boom(ms: u64) -> u64;
}

crate::interface! {
    /// The axum example's route handlers (`plugins/web-1`, `plugins/web-2`), served by
    /// `host/examples/axum_service.rs`.
    pub struct WebRoutes: WebRoutesImpl;
    /// `GET /hello/{name}`: the reply's body.
    async fn hello(name: RString) -> RString;
    /// `GET /boom/{name}`: panics inside `poll` (after an await), so the request gets an
    /// error and the service goes on.
    async fn boom(name: RString) -> RString;
}
