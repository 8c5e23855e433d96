//! The two releases a relup goes between, read from the root: their `.rel` files, each
//! application's `.app`, and which applications were added, removed or changed.

use std::path::{Path, PathBuf};

use super::{MakeRelupError, MakeRelupErrorKind};
use crate::release::appup::{Appup, StartType};
use crate::release::files::{AppSpec, RelSpec, ReleaseEntry};

/// One release, with everything the translation needs to know about its applications.
pub(super) struct Release {
    pub(super) vsn: String,
    pub(super) rel_path: PathBuf,
    pub(super) host_vsn: String,
    /// In the order of the `.rel`, which is the boot order.
    pub(super) apps: Vec<App>,
}

/// One application version of a release.
pub(super) struct App {
    pub(super) name: String,
    pub(super) vsn: String,
    pub(super) dir: PathBuf,
    pub(super) spec: AppSpec,
    /// The start type the `.rel` gives it, if it gives one.
    pub(super) start_type: Option<StartType>,
    /// The applications it includes in this release: the `.rel`'s `IncApps` if it gives
    /// them, else the `.app`'s `included_applications`.
    pub(super) included: Vec<String>,
}

impl Release {
    /// Reads release `vsn`: its entry in RELEASES (the library directories), its `.rel`
    /// (the applications, in boot order) and each application's `.app`, which must all agree.
    pub(super) fn read(
        root: &Path,
        releases_path: &Path,
        entries: &[ReleaseEntry],
        vsn: &str,
    ) -> Result<Release, MakeRelupError> {
        let inconsistent = |path: &Path, message: String| {
            MakeRelupError::new(path, None, MakeRelupErrorKind::Inconsistent(message))
        };
        let Some(entry) = entries.iter().find(|entry| entry.vsn == vsn) else {
            return Err(MakeRelupError::new(
                releases_path,
                None,
                MakeRelupErrorKind::NoRelease { vsn: vsn.to_owned() },
            ));
        };
        let rel_path = root.join("releases").join(vsn).join(format!("{}.rel", entry.name));
        let rel = RelSpec::read(&rel_path)?;
        if rel.vsn != vsn {
            return Err(inconsistent(
                &rel_path,
                format!(
                    "this .rel is for release \"{}\", but it lies in release \"{vsn}\"",
                    rel.vsn
                ),
            ));
        }
        let mut apps = Vec::with_capacity(rel.apps.len());
        for rel_app in &rel.apps {
            let listed = entry.apps.iter().find(|app| app.name == rel_app.name);
            let Some(listed) = listed.filter(|app| app.vsn == rel_app.vsn) else {
                return Err(inconsistent(
                    releases_path,
                    format!(
                        "release \"{vsn}\" has no {} \"{}\" here, but its .rel ({}) lists it",
                        rel_app.name,
                        rel_app.vsn,
                        rel_path.display()
                    ),
                ));
            };
            // RELEASES's LibDir is always `lib/<app>-<vsn>` (checked when it is read).
            let dir = root.join(&listed.lib_dir);
            let app_path = dir.join(format!("{}.app", listed.name));
            let spec = AppSpec::read(&app_path)?;
            if spec.name != listed.name || spec.vsn != listed.vsn {
                return Err(inconsistent(
                    &app_path,
                    format!(
                        "this .app is for {} \"{}\", but release \"{vsn}\" has {} \"{}\" here",
                        spec.name, spec.vsn, listed.name, listed.vsn
                    ),
                ));
            }
            // rel(4): IncApps "must be a subset of the included applications listed in the
            // application resource file" (systools refuses others: `override_include`).
            let outside = rel_app
                .included
                .iter()
                .flatten()
                .find(|included| !spec.included_applications.contains(included));
            if let Some(outside) = outside {
                return Err(inconsistent(
                    &rel_path,
                    format!(
                        "the .rel's IncApps of {} name {outside}, which its .app ({}) does not \
                         include; IncApps may only leave out some of the .app's \
                         included_applications",
                        listed.name,
                        app_path.display()
                    ),
                ));
            }
            let included =
                rel_app.included.clone().unwrap_or_else(|| spec.included_applications.clone());
            apps.push(App {
                name: listed.name.clone(),
                vsn: listed.vsn.clone(),
                dir,
                spec,
                start_type: rel_app.start_type,
                included,
            });
        }
        Ok(Release { vsn: vsn.to_owned(), rel_path, host_vsn: rel.host_vsn, apps })
    }

    pub(super) fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.name == name)
    }

    /// The application of this release that includes `name`, if one does.
    pub(super) fn includer_of(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.included.iter().any(|i| i == name))
    }

    /// What this release does with application `app` at boot, as its boot script would:
    /// the `.rel`'s type if it gives one; otherwise an included application is only
    /// loaded (its includer's supervisor starts its processes), and any other is started
    /// `permanent` (OTP's default).
    pub(super) fn start_type(&self, app: &App) -> StartType {
        match app.start_type {
            Some(start_type) => start_type,
            None if self.includer_of(&app.name).is_some() => StartType::Load,
            None => StartType::Permanent,
        }
    }

    /// The applications in the order `systools_make:sort_appls` puts them, which is the
    /// order of the boot script and of a relup's appup scripts (relup(4): "in the same
    /// order as in the start script"): every application after the applications it uses
    /// and includes, and otherwise in the order of the `.rel`. Applications a `.app` names
    /// that the release does not have (`kernel`, `stdlib`: a hotcode release has no such
    /// applications) are left out of the order.
    pub(super) fn boot_order(&self) -> Result<Vec<&App>, String> {
        sort_apps(&self.apps)
    }

    /// The application that has `module`: `preferred` if it does, else the first one in
    /// boot order that does (as `systools` looks modules up).
    pub(super) fn owner_of(&self, module: &str, preferred: &str) -> Option<&App> {
        let has = |app: &&App| app.spec.modules.iter().any(|m| m == module);
        self.app(preferred).filter(has).or_else(|| self.apps.iter().find(has))
    }
}

/// An application whose version changes, with the appup of its new version.
pub(super) struct Changed {
    pub(super) app: String,
    pub(super) old_vsn: String,
    pub(super) new_vsn: String,
    pub(super) path: PathBuf,
    pub(super) appup: Appup,
}

/// `systools_make:sort_appls` (OTP 25): each application is taken in turn; if some
/// applications it uses or includes have not been placed yet, they are moved in front of it
/// and it is tried again; an application that includes one that uses it is not waited for
/// by that one. A cycle is an error naming the applications in it.
fn sort_apps(apps: &[App]) -> Result<Vec<&App>, String> {
    let mut todo: Vec<&App> = apps.iter().collect();
    let mut placed: Vec<&App> = Vec::new();
    let mut visited: Vec<&str> = Vec::new();
    let mut circular: Vec<&str> = Vec::new();
    while !todo.is_empty() {
        let app = todo.remove(0);
        // The applications it uses, then those it includes. systools prepends each one it
        // finds; OTP 25 searches the used ones in the `.app`'s order (so they end up last
        // first) and the included ones last first (so they keep the `.app`'s order).
        let mut before: Vec<&App> = Vec::new();
        let uses: Vec<&String> = app.spec.applications.iter().collect();
        let includes: Vec<&String> = app.included.iter().rev().collect();
        for deps in [uses, includes] {
            let mut found = Vec::new();
            for name in deps {
                let Some(at) = todo.iter().position(|other| other.name == *name) else {
                    continue;
                };
                // "It is OK to have a dependency like X includes Y, Y uses X."
                if todo[at].included.contains(&app.name) {
                    continue;
                }
                found.push(todo.remove(at));
            }
            before.extend(found.into_iter().rev());
        }
        visited.push(&app.name);
        if before.is_empty() {
            placed.push(app);
            continue;
        }
        for other in &before {
            if visited.contains(&other.name.as_str()) && !circular.contains(&other.name.as_str()) {
                circular.push(&other.name);
                circular.push(&app.name);
            }
        }
        before.retain(|other| !circular.contains(&other.name.as_str()));
        before.push(app);
        before.extend(todo);
        todo = before;
    }
    if !circular.is_empty() {
        circular.sort_unstable();
        circular.dedup();
        return Err(format!(
            "the applications {} depend on each other in a cycle (their `applications` and \
             `included_applications`), so they have no order to start in",
            circular.join(", ")
        ));
    }
    Ok(placed)
}

/// The applications of `new` whose version differs in `old`, with their appups, in `new`'s
/// boot order ([`Release::boot_order`]).
pub(super) fn changed_apps(old: &Release, new: &Release) -> Result<Vec<Changed>, MakeRelupError> {
    let order = new.boot_order().map_err(|message| {
        MakeRelupError::new(&new.rel_path, None, MakeRelupErrorKind::Inconsistent(message))
    })?;
    let mut changed = Vec::new();
    for app in order {
        let Some(before) = old.app(&app.name).filter(|before| before.vsn != app.vsn) else {
            continue;
        };
        let path = app.dir.join(format!("{}.appup", app.name));
        if !path.is_file() {
            return Err(MakeRelupError::new(
                &path,
                None,
                MakeRelupErrorKind::MissingAppup {
                    app: app.name.clone(),
                    from_vsn: before.vsn.clone(),
                    to_vsn: app.vsn.clone(),
                },
            ));
        }
        let appup = Appup::read(&path)?;
        if appup.vsn != app.vsn {
            return Err(MakeRelupError::new(
                &path,
                Some(appup.vsn_pos),
                MakeRelupErrorKind::AppupVsn {
                    app: app.name.clone(),
                    appup_vsn: appup.vsn.clone(),
                    app_vsn: app.vsn.clone(),
                },
            ));
        }
        changed.push(Changed {
            app: app.name.clone(),
            old_vsn: before.vsn.clone(),
            new_vsn: app.vsn.clone(),
            path,
            appup,
        });
    }
    Ok(changed)
}
