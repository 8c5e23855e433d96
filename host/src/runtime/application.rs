//! The application controller: OTP's `application:load/unload/start/stop`.
//!
//! An application is described by its `.app` file ([`AppSpec`]): its modules, its callback
//! module (`mod`), the applications it needs, and the applications it *includes*. Loading
//! an application registers its spec (its code is loaded by the code server, as OTP's boot
//! script or relup does). Starting it calls the callback module's `start(normal, Args)`,
//! which names the top supervisor; the controller starts that supervisor. An included
//! application is loaded but never started by the controller: its top supervisor runs as a
//! child of a supervisor of the including application.
//!
//! The controller's lock is never held while processes start or stop, because a top
//! supervisor reports its own exit back to the controller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plugin_api::Term;
use plugin_api::behaviour::ApplicationTable;

use crate::release::files::AppSpec;
use crate::runtime::bounded;
use crate::runtime::node::{Node, NodeInner};
use crate::runtime::process::{Naming, Parent, Pid, ProcessError};
use crate::runtime::supervisor::{Shutdown, spawn_supervisor};

/// An application's restart type (`application:start(App, Type)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartType {
    /// If it exits, the node should stop.
    Permanent,
    /// If it exits abnormally, the node should stop.
    Transient,
    /// If it exits, it is reported and that is all.
    Temporary,
}

impl RestartType {
    /// Parses `permanent`, `transient` or `temporary`.
    pub fn from_atom(a: &str) -> Option<RestartType> {
        match a {
            "permanent" => Some(RestartType::Permanent),
            "transient" => Some(RestartType::Transient),
            "temporary" => Some(RestartType::Temporary),
            _ => None,
        }
    }
}

/// An application operation was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// `load` of an application that is loaded already.
    #[error("application {0} is already loaded")]
    AlreadyLoaded(String),
    /// The application is not loaded.
    #[error("application {0} is not loaded")]
    NotLoaded(String),
    /// `start` of an application that is running.
    #[error("application {0} is already started")]
    AlreadyStarted(String),
    /// `stop` of an application that is not running.
    #[error("application {0} is not started")]
    NotStarted(String),
    /// `unload` of a running application.
    #[error("application {0} is running: stop it before unloading it")]
    Running(String),
    /// A required application is not running.
    #[error("application {app} needs {needs}, which is not started")]
    DependencyNotStarted {
        /// The application being started.
        app: String,
        /// The one it needs.
        needs: String,
    },
    /// An included application is not loaded.
    #[error("application {app} includes {included}, which is not loaded")]
    IncludedNotLoaded {
        /// The including application.
        app: String,
        /// The included one.
        included: String,
    },
    /// The callback module failed or answered nonsense.
    #[error("application {app}: {module}:start failed: {reason}")]
    Callback {
        /// The application.
        app: String,
        /// Its callback module.
        module: String,
        /// Why.
        reason: Term,
    },
    /// The top supervisor did not start.
    #[error("application {app}: {source}")]
    Supervisor {
        /// The application.
        app: String,
        /// The start error.
        #[source]
        source: ProcessError,
    },
}

/// A running application, for `which_applications`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningApp {
    /// The application's name.
    pub name: String,
    /// Its description from the `.app` file.
    pub description: String,
    /// Its version.
    pub vsn: String,
    /// Its top supervisor, if it has a callback module.
    pub top: Option<Pid>,
    /// Its restart type.
    pub restart: RestartType,
}

#[derive(Default)]
pub(crate) struct AppController {
    loaded: BTreeMap<String, AppSpec>,
    /// In start order.
    running: Vec<RunningApp>,
}

impl AppController {
    pub(crate) fn top_supervisors(&self) -> Vec<Pid> {
        self.running.iter().filter_map(|a| a.top).collect()
    }

    /// The top supervisor of `app` exited on its own (a deliberate stop removes the app
    /// from `running` first, so it does not get here).
    pub(crate) fn top_supervisor_exited(&mut self, app: &str, pid: Pid, reason: &Term) {
        let Some(i) = self.running.iter().position(|a| a.name == app && a.top == Some(pid)) else {
            return;
        };
        let gone = self.running.remove(i);
        match gone.restart {
            RestartType::Permanent => log::error!(
                "permanent application {app} exited ({reason}); in OTP the node would stop"
            ),
            _ => log::warn!("application {app} exited: {reason}"),
        }
    }
}

fn controller(node: &NodeInner) -> std::sync::MutexGuard<'_, AppController> {
    node.apps.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses what an application's `start` returned: `{Module, Args}` or `{ok, {Module, Args}}`.
fn top_supervisor(t: &Term) -> Option<(String, Term)> {
    let body = match t.as_tuple() {
        Some([ok, body]) if ok.is_atom("ok") => body,
        _ => t,
    };
    match body.as_tuple() {
        Some([m, args]) => m.as_atom().map(|m| (m.to_owned(), args.clone())),
        _ => None,
    }
}

/// Calls `f` with the current version of application callback module `module`.
fn with_callback<R>(
    node: &NodeInner,
    module: &str,
    f: impl FnOnce(&ApplicationTable) -> Result<R, plugin_api::PluginError>,
) -> Result<R, Term> {
    let handle = node
        .code
        .handle::<ApplicationTable>(module)
        .map_err(|e| Term::tuple([Term::atom("bad_module"), Term::Str(e.to_string())]))?;
    handle.call(f).map_err(|e| match e {
        crate::code::error::CallError::Plugin { error, .. } => error.exit_reason(),
        other => Term::tuple([Term::atom("undef"), Term::Str(other.to_string())]),
    })
}

/// [`with_callback`] on a thread of its own, waiting at most `timeout` (see
/// [`bounded`](crate::runtime::bounded)); an overrun is `{timeout, Module:Function}`.
fn with_callback_bounded<R: Send + 'static>(
    node: &Arc<NodeInner>,
    module: &str,
    function: &str,
    timeout: Duration,
    f: impl FnOnce(&ApplicationTable) -> Result<R, plugin_api::PluginError> + Send + 'static,
) -> Result<R, Term> {
    let (inner, m) = (Arc::clone(node), module.to_owned());
    bounded::run(format!("{module}:{function}"), timeout, move || with_callback(&inner, &m, f))
        .map_err(|overrun| Term::tuple([Term::atom("timeout"), Term::Str(overrun.to_string())]))?
}

pub(crate) fn stop_all(node: &Arc<NodeInner>) {
    let names: Vec<String> =
        controller(node).running.iter().rev().map(|a| a.name.clone()).collect();
    for name in names {
        if let Err(e) = stop(node, &name) {
            log::warn!("stopping {name}: {e}");
        }
    }
}

fn stop(node: &Arc<NodeInner>, name: &str) -> Result<(), AppError> {
    let (app, spec) = {
        let mut apps = controller(node);
        let Some(i) = apps.running.iter().position(|a| a.name == name) else {
            return Err(AppError::NotStarted(name.to_owned()));
        };
        let app = apps.running.remove(i);
        (app, apps.loaded.get(name).cloned())
    };
    if let Some(top) = app.top {
        node.stop_child(top, Shutdown::Infinity);
    }
    let timeout = node.timeouts().app_stop;
    if let Some((module, _)) = spec.and_then(|s| s.mod_)
        && let Err(reason) =
            with_callback_bounded(node, &module, "stop", timeout, |t| t.stop(&Term::List(vec![])))
    {
        log::warn!("application {name}: {module}:stop failed: {reason}");
    }
    log::info!("application {name} stopped");
    Ok(())
}

impl Node {
    /// `application:load(Spec)`: registers an application's spec.
    pub fn load_application(&self, spec: AppSpec) -> Result<(), AppError> {
        let mut apps = controller(self.inner());
        if apps.loaded.contains_key(&spec.name) {
            return Err(AppError::AlreadyLoaded(spec.name));
        }
        log::info!("application {} {} loaded", spec.name, spec.vsn);
        apps.loaded.insert(spec.name.clone(), spec);
        Ok(())
    }

    /// `application:unload(App)`.
    pub fn unload_application(&self, name: &str) -> Result<(), AppError> {
        let mut apps = controller(self.inner());
        if apps.running.iter().any(|a| a.name == name) {
            return Err(AppError::Running(name.to_owned()));
        }
        match apps.loaded.remove(name) {
            Some(_) => {
                log::info!("application {name} unloaded");
                Ok(())
            }
            None => Err(AppError::NotLoaded(name.to_owned())),
        }
    }

    /// `application:start(App, Type)`: starts its top supervisor through its callback module.
    pub fn start_application(&self, name: &str, restart: RestartType) -> Result<(), AppError> {
        let node = self.inner();
        let spec = {
            let apps = controller(node);
            let Some(spec) = apps.loaded.get(name).cloned() else {
                return Err(AppError::NotLoaded(name.to_owned()));
            };
            if apps.running.iter().any(|a| a.name == name) {
                return Err(AppError::AlreadyStarted(name.to_owned()));
            }
            for needs in &spec.applications {
                let builtin = matches!(needs.as_str(), "kernel" | "stdlib" | "sasl");
                if !builtin && !apps.running.iter().any(|a| &a.name == needs) {
                    return Err(AppError::DependencyNotStarted {
                        app: name.to_owned(),
                        needs: needs.clone(),
                    });
                }
            }
            for included in &spec.included_applications {
                if !apps.loaded.contains_key(included) {
                    return Err(AppError::IncludedNotLoaded {
                        app: name.to_owned(),
                        included: included.clone(),
                    });
                }
            }
            spec
        };
        let top = match &spec.mod_ {
            None => None,
            Some((module, args)) => {
                let callback_err = |reason| AppError::Callback {
                    app: name.to_owned(),
                    module: module.clone(),
                    reason,
                };
                let args_copy = args.clone();
                let timeout = node.timeouts().init;
                let started = with_callback_bounded(node, module, "start", timeout, move |t| {
                    t.start(&Term::atom("normal"), &args_copy)
                })
                .map_err(callback_err)?;
                let (sup, sup_args) = top_supervisor(&started).ok_or_else(|| {
                    callback_err(Term::tuple([Term::atom("bad_return"), started.clone()]))
                })?;
                // The top supervisor starts through its module's start_link: it names itself.
                let pid = spawn_supervisor(
                    node,
                    &sup,
                    sup_args,
                    Naming::ByModule,
                    Parent::Application(name.to_owned()),
                )
                .map_err(|source| AppError::Supervisor { app: name.to_owned(), source })?;
                Some(pid)
            }
        };
        controller(node).running.push(RunningApp {
            name: name.to_owned(),
            description: spec.description.clone(),
            vsn: spec.vsn.clone(),
            top,
            restart,
        });
        log::info!(
            "application {name} {} started{}",
            spec.vsn,
            top.map(|p| format!(", top supervisor {p}")).unwrap_or_default()
        );
        Ok(())
    }

    /// `application:stop(App)`: stops its supervision tree, then calls its `stop`.
    pub fn stop_application(&self, name: &str) -> Result<(), AppError> {
        stop(self.inner(), name)
    }

    /// `application:which_applications()`: the running applications, in start order.
    pub fn which_applications(&self) -> Vec<RunningApp> {
        controller(self.inner()).running.clone()
    }

    /// Replaces the spec of a loaded application with another version's (what OTP's code
    /// path switch at the point of no return amounts to); a running application keeps
    /// running. Returns false if the application is not loaded.
    pub fn replace_application_spec(&self, spec: AppSpec) -> bool {
        let mut apps = controller(self.inner());
        if !apps.loaded.contains_key(&spec.name) {
            return false;
        }
        if let Some(running) = apps.running.iter_mut().find(|a| a.name == spec.name) {
            running.vsn = spec.vsn.clone();
            running.description = spec.description.clone();
        }
        apps.loaded.insert(spec.name.clone(), spec);
        true
    }

    /// Whether application `name` is loaded.
    pub fn is_application_loaded(&self, name: &str) -> bool {
        controller(self.inner()).loaded.contains_key(name)
    }

    /// The specs of every loaded application.
    pub fn loaded_applications(&self) -> Vec<AppSpec> {
        controller(self.inner()).loaded.values().cloned().collect()
    }

    /// Waits up to `timeout` for `pid` to exit; returns its exit reason (for tests and tools).
    pub fn wait_exit(&self, pid: Pid, timeout: Duration) -> Option<Term> {
        self.inner().wait_exit(pid, timeout)
    }
}
