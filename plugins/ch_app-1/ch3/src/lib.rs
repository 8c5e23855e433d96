//! `ch3`, version 1: the channel allocator of OTP's design principles, as a gen_server.
//!
//! Requests (`call`): `alloc` → a channel number, or `{error, no_channels}`;
//! `{free, Ch}` → `ok` or `{error, not_allocated}`; `count` → `{Allocated, Free}`;
//! `version` → `1`. Casts: `{free, Ch}`. The state is exported as `{Allocated, Free}`
//! (two lists of integers).
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::{CallResult, CastResult, GenServer};

/// How many channels there are.
const CHANNELS: i64 = 100;

/// Version 1 keeps two sorted lists, as the Erlang original does.
struct Ch3;

/// The allocator's state: allocated and free channels.
struct Channels {
    allocated: Vec<i64>,
    free: Vec<i64>,
}

impl Channels {
    fn alloc(&mut self) -> Term {
        if self.free.is_empty() {
            return Term::error(Term::atom("no_channels"));
        }
        let ch = self.free.remove(0);
        self.allocated.push(ch);
        Term::Int(ch)
    }

    fn free(&mut self, ch: i64) -> Term {
        match self.allocated.iter().position(|&a| a == ch) {
            Some(i) => {
                self.allocated.remove(i);
                let at = self.free.partition_point(|&f| f < ch);
                self.free.insert(at, ch);
                Term::ok()
            }
            None => Term::error(Term::atom("not_allocated")),
        }
    }
}

fn ints(t: &Term) -> Option<Vec<i64>> {
    t.as_list()?.iter().map(Term::as_int).collect()
}

impl GenServer for Ch3 {
    /// Registered as `ch3`, as the OTP example's `start_link` does with `{local, ch3}`.
    fn local_name(_args: &Term) -> Option<String> {
        Some("ch3".to_owned())
    }

    type State = Channels;

    fn init(_args: Term) -> Result<Channels, Term> {
        Ok(Channels { allocated: Vec::new(), free: (1..=CHANNELS).collect() })
    }

    fn handle_call(request: Term, state: &mut Channels) -> CallResult {
        let reply = match &request {
            r if r.is_atom("alloc") => state.alloc(),
            r if r.is_atom("count") => Term::tuple([
                Term::Int(state.allocated.len() as i64),
                Term::Int(state.free.len() as i64),
            ]),
            r if r.is_atom("version") => Term::Int(1),
            r => match r.as_tuple() {
                Some([tag, Term::Int(ch)]) if tag.is_atom("free") => state.free(*ch),
                _ => Term::error(Term::tuple([Term::atom("unknown_request"), request.clone()])),
            },
        };
        CallResult::Reply(reply)
    }

    fn handle_cast(message: Term, state: &mut Channels) -> CastResult {
        if let Some([tag, Term::Int(ch)]) = message.as_tuple()
            && tag.is_atom("free")
        {
            state.free(*ch);
        }
        CastResult::Continue
    }

    fn export_state(state: &Channels) -> Term {
        let list = |v: &[i64]| Term::list(v.iter().map(|&c| Term::Int(c)));
        Term::tuple([list(&state.allocated), list(&state.free)])
    }

    fn code_change(_from: Term, state: Term, _extra: Term) -> Result<Channels, Term> {
        // Version 1 reads its own format: from an implicit reload of itself, or from a
        // newer version that converted down to it.
        match state.as_tuple() {
            Some([allocated, free]) => match (ints(allocated), ints(free)) {
                (Some(allocated), Some(free)) => Ok(Channels { allocated, free }),
                _ => Err(Term::tuple([Term::atom("bad_state"), state.clone()])),
            },
            _ => Err(Term::tuple([Term::atom("bad_state"), state.clone()])),
        }
    }
}

plugin_api::export_module! { name: "ch3", vsn: "1", gen_server: Ch3 }
