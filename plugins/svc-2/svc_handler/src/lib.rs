//! `svc_handler`, version 2: the request handler with a new state layout and a new command.
//!
//! Same line protocol as version 1, replies tagged `v2`, plus `INCRBY key n`. The state keeps,
//! per key, the value and how many updates it saw since the upgrade, in a vector sorted by
//! key (not version 1's map), so moving between versions needs `code_change`: up from "1"
//! reads `[{Key, Value}]`; `downgrade_state` writes that format back for version 1.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::{CallResult, GenServer};

/// Version 2.
struct Handler;

/// One counter.
struct Entry {
    key: String,
    value: i64,
    updates: u64,
}

/// Sorted by key.
struct Counters(Vec<Entry>);

impl Counters {
    fn entry(&mut self, key: &str) -> &mut Entry {
        let at = match self.0.binary_search_by(|e| e.key.as_str().cmp(key)) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, Entry { key: key.to_owned(), value: 0, updates: 0 });
                at
            }
        };
        &mut self.0[at]
    }

    fn add(&mut self, key: &str, by: i64) -> String {
        let e = self.entry(key);
        e.value += by;
        e.updates += 1;
        format!("OK {} v2", e.value)
    }

    fn pairs(&self) -> Term {
        Term::list(
            self.0.iter().map(|e| Term::tuple([Term::Str(e.key.clone()), Term::Int(e.value)])),
        )
    }
}

impl GenServer for Handler {
    /// Registered as `svc_handler` (`{local, svc_handler}`), so that clients can call it by name.
    fn local_name(_args: &Term) -> Option<String> {
        Some("svc_handler".to_owned())
    }

    type State = Counters;

    fn init(_args: Term) -> Result<Counters, Term> {
        Ok(Counters(Vec::new()))
    }

    fn handle_call(request: Term, counters: &mut Counters) -> CallResult {
        let line = request.as_str().unwrap_or("");
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["INCR", key] => counters.add(key, 1),
            ["INCRBY", key, by] => match by.parse::<i64>() {
                Ok(by) => counters.add(key, by),
                Err(_) => "ERR bad_number v2".to_owned(),
            },
            ["GET", key] => {
                let value = counters.0.iter().find(|e| e.key == *key).map_or(0, |e| e.value);
                format!("OK {value} v2")
            }
            _ => "ERR bad_request v2".to_owned(),
        };
        CallResult::Reply(Term::Str(reply))
    }

    fn export_state(counters: &Counters) -> Term {
        Term::tuple([
            Term::atom("v2"),
            Term::list(counters.0.iter().map(|e| {
                Term::tuple([
                    Term::Str(e.key.clone()),
                    Term::Int(e.value),
                    Term::Int(e.updates as i64),
                ])
            })),
        ])
    }

    fn downgrade_state(counters: &Counters, _to: Term, _extra: Term) -> Result<Term, Term> {
        Ok(counters.pairs())
    }

    fn code_change(_from: Term, state: Term, _extra: Term) -> Result<Counters, Term> {
        let bad = || Term::tuple([Term::atom("bad_state"), state.clone()]);
        // Our own format (an implicit reload of version 2), or version 1's [{Key, Value}].
        let (items, own) = match state.as_tuple() {
            Some([tag, items]) if tag.is_atom("v2") => (items.as_list().ok_or_else(bad)?, true),
            _ => (state.as_list().ok_or_else(bad)?, false),
        };
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let entry = match (item.as_tuple(), own) {
                (Some([Term::Str(k), Term::Int(v), Term::Int(n)]), true) => {
                    Entry { key: k.clone(), value: *v, updates: *n as u64 }
                }
                (Some([Term::Str(k), Term::Int(v)]), false) => {
                    Entry { key: k.clone(), value: *v, updates: 0 }
                }
                _ => return Err(bad()),
            };
            entries.push(entry);
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Counters(entries))
    }
}

plugin_api::export_module! { name: "svc_handler", vsn: "2", gen_server: Handler }
