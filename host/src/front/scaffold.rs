//! `hotcode new NAME`: a new upgradeable service to start from.
//!
//! It writes version 1 of application `NAME` as a Cargo workspace of its own, laid out as
//! `hotcode release` and the guide (README, "Your own upgradeable service") expect:
//!
//! ```text
//! NAME/NAME-1/
//!   Cargo.toml        the workspace of version 1: one crate per module
//!   NAME.app          the application: vsn, modules, registered, mod
//!   NAME_app/         the application callback
//!   NAME_sup/         the top supervisor
//!   NAME_server/      a gen_server, a small key-value store
//! ```
//!
//! Each module is a `cdylib` crate named after its module (so `cargo build --release`
//! makes `target/release/lib<module>.so`, which `hotcode release --lib-dir` finds), whose
//! only dependency is `plugin-api` (by path: hotcode is not on crates.io). Each version is
//! a workspace of its own so that its crates keep their module names: version 2 starts as a
//! copy of `NAME-1` in `NAME-2`. `NAME_server` registers as `NAME_server` and keeps a list
//! of `{Key, Value}` pairs: `{put, K, V}`, `{get, K}`, `keys`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// `hotcode new` failed; nothing was left half-written unless the error says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    /// The name cannot be an application's: it must be an Erlang atom that is also a Rust
    /// crate name (`[a-z][a-z0-9_]*`, at most 64 bytes).
    #[error(
        "{name:?} cannot name an application: use lower-case letters, digits and _, starting \
         with a letter (at most 64)"
    )]
    BadName {
        /// The name asked for.
        name: String,
    },
    /// The directory exists already.
    #[error("{}: exists already; choose another name or directory", path.display())]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// `plugin-api` is not where it was said to be.
    #[error("{}: not the plugin-api crate (no Cargo.toml naming package \"plugin-api\")", path.display())]
    NoPluginApi {
        /// The path given.
        path: PathBuf,
    },
    /// Writing a file failed (the directory is left as it is, for inspection).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Whether `name` can name an application (and its crates).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Writes version 1 of application `name` into `dir/NAME-1/` (`dir` must not exist), with
/// `plugin_api` (the `plugin-api` crate's directory) as the modules' dependency. Returns
/// the files written, relative to `dir`.
pub fn new_service(
    dir: &Path,
    name: &str,
    plugin_api: &Path,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName { name: name.to_owned() });
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists { path: dir.to_owned() });
    }
    let manifest = plugin_api.join("Cargo.toml");
    let is_plugin_api = fs::read_to_string(&manifest)
        .is_ok_and(|text| text.lines().any(|l| l.trim() == "name = \"plugin-api\""));
    if !is_plugin_api {
        return Err(ScaffoldError::NoPluginApi { path: plugin_api.to_owned() });
    }
    let plugin_api = std::path::absolute(plugin_api)
        .map_err(|source| ScaffoldError::Io { path: plugin_api.to_owned(), source })?;
    let api = toml_string(&plugin_api.display().to_string());
    let files = files(name, &api);
    let mut written = Vec::new();
    for (relative, text) in files {
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|source| ScaffoldError::Io { path: parent.to_owned(), source })?;
        }
        fs::write(&path, text)
            .map_err(|source| ScaffoldError::Io { path: path.clone(), source })?;
        written.push(PathBuf::from(relative));
    }
    Ok(written)
}

/// `text` as a TOML basic string, quotes included.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Every file of the project: `(relative path, contents)`.
fn files(name: &str, api: &str) -> Vec<(String, String)> {
    let fill = |t: &str| t.replace("{{name}}", name).replace("{{plugin_api}}", api);
    let mut files = vec![
        (format!("{name}-1/Cargo.toml"), fill(WORKSPACE)),
        (format!("{name}-1/{name}.app"), fill(APP_FILE)),
        (".gitignore".to_owned(), "target/\n".to_owned()),
    ];
    for (module, description, source) in [
        ("app", "the application callback", APP_SRC),
        ("sup", "the top supervisor", SUP_SRC),
        ("server", "the gen_server", SERVER_SRC),
    ] {
        let crate_dir = format!("{name}-1/{name}_{module}");
        let manifest = CRATE_MANIFEST
            .replace("{{module}}", &format!("{name}_{module}"))
            .replace("{{description}}", description);
        files.push((format!("{crate_dir}/Cargo.toml"), fill(&manifest)));
        files.push((format!("{crate_dir}/src/lib.rs"), fill(source)));
    }
    files
}

const WORKSPACE: &str = r#"# {{name}}, one version: a crate per module, each named after its module.
[workspace]
resolver = "3"
members = ["{{name}}_app", "{{name}}_sup", "{{name}}_server"]

# What ships: no debug info (it would be most of each library, and every load copies the
# file), symbols kept. Never `panic = "abort"`: hotcode refuses such a plugin.
[profile.release]
debug = 0
strip = "debuginfo"
"#;

const CRATE_MANIFEST: &str = r#"[package]
name = "{{module}}"
description = "{{name}} version 1: {{description}}."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
plugin-api = { path = {{plugin_api}} }
"#;

const APP_FILE: &str = r#"%% {{name}}, version 1.
{application, {{name}},
 [{description, "{{name}} service"},
  {vsn, "1"},
  {modules, [{{name}}_app, {{name}}_sup, {{name}}_server]},
  {registered, [{{name}}_sup, {{name}}_server]},
  {applications, []},
  {mod, {{{name}}_app, []}}]}.
"#;

const APP_SRC: &str = r#"//! `{{name}}_app`, version 1: the application callback; its top supervisor is `{{name}}_sup`.
#![forbid(unsafe_code)]

use plugin_api::behaviour::Application;
use plugin_api::{Term, log};

struct App;

impl Application for App {
    fn start(_start_type: Term, _args: Term) -> Result<Term, Term> {
        log::info!("starting {{name}}");
        Ok(Term::tuple([Term::atom("{{name}}_sup"), Term::List(vec![])]))
    }
}

plugin_api::export_module! { name: "{{name}}_app", vsn: "1", application: App }
"#;

const SUP_SRC: &str = r#"//! `{{name}}_sup`, version 1: supervises `{{name}}_server`, one for one.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::Supervisor;

struct Sup;

impl Supervisor for Sup {
    fn local_name(_args: &Term) -> Option<String> {
        Some("{{name}}_sup".to_owned())
    }

    fn init(_args: Term) -> Result<Term, Term> {
        // {Strategy, Intensity, Period}, then {Id, {M, F, A}, Restart, Shutdown, Type, Modules}.
        let flags = Term::tuple([Term::atom("one_for_one"), Term::Int(5), Term::Int(10)]);
        let server = Term::tuple([
            Term::atom("{{name}}_server"),
            Term::tuple([
                Term::atom("{{name}}_server"),
                Term::atom("start_link"),
                Term::List(vec![]),
            ]),
            Term::atom("permanent"),
            Term::Int(2000),
            Term::atom("worker"),
            Term::list([Term::atom("{{name}}_server")]),
        ]);
        Ok(Term::tuple([flags, Term::list([server])]))
    }
}

plugin_api::export_module! { name: "{{name}}_sup", vsn: "1", supervisor: Sup }
"#;

const SERVER_SRC: &str = r#"//! `{{name}}_server`, version 1: a small key-value store.
//!
//! Requests: `{put, Key, Value}` → `ok`; `{get, Key}` → `{ok, Value}` or `not_found`;
//! `keys` → the keys, oldest first. The state is a list of `{Key, Value}`; version 1 exports
//! it as that list.
#![forbid(unsafe_code)]

use plugin_api::Term;
use plugin_api::behaviour::{CallResult, GenServer};

struct Server;

/// The pairs, oldest first.
type Pairs = Vec<(Term, Term)>;

impl GenServer for Server {
    type State = Pairs;

    /// Registered as `{{name}}_server`: clients call it by name.
    fn local_name(_args: &Term) -> Option<String> {
        Some("{{name}}_server".to_owned())
    }

    fn init(_args: Term) -> Result<Pairs, Term> {
        Ok(Vec::new())
    }

    fn handle_call(request: Term, pairs: &mut Pairs) -> CallResult {
        let reply = match request.as_tuple() {
            Some([tag, key, value]) if tag.is_atom("put") => {
                match pairs.iter_mut().find(|(k, _)| k == key) {
                    Some((_, v)) => *v = value.clone(),
                    None => pairs.push((key.clone(), value.clone())),
                }
                Term::ok()
            }
            Some([tag, key]) if tag.is_atom("get") => {
                match pairs.iter().find(|(k, _)| k == key) {
                    Some((_, v)) => Term::tuple([Term::atom("ok"), v.clone()]),
                    None => Term::atom("not_found"),
                }
            }
            _ if request.is_atom("keys") => Term::list(pairs.iter().map(|(k, _)| k.clone())),
            _ => Term::tuple([Term::atom("error"), Term::atom("bad_request")]),
        };
        CallResult::Reply(reply)
    }

    fn export_state(pairs: &Pairs) -> Term {
        Term::list(pairs.iter().map(|(k, v)| Term::tuple([k.clone(), v.clone()])))
    }

    fn code_change(_from: Term, state: Term, _extra: Term) -> Result<Pairs, Term> {
        // Version 1 reads its own format: a list of {Key, Value}.
        let bad = || Term::tuple([Term::atom("bad_state"), state.clone()]);
        let list = state.as_list().ok_or_else(bad)?;
        list.iter()
            .map(|pair| match pair.as_tuple() {
                Some([k, v]) => Ok((k.clone(), v.clone())),
                _ => Err(bad()),
            })
            .collect()
    }
}

plugin_api::export_module! { name: "{{name}}_server", vsn: "1", gen_server: Server }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_atoms_and_crate_names() {
        assert!(valid_name("kv"));
        assert!(valid_name("kv_store2"));
        for bad in ["", "Kv", "2kv", "kv-store", "k v", "../kv", &"k".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_become_toml_strings() {
        assert_eq!(toml_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
    }

    #[test]
    fn the_workspace_has_three_module_crates_and_an_app_file() {
        let names: Vec<String> = files("kv", "\"/p\"").into_iter().map(|(p, _)| p).collect();
        for want in [
            "kv-1/Cargo.toml",
            "kv-1/kv.app",
            "kv-1/kv_app/Cargo.toml",
            "kv-1/kv_sup/src/lib.rs",
            "kv-1/kv_server/src/lib.rs",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        let (_, app) = files("kv", "\"/p\"").into_iter().find(|(p, _)| p == "kv-1/kv.app").unwrap();
        assert!(app.contains("{mod, {kv_app, []}}"), "{app}");
    }
}
