//! `ch_sup`, version 1: supervises `ch3`, one for one.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::Supervisor;

/// The supervisor callback.
struct ChSup;

impl Supervisor for ChSup {
    /// Registered as `ch_sup`, as the OTP example's `start_link` does with `{local, ch_sup}`.
    fn local_name(_args: &Term) -> Option<String> {
        Some("ch_sup".to_owned())
    }

    fn init(_args: Term) -> Result<Term, Term> {
        let flags = Term::tuple([Term::atom("one_for_one"), Term::Int(5), Term::Int(10)]);
        let ch3 = Term::tuple([
            Term::atom("ch3"),
            Term::tuple([Term::atom("ch3"), Term::atom("start_link"), Term::List(vec![])]),
            Term::atom("permanent"),
            Term::Int(2000),
            Term::atom("worker"),
            Term::list([Term::atom("ch3")]),
        ]);
        Ok(Term::tuple([flags, Term::list([ch3])]))
    }
}

plugin_api::export_module! { name: "ch_sup", vsn: "1", supervisor: ChSup }
