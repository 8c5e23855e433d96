//! `svc_app`, version 1: the service's application callback; its top supervisor is svc_sup.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::Application;

/// The application callback.
struct SvcApp;

impl Application for SvcApp {
    fn start(_start_type: Term, _args: Term) -> Result<Term, Term> {
        Ok(Term::tuple([Term::atom("svc_sup"), Term::List(vec![])]))
    }
}

plugin_api::export_module! { name: "svc_app", vsn: "1", application: SvcApp }
