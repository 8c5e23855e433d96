//! `prim_app`, version 1: the application callback of prim_app; its top supervisor is prim_sup.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::Application;
use plugin_api::log;

/// The application callback.
struct PrimApp;

impl Application for PrimApp {
    fn start(start_type: Term, args: Term) -> Result<Term, Term> {
        // The node's log shows these under the target `prim_app@1`, at the node's level.
        log::info!("starting the top supervisor, prim_sup");
        log::debug!("start type {start_type}, arguments {args}");
        Ok(Term::tuple([Term::atom("prim_sup"), Term::List(vec![])]))
    }
}

plugin_api::export_module! { name: "prim_app", vsn: "1", application: PrimApp }
