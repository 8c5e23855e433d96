//! `svc_sup`, version 1: supervises the request handler, one for one.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::Supervisor;

/// The supervisor callback.
struct SvcSup;

impl Supervisor for SvcSup {
    /// Registered as `svc_sup` (`{local, svc_sup}`).
    fn local_name(_args: &Term) -> Option<String> {
        Some("svc_sup".to_owned())
    }

    fn init(_args: Term) -> Result<Term, Term> {
        let flags = Term::tuple([Term::atom("one_for_one"), Term::Int(10), Term::Int(10)]);
        let handler = Term::tuple([
            Term::atom("svc_handler"),
            Term::tuple([Term::atom("svc_handler"), Term::atom("start_link"), Term::List(vec![])]),
            Term::atom("permanent"),
            Term::Int(5000),
            Term::atom("worker"),
            Term::list([Term::atom("svc_handler")]),
        ]);
        Ok(Term::tuple([flags, Term::list([handler])]))
    }
}

plugin_api::export_module! { name: "svc_sup", vsn: "1", supervisor: SvcSup }
