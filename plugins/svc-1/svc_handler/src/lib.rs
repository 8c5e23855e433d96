//! `svc_handler`, version 1: the service's request handler, a gen_server.
//!
//! Each request is one text line (a `Str` term); the reply is one line.
//! `INCR key` → `OK <new value> v1`; `GET key` → `OK <value> v1`; anything else →
//! `ERR <reason> v1`. The state is a map from key to counter, exported as the term
//! `[{Key, Value}]` (strings and integers): the format both versions agree on.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use plugin_api::Term;
use plugin_api::behaviour::{CallResult, GenServer};

/// Version 1.
struct Handler;

fn parse_pairs(state: &Term) -> Option<BTreeMap<String, i64>> {
    state
        .as_list()?
        .iter()
        .map(|pair| match pair.as_tuple()? {
            [Term::Str(k), Term::Int(v)] => Some((k.clone(), *v)),
            _ => None,
        })
        .collect()
}

impl GenServer for Handler {
    /// Registered as `svc_handler` (`{local, svc_handler}`), so that clients can call it by name.
    fn local_name(_args: &Term) -> Option<String> {
        Some("svc_handler".to_owned())
    }

    type State = BTreeMap<String, i64>;

    fn init(_args: Term) -> Result<Self::State, Term> {
        Ok(BTreeMap::new())
    }

    fn handle_call(request: Term, counters: &mut Self::State) -> CallResult {
        let line = request.as_str().unwrap_or("");
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("INCR"), Some(key), None) => {
                let value = counters.entry(key.to_owned()).or_insert(0);
                *value += 1;
                format!("OK {value} v1")
            }
            (Some("GET"), Some(key), None) => {
                format!("OK {} v1", counters.get(key).copied().unwrap_or(0))
            }
            _ => "ERR bad_request v1".to_owned(),
        };
        CallResult::Reply(Term::Str(reply))
    }

    fn export_state(counters: &Self::State) -> Term {
        Term::list(counters.iter().map(|(k, v)| Term::tuple([Term::Str(k.clone()), Term::Int(*v)])))
    }

    fn code_change(_from: Term, state: Term, _extra: Term) -> Result<Self::State, Term> {
        parse_pairs(&state).ok_or_else(|| Term::tuple([Term::atom("bad_state"), state]))
    }
}

plugin_api::export_module! { name: "svc_handler", vsn: "1", gen_server: Handler }
