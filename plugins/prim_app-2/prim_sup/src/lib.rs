//! `prim_sup`, version 2: starts the included application's top supervisor, `ch_sup`, as
//! a child (the seed document's change to prim_sup's `init`).
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
        let ch_sup = Term::tuple([
            Term::atom("ch_sup"),
            Term::tuple([Term::atom("ch_sup"), Term::atom("start_link"), Term::List(vec![])]),
            Term::atom("permanent"),
            Term::atom("infinity"),
            Term::atom("supervisor"),
            Term::list([Term::atom("ch_sup")]),
        ]);
        Ok(Term::tuple([flags, Term::list([ch_sup])]))
    }
}

plugin_api::export_module! { name: "prim_sup", vsn: "2", supervisor: PrimSup }
