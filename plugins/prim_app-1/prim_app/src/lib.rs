//! `prim_app`, version 1: the application callback of prim_app; its top supervisor is prim_sup.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::Application;

/// The application callback.
struct PrimApp;

impl Application for PrimApp {
    fn start(_start_type: Term, _args: Term) -> Result<Term, Term> {
        Ok(Term::tuple([Term::atom("prim_sup"), Term::List(vec![])]))
    }
}

plugin_api::export_module! { name: "prim_app", vsn: "1", application: PrimApp }
