//! `ch_app`, version 1: the application callback of ch_app. When ch_app runs on its own
//! its top supervisor is `ch_sup`; when it is included in prim_app, prim_sup starts ch_sup.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::Application;

/// The application callback.
struct ChApp;

impl Application for ChApp {
    fn start(_start_type: Term, _args: Term) -> Result<Term, Term> {
        Ok(Term::tuple([Term::atom("ch_sup"), Term::List(vec![])]))
    }
}

plugin_api::export_module! { name: "ch_app", vsn: "1", application: ChApp }
