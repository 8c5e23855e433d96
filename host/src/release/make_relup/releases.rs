//! The two releases a relup goes between, read from the root: their `.rel` files, each
//! application's `.app`, and which applications were added, removed or changed.

use std::path::{Path, PathBuf};

use super::{MakeRelupError, MakeRelupErrorKind};
use crate::release::appup::Appup;
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
            apps.push(App { name: listed.name.clone(), vsn: listed.vsn.clone(), dir, spec });
        }
        Ok(Release { vsn: vsn.to_owned(), rel_path, host_vsn: rel.host_vsn, apps })
    }

    pub(super) fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.name == name)
    }

    /// The application of this release that includes `name`, if one does.
    pub(super) fn includer_of(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.spec.included_applications.iter().any(|i| i == name))
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

/// The applications of `new` whose version differs in `old`, with their appups, in the order
/// of `new`'s `.rel`.
pub(super) fn changed_apps(old: &Release, new: &Release) -> Result<Vec<Changed>, MakeRelupError> {
    let mut changed = Vec::new();
    for app in &new.apps {
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
