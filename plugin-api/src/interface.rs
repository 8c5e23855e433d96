//! Typed interfaces: function tables a library module exports and the host calls.
//!
//! An interface is declared once with [`interface!`](macro@crate::interface). The macro writes:
//!
//! - the table itself, a `#[repr(C)]` struct of `extern "C"` function pointers with a
//!   checkable layout (abi_stable's `StableAbi`). Its fields are private: code outside the
//!   declaring module can only call through the safe methods, so nobody can copy a function
//!   pointer out of a table and keep it after the library is gone;
//! - one safe method per function, for the host side, which turns the boundary types of the
//!   result into host-owned values ([`IntoHost`]) while the version is still held. A
//!   function returns its value directly (in registers when it fits) and reports a failure
//!   through a trailing `&mut ROption<RPluginError>` the method passes in and tests;
//! - a trait the plugin implements with plain Rust functions, and a `const` constructor that
//!   wraps each of them in a shim that catches panics on the plugin side.
//!
//! Arguments cross by value or by borrow (`RStr<'_>`, `RTermRef<'_>`, `Callback<'_>`): a
//! plugin can't keep a borrow past the call. Results cross as boundary types that the host
//! copies out (`RString` → `String`), because an `RString` made by a plugin carries a vtable
//! that points into that plugin.

use abi_stable::StableAbi;
use abi_stable::std_types::{RString, RVec};

use crate::term::{RTerm, Term, TermDecodeError};

/// A function table type declared with [`interface!`](macro@crate::interface).
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` tables whose every field is an `extern "C"` fn pointer
/// that catches panics before returning (and, for a synchronous interface, returns an
/// initialised value whenever it leaves its error slot empty), and whose `LAYOUT` describes
/// exactly that struct.
/// The host reads a table it got from a plugin as `&Self` after checking only the layout.
/// The [`interface!`](macro@crate::interface) macro upholds this; don't implement it by hand.
pub unsafe trait Interface: StableAbi + Sync + 'static {
    /// The interface's name, checked at load time alongside the layout.
    const NAME: &'static str;
}

/// A boundary type returned by a plugin, and how the host copies it into its own memory.
pub trait IntoHost {
    /// The host-owned type.
    type Host;
    /// Copies (or moves, for plain data) the value into host-owned memory.
    fn into_host(self) -> Self::Host;
}

macro_rules! plain_into_host {
    ($($t:ty),* $(,)?) => {
        $(
            impl IntoHost for $t {
                type Host = $t;
                fn into_host(self) -> $t {
                    self
                }
            }
        )*
    };
}

plain_into_host!((), bool, u8, u16, u32, u64, i8, i16, i32, i64, f32, f64, usize, isize);

impl IntoHost for RString {
    type Host = String;
    fn into_host(self) -> String {
        self.as_str().to_owned()
    }
}

impl IntoHost for RVec<u8> {
    type Host = Vec<u8>;
    fn into_host(self) -> Vec<u8> {
        self.as_slice().to_vec()
    }
}

impl IntoHost for RTerm {
    type Host = Result<Term, TermDecodeError>;
    fn into_host(self) -> Self::Host {
        self.decode()
    }
}

/// Declares a typed interface: the table, its safe host-side methods and the plugin trait.
///
/// ```
/// use plugin_api::abi_stable::std_types::{RStr, RString};
///
/// plugin_api::interface! {
///     /// Says hello.
///     pub struct Hello: HelloImpl;
///     /// Greets someone by name.
///     fn hello(name: RStr<'_>) -> RString;
/// }
///
/// // A plugin implements the trait with plain Rust...
/// struct V1;
/// impl HelloImpl for V1 {
///     fn hello(name: RStr<'_>) -> RString {
///         format!("hello, {name}").into()
///     }
/// }
/// // ...and `export_module!` builds the table with `Hello::table_for::<V1>()`.
/// static TABLE: Hello = Hello::table_for::<V1>();
/// assert_eq!(TABLE.hello("joe".into()).unwrap(), "hello, joe");
/// ```
///
/// Argument and result types must be `StableAbi`; results must implement [`IntoHost`].
///
/// An interface may instead be made of `async fn`s only (`async fn nap(ms: u64) -> u64;`):
/// the plugin implements each with an `async fn` (a `Send` future; arguments owned, since
/// the future outlives the call) and the table returns an
/// [`FfiFuture`](crate::future::FfiFuture), which a host awaits through `Handle::call_async`.
/// Mixing `fn` and `async fn` in one interface is not supported yet.
/// The macro's own paths all go through `$crate`, but the code abi_stable's `StableAbi`
/// derive writes names the crate `::abi_stable` (the derive has no option to name it
/// otherwise), so a crate that declares interfaces needs `abi_stable` as a direct
/// dependency. Implementing an interface declared elsewhere (as the example plugins do with
/// [`Greeter`](crate::interfaces::Greeter)) needs only `plugin-api`.
#[macro_export]
macro_rules! interface {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident : $imp:ident ;
        $(
            $(#[$fmeta:meta])*
            fn $method:ident ( $( $arg:ident : $argty:ty ),* $(,)? ) -> $ret:ty ;
        )*
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive($crate::abi_stable::StableAbi)]
        $vis struct $name {
            $(
                $method: extern "C" fn(
                    $($argty,)*
                    &mut $crate::abi_stable::std_types::ROption<$crate::RPluginError>,
                ) -> ::core::mem::MaybeUninit<$ret>,
            )*
        }

        // SAFETY: the struct above is `#[repr(C)]`, made only of `extern "C"` fn pointers
        // built by `table_for`, each of which catches panics and either returns an
        // initialised value or stores an error; LAYOUT comes from its derive.
        unsafe impl $crate::Interface for $name {
            const NAME: &'static str = ::core::stringify!($name);
        }

        #[doc = ::core::concat!("The plugin side of [`", ::core::stringify!($name), "`]: plain Rust functions.")]
        $vis trait $imp {
            $(
                $(#[$fmeta])*
                fn $method( $($arg: $argty),* ) -> $ret;
            )*
        }

        impl $name {
            /// Builds the table for implementation `T`, each function wrapped in a shim that
            /// turns a panic into an error before it can reach the `extern "C"` boundary.
            pub const fn table_for<T: $imp>() -> Self {
                $(
                    extern "C" fn $method<T: $imp>(
                        $($arg: $argty,)*
                        error: &mut $crate::abi_stable::std_types::ROption<$crate::RPluginError>,
                    ) -> ::core::mem::MaybeUninit<$ret> {
                        $crate::__private::guard_out(move || T::$method($($arg),*), error)
                    }
                )*
                $name { $( $method: $method::<T>, )* }
            }

            $(
                $(#[$fmeta])*
                // Inline (across crates too): the success path is a call through the table
                // (the value comes back in registers when it fits) and a test of the error
                // slot; the error's copy is out of line and cold.
                #[inline]
                #[allow(clippy::too_many_arguments)]
                pub fn $method(&self, $($arg: $argty),* )
                    -> ::core::result::Result<<$ret as $crate::IntoHost>::Host, $crate::PluginError>
                {
                    let mut error = $crate::abi_stable::std_types::ROption::RNone;
                    let value = (self.$method)($($arg,)* &mut error);
                    match error {
                        $crate::abi_stable::std_types::ROption::RNone => {
                            // SAFETY: the shim `table_for` built (the only kind of function
                            // a table holds) returns an initialised value whenever it leaves
                            // the error slot empty.
                            let value = unsafe { value.assume_init() };
                            ::core::result::Result::Ok($crate::IntoHost::into_host(value))
                        }
                        $crate::abi_stable::std_types::ROption::RSome(error) => {
                            ::core::result::Result::Err($crate::__private::cold_error(error))
                        }
                    }
                }
            )*
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident : $imp:ident ;
        $(
            $(#[$fmeta:meta])*
            async fn $method:ident ( $( $arg:ident : $argty:ty ),* $(,)? ) -> $ret:ty ;
        )*
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive($crate::abi_stable::StableAbi)]
        $vis struct $name {
            $(
                $method: extern "C" fn( $($argty),* )
                    -> $crate::abi_stable::std_types::RResult<
                        $crate::future::FfiFuture<$ret>,
                        $crate::RPluginError,
                    >,
            )*
        }

        // SAFETY: the struct above is `#[repr(C)]`, made only of `extern "C"` fn pointers
        // built by `table_for`, each of which catches panics (and so do the poll and drop
        // functions of the futures they return); LAYOUT comes from its derive.
        unsafe impl $crate::Interface for $name {
            const NAME: &'static str = ::core::stringify!($name);
        }

        #[doc = ::core::concat!("The plugin side of [`", ::core::stringify!($name), "`]: `async fn`s (owned arguments: the future outlives the call).")]
        $vis trait $imp {
            $(
                $(#[$fmeta])*
                fn $method( $($arg: $argty),* )
                    -> impl ::core::future::Future<Output = $ret> + ::core::marker::Send + 'static;
            )*
        }

        impl $name {
            /// Builds the table for implementation `T`: each function starts `T`'s future
            /// (a panic while starting it becomes an error) and boxes it as an
            /// [`FfiFuture`]($crate::future::FfiFuture) polled and dropped by this plugin.
            pub const fn table_for<T: $imp>() -> Self {
                $(
                    extern "C" fn $method<T: $imp>( $($arg: $argty),* )
                        -> $crate::abi_stable::std_types::RResult<
                            $crate::future::FfiFuture<$ret>,
                            $crate::RPluginError,
                        >
                    {
                        $crate::__private::guard(move || {
                            $crate::future::FfiFuture::new(T::$method($($arg),*))
                        })
                    }
                )*
                $name { $( $method: $method::<T>, )* }
            }

            $(
                $(#[$fmeta])*
                ///
                /// Returns the boundary future; a host awaits it through
                /// `Handle::call_async`, which holds the version until the future is gone.
                #[allow(clippy::too_many_arguments)]
                pub fn $method(&self, $($arg: $argty),* )
                    -> ::core::result::Result<$crate::future::FfiFuture<$ret>, $crate::PluginError>
                {
                    match (self.$method)($($arg),*) {
                        $crate::abi_stable::std_types::RResult::ROk(future) => {
                            ::core::result::Result::Ok(future)
                        }
                        $crate::abi_stable::std_types::RResult::RErr(error) => {
                            ::core::result::Result::Err($crate::__private::cold_error(error))
                        }
                    }
                }
            )*
        }
    };
}
