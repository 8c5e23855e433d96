//! `prim_sup`, version 1: prim_app's top supervisor, with no children yet.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::Supervisor;

/// The supervisor callback.
struct PrimSup;

impl Supervisor for PrimSup {
    /// Registered as `prim_sup`, as the OTP example's `start_link` does with `{local, prim_sup}`.
    fn local_name(_args: &Term) -> Option<String> {
        Some("prim_sup".to_owned())
    }

    fn init(_args: Term) -> Result<Term, Term> {
        let flags = Term::tuple([Term::atom("one_for_one"), Term::Int(1), Term::Int(60)]);
        Ok(Term::tuple([flags, Term::List(vec![])]))
    }
}

plugin_api::export_module! { name: "prim_sup", vsn: "1", supervisor: PrimSup }
