//! The example release roots that `cargo xtask dist` assembles (SPEC §6, §7).
//!
//! Which roots exist, which releases each holds and which relup upgrades to which release is
//! data, not code: the manifest `relups/examples.txt` (its comments describe the format)
//! names `.rel` files and relup scripts under `relups/`. This module reads them, checks
//! everything it can before touching the disk, and then makes each root from the library
//! pool `target/dist/lib` with the host's own assembler, the code behind `hotcode release
//! new` and `hotcode release add` ([`hotcode::release::assemble`]): one way to lay out a
//! root, whoever asks for it. A root is self-contained: it holds its own copies, and
//! RELEASES names library directories relative to it, so it can be moved or copied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hotcode::release::assemble::{self, Libraries, ModuleCheck, ReleaseSource, RelupSource};
use hotcode::release::{RelSpec, read_relup};

use crate::project;

/// The manifest of the example roots, relative to the workspace root.
pub const MANIFEST: &str = "relups/examples.txt";

/// A release's status as RELEASES records it: the statuses `hotcode release new` and
/// `hotcode release add` give. `current` is never written to disk (SPEC §6), and `old` only
/// comes from making another release permanent on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The release the node boots: a root's first release.
    Permanent,
    /// Unpacked into the root, ready to be installed: every later release.
    Unpacked,
}

impl Status {
    /// The atom RELEASES uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Permanent => "permanent",
            Status::Unpacked => "unpacked",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One root of the manifest: its releases, in the order of their lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSpec {
    /// The root's directory name under `target/dist/`.
    pub name: String,
    /// Its releases.
    pub releases: Vec<ReleaseLine>,
}

/// One release line of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseLine {
    /// The `.rel` file, relative to the manifest's directory.
    pub rel: PathBuf,
    /// The release's status in RELEASES.
    pub status: Status,
    /// The release's relup script, relative to the manifest's directory.
    pub relup: Option<PathBuf>,
    /// The line of the manifest, for messages.
    pub line: usize,
}

/// Parses `text`, the manifest `file` (named in errors): one line per release,
/// `<root> <rel file> <status> [<relup file>]`, grouped by root in order of first
/// appearance. Each root's first release is permanent and has no relup; the others are
/// unpacked.
pub fn parse_manifest(file: &str, text: &str) -> Result<Vec<RootSpec>> {
    let mut roots: Vec<RootSpec> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let (root, rel, status, relup) = match fields.as_slice() {
            [root, rel, status] => (*root, *rel, *status, None),
            [root, rel, status, relup] => (*root, *rel, *status, Some(*relup)),
            _ => bail!(
                "{file}:{line}: expected `<root> <rel file> <status> [<relup file>]`, \
                 found {} fields",
                fields.len()
            ),
        };
        check_file_name(root).with_context(|| format!("{file}:{line}: bad root name"))?;
        if root == "lib" {
            bail!("{file}:{line}: a root cannot be called `lib`: target/dist/lib is the pool");
        }
        let status = match status {
            "permanent" => Status::Permanent,
            "unpacked" => Status::Unpacked,
            "current" => bail!(
                "{file}:{line}: status `current` is never written to disk (SPEC §6); \
                 use permanent or unpacked"
            ),
            "old" => bail!(
                "{file}:{line}: status `old` comes only from making another release permanent \
                 on a node; use permanent or unpacked"
            ),
            other => bail!("{file}:{line}: unknown status `{other}` (use permanent or unpacked)"),
        };
        let relative = |what: &str, path: &str| -> Result<PathBuf> {
            let path = PathBuf::from(path);
            if path.is_absolute() {
                bail!(
                    "{file}:{line}: the {what} {} must be relative to the manifest's directory",
                    path.display()
                );
            }
            Ok(path)
        };
        let entry = ReleaseLine {
            rel: relative(".rel file", rel)?,
            status,
            relup: relup.map(|r| relative("relup file", r)).transpose()?,
            line,
        };
        let spec = match roots.iter_mut().find(|r| r.name == root) {
            Some(spec) => spec,
            None => {
                roots.push(RootSpec { name: root.to_owned(), releases: Vec::new() });
                roots.last_mut().expect("just pushed")
            }
        };
        let first = spec.releases.is_empty();
        match (first, entry.status) {
            (true, Status::Unpacked) => bail!(
                "{file}:{line}: root `{root}` starts with an unpacked release; its first \
                 release is the permanent one, the one `hotcode boot` runs"
            ),
            (false, Status::Permanent) => bail!(
                "{file}:{line}: root `{root}` has a permanent release already (line {}); \
                 only its first release can be",
                spec.releases[0].line
            ),
            (true, Status::Permanent) if entry.relup.is_some() => bail!(
                "{file}:{line}: the first release of root `{root}` has nothing to upgrade \
                 from, so it has no relup"
            ),
            _ => {}
        }
        spec.releases.push(entry);
    }
    Ok(roots)
}

/// A root with everything read and checked, ready to be made.
struct PlannedRoot {
    name: String,
    dir: PathBuf,
    releases: Vec<PlannedRelease>,
}

struct PlannedRelease {
    rel: RelSpec,
    /// The host binary to keep in the root for the release's host version, if the root
    /// keeps them (see [`host_versions`]).
    host_binary: Option<PathBuf>,
    /// The relup script, copied byte for byte.
    relup: Option<PathBuf>,
}

/// Assembles every root that the manifest at `manifest` lists into `dist_dir/<root>/`, from
/// the library pool `dist_dir/lib`. A root whose releases run on more than one host version,
/// or on another than `hotcode_vsn`, keeps each release's host binary
/// (`host-<HostVsn>/bin/hotcode`), taken from `hosts` (see [`host_versions`]); `check` is
/// called on every module library (the real run inspects each as a plugin).
///
/// Everything is read and checked first; only then is any root made. Each root is made under
/// a temporary name and then replaces the previous one, so a mistake in the manifest or its
/// files leaves the previous roots as they were. Returns the roots' directories.
pub fn assemble(
    manifest: &Path,
    dist_dir: &Path,
    hotcode_vsn: &str,
    hosts: &BTreeMap<String, PathBuf>,
    check: ModuleCheck<'_>,
) -> Result<Vec<PathBuf>> {
    let pool = dist_dir.join("lib");
    let mut planned = plan(manifest, dist_dir, Some(&pool))?;
    for root in &mut planned {
        if !keeps_hosts(root, hotcode_vsn) {
            continue;
        }
        for release in &mut root.releases {
            let vsn = &release.rel.host_vsn;
            let binary = hosts.get(vsn).with_context(|| {
                format!("root `{}`: no hotcode binary was built for host {vsn}", root.name)
            })?;
            release.host_binary = Some(binary.clone());
        }
    }
    let mut dirs = Vec::new();
    for root in &planned {
        make_root(root, &pool, check).with_context(|| format!("root `{}`", root.name))?;
        dirs.push(root.dir.clone());
    }
    Ok(dirs)
}

/// Whether `root` keeps host binaries: its releases run on more than one host version, or
/// on another than the hotcode package's (a node moves between them by restarting on the
/// release's own binary, `restart_new_emulator`).
fn keeps_hosts(root: &PlannedRoot, hotcode_vsn: &str) -> bool {
    let hosts: BTreeSet<&str> = root.releases.iter().map(|r| r.rel.host_vsn.as_str()).collect();
    hosts.len() > 1 || hosts.iter().any(|h| *h != hotcode_vsn)
}

/// The host versions whose `hotcode` binary some root of the manifest keeps: `dist` builds
/// each (another version than the package's with `HOTCODE_HOST_VSN` set).
pub fn host_versions(manifest: &Path, hotcode_vsn: &str) -> Result<BTreeSet<String>> {
    let planned = plan(manifest, Path::new("."), None)?;
    Ok(planned
        .iter()
        .filter(|root| keeps_hosts(root, hotcode_vsn))
        .flat_map(|root| root.releases.iter().map(|r| r.rel.host_vsn.clone()))
        .collect())
}

/// Checks the manifest at `manifest` and the files it names, as far as that is possible
/// before the libraries are built: everything but the library pool. Run before a long
/// release build, so that a slip in the data fails at once.
pub fn check(manifest: &Path) -> Result<()> {
    plan(manifest, Path::new("."), None).map(drop)
}

/// Reads and checks every root of the manifest; with `pool`, also that the pool has every
/// application version the releases need.
fn plan(manifest: &Path, dist_dir: &Path, pool: Option<&Path>) -> Result<Vec<PlannedRoot>> {
    let manifest_name = project::display(manifest);
    let text = fs::read_to_string(manifest)
        .with_context(|| format!("failed to read the example manifest {manifest_name}"))?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut planned = Vec::new();
    for root in parse_manifest(&manifest_name, &text)? {
        planned.push(
            plan_root(&root, base, pool, dist_dir)
                .with_context(|| format!("root `{}` of {manifest_name}", root.name))?,
        );
    }
    Ok(planned)
}

/// Reads and checks one root's releases.
fn plan_root(
    root: &RootSpec,
    base: &Path,
    pool: Option<&Path>,
    dist_dir: &Path,
) -> Result<PlannedRoot> {
    let mut releases: Vec<PlannedRelease> = Vec::new();
    for line in &root.releases {
        let rel_path = base.join(&line.rel);
        let rel_name = project::display(&rel_path);
        let rel = RelSpec::read(&rel_path)?;
        if releases.iter().any(|r| r.rel.vsn == rel.vsn) {
            bail!("{rel_name}: release version {:?} is in the root twice", rel.vsn);
        }
        // Before the build there is no pool yet: `assemble` checks the applications later.
        if let Some(pool_dir) = pool {
            for app in &rel.apps {
                let app_file = app_file(pool_dir, &app.name, &app.vsn);
                if !app_file.is_file() {
                    bail!(
                        "{rel_name}: release {} needs application {} {}, but the pool has no {} \
                         (no non-fixture plugin crate declares app = {:?}, vsn = {:?} with its \
                         .app beside it)",
                        rel.vsn,
                        app.name,
                        app.vsn,
                        project::display(&app_file),
                        app.name,
                        app.vsn
                    );
                }
            }
        }
        let relup = match &line.relup {
            None => None,
            Some(relup) => {
                let path = base.join(relup);
                let vsn = read_relup(&path)?.vsn;
                if vsn != rel.vsn {
                    bail!(
                        "{} is the relup of release {vsn:?}, but the manifest gives it to \
                         release {:?} ({rel_name})",
                        project::display(&path),
                        rel.vsn
                    );
                }
                Some(path)
            }
        };
        releases.push(PlannedRelease { rel, relup, host_binary: None });
    }
    Ok(PlannedRoot { name: root.name.clone(), dir: dist_dir.join(&root.name), releases })
}

/// `<pool>/<app>-<vsn>/<app>.app`.
fn app_file(pool: &Path, app: &str, vsn: &str) -> PathBuf {
    pool.join(format!("{app}-{vsn}")).join(format!("{app}.app"))
}

/// What `hotcode release new|add` would be given for `rel`: the pool's `.app` files, and
/// the pool's application directories to find `<module>.so` in.
fn source(rel: &RelSpec, pool: &Path, host_binary: Option<PathBuf>) -> ReleaseSource {
    ReleaseSource {
        name: rel.name.clone(),
        vsn: rel.vsn.clone(),
        host_vsn: rel.host_vsn.clone(),
        apps: rel.apps.iter().map(|a| app_file(pool, &a.name, &a.vsn)).collect(),
        libraries: Libraries {
            dirs: rel.apps.iter().map(|a| pool.join(format!("{}-{}", a.name, a.vsn))).collect(),
            modules: Default::default(),
        },
        host_binary,
    }
}

/// Makes one root under a temporary name beside it (its first release with
/// [`assemble::new_root`], the others with [`assemble::add_release`]), then puts it in
/// place of the previous one.
fn make_root(root: &PlannedRoot, pool: &Path, check: ModuleCheck<'_>) -> Result<()> {
    let parent = root.dir.parent().unwrap_or(Path::new("."));
    let staging = parent.join(format!(".{}.assembling", root.name));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("failed to remove {}", staging.display()))?;
    }
    let mut described = Vec::new();
    for (index, planned) in root.releases.iter().enumerate() {
        let source = source(&planned.rel, pool, planned.host_binary.clone());
        if index == 0 {
            assemble::new_root(&staging, &source, check)?;
            described.push(format!("{} ({})", planned.rel.vsn, Status::Permanent));
        } else {
            let relup = match &planned.relup {
                Some(path) => RelupSource::File(path.clone()),
                None => RelupSource::None,
            };
            assemble::add_release(&staging, &source, &relup, check)?;
            described.push(match &planned.relup {
                None => format!("{} ({})", planned.rel.vsn, Status::Unpacked),
                Some(path) => format!(
                    "{} ({}, relup from {})",
                    planned.rel.vsn,
                    Status::Unpacked,
                    project::display(path)
                ),
            });
        }
    }
    if root.dir.exists() {
        fs::remove_dir_all(&root.dir)
            .with_context(|| format!("failed to remove {}", root.dir.display()))?;
    }
    fs::rename(&staging, &root.dir)
        .with_context(|| format!("failed to move {} into place", root.dir.display()))?;
    eprintln!("xtask: root {}: release {}", project::display(&root.dir), described.join(", "));
    Ok(())
}

/// Fails unless `value` can be used as one file name component.
fn check_file_name(value: &str) -> Result<()> {
    let bad = value.is_empty()
        || value == "."
        || value == ".."
        || value.chars().any(|c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace());
    if bad {
        bail!("{value:?} cannot be used in a file name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REL_A: &str =
        "%% A\n{release, {\"prim\", \"A\"}, {hotcode, \"0.1.0\"}, [{prim_app, \"1\"}]}.\n";
    const REL_B: &str = "{release, {\"prim\", \"B\"}, {hotcode, \"0.1.0\"},\n \
                         [{prim_app, \"2\"}, {ch_app, \"1\"}]}.\n";

    /// The tests' libraries are not plugins: no module is checked.
    fn no_check(_: &Path) -> std::result::Result<(), String> {
        Ok(())
    }

    #[test]
    fn manifest_groups_lines_by_root() {
        let text = "# comment\n\n\
                    r1 releases/a.rel permanent\n\
                    r2  releases/b.rel  permanent\n\
                    \tr1 releases/b.rel unpacked r1.relup  \n\
                    r2 releases/a.rel unpacked\n";
        let roots = parse_manifest("m.txt", text).unwrap();
        assert_eq!(roots.len(), 2);
        assert_eq!(roots[0].name, "r1");
        assert_eq!(
            roots[0].releases,
            [
                ReleaseLine {
                    rel: "releases/a.rel".into(),
                    status: Status::Permanent,
                    relup: None,
                    line: 3
                },
                ReleaseLine {
                    rel: "releases/b.rel".into(),
                    status: Status::Unpacked,
                    relup: Some("r1.relup".into()),
                    line: 5
                },
            ]
        );
        assert_eq!(roots[1].name, "r2");
        assert_eq!(roots[1].releases[1].status, Status::Unpacked);
    }

    #[test]
    fn manifest_errors_name_file_and_line() {
        let cases = [
            ("r a.rel\n", "m.txt:1: expected `<root> <rel file> <status> [<relup file>]`"),
            ("r a.rel permanent x.relup extra\n", "found 5 fields"),
            ("r a.rel current\n", "m.txt:1: status `current` is never written to disk"),
            ("r a.rel old\n", "m.txt:1: status `old` comes only from making"),
            ("r a.rel perm\n", "m.txt:1: unknown status `perm`"),
            ("r /abs/a.rel permanent\n", "m.txt:1: the .rel file /abs/a.rel must be relative"),
            ("lib a.rel permanent\n", "m.txt:1: a root cannot be called `lib`"),
            ("../up a.rel permanent\n", "m.txt:1: bad root name: \"../up\" cannot be used"),
            ("r a.rel unpacked\n", "m.txt:1: root `r` starts with an unpacked release"),
            ("r a.rel permanent x.relup\n", "m.txt:1: the first release of root `r` has nothing"),
            (
                "r a.rel permanent\n# x\nr b.rel permanent\n",
                "m.txt:3: root `r` has a permanent release already (line 1)",
            ),
        ];
        for (text, expected) in cases {
            let msg = format!("{:#}", parse_manifest("m.txt", text).unwrap_err());
            assert!(msg.contains(expected), "{text:?}: {msg}");
        }
    }

    #[test]
    fn the_repository_manifest_and_rel_files_are_well_formed() {
        let manifest = project::init().unwrap().join(MANIFEST);
        let text = fs::read_to_string(&manifest).unwrap();
        let roots = parse_manifest(MANIFEST, &text).unwrap();
        let names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"included-app-restart"), "{names:?}");
        assert!(names.contains(&"included-app-supervisor"), "{names:?}");
        check(&manifest).unwrap();
    }

    /// A scratch directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn files_under(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(next) = stack.pop() {
            for entry in fs::read_dir(&next).unwrap() {
                let path = entry.unwrap().path();
                let shown = path.strip_prefix(dir).unwrap().display().to_string();
                if path.is_dir() {
                    out.push(format!("{shown}/"));
                    stack.push(path);
                } else {
                    out.push(shown);
                }
            }
        }
        out.sort();
        out
    }

    /// A scratch workspace: a manifest with one root, its `.rel` files and relup, and a
    /// pool with `.app` files and fake libraries.
    fn example(name: &str, manifest: &str) -> Scratch {
        let scratch = Scratch::new(name);
        scratch.write("relups/m.txt", manifest);
        scratch.write("relups/releases/a.rel", REL_A);
        scratch.write("relups/releases/b.rel", REL_B);
        scratch.write("relups/releases/c.rel", &REL_A.replace("\"A\"", "\"C\""));
        scratch
            .write("relups/up.relup", "%% seed\n{\"B\", [{\"A\", [], []}], [{\"A\", [], []}]}.\n");
        for (app, vsn, modules) in [
            ("prim_app", "1", &["prim_app", "prim_sup"][..]),
            ("prim_app", "2", &["prim_app", "prim_sup"]),
            ("ch_app", "1", &["ch_app", "ch3"]),
            ("greeter", "1", &["greeter", "x"]),
        ] {
            let dir = format!("dist/lib/{app}-{vsn}");
            scratch.write(
                &format!("{dir}/{app}.app"),
                &format!(
                    "{{application, {app}, [{{vsn, \"{vsn}\"}}, {{modules, [{}]}}]}}.\n",
                    modules.join(", ")
                ),
            );
            for module in modules {
                scratch.write(&format!("{dir}/{module}.so"), &format!("{app}-{vsn} {module}"));
            }
        }
        scratch
    }

    #[test]
    fn assemble_lays_out_a_self_contained_root_and_drops_stale_files() {
        let scratch = example(
            "assemble",
            "ex releases/a.rel permanent\nex releases/b.rel unpacked up.relup\n",
        );
        let dist = scratch.0.join("dist");
        scratch.write("dist/ex/stale.txt", "left over from an earlier run");
        let roots =
            assemble(&scratch.0.join("relups/m.txt"), &dist, "0.1.0", &BTreeMap::new(), &no_check)
                .unwrap();
        assert_eq!(roots, [dist.join("ex")]);
        assert_eq!(
            files_under(&dist.join("ex")),
            [
                "lib/",
                "lib/ch_app-1/",
                "lib/ch_app-1/ch3.so",
                "lib/ch_app-1/ch_app.app",
                "lib/ch_app-1/ch_app.so",
                "lib/prim_app-1/",
                "lib/prim_app-1/prim_app.app",
                "lib/prim_app-1/prim_app.so",
                "lib/prim_app-1/prim_sup.so",
                "lib/prim_app-2/",
                "lib/prim_app-2/prim_app.app",
                "lib/prim_app-2/prim_app.so",
                "lib/prim_app-2/prim_sup.so",
                "releases/",
                "releases/A/",
                "releases/A/modules.sha256",
                "releases/A/prim.rel",
                "releases/B/",
                "releases/B/modules.sha256",
                "releases/B/prim.rel",
                "releases/B/relup",
                "releases/RELEASES",
                "run/",
            ]
        );
        let root = dist.join("ex");
        let rel = RelSpec::read(&root.join("releases/A/prim.rel")).unwrap();
        assert_eq!(rel, RelSpec::parse(Path::new("a.rel"), REL_A).unwrap());
        assert_eq!(
            fs::read(root.join("releases/B/relup")).unwrap(),
            fs::read(scratch.0.join("relups/up.relup")).unwrap()
        );
        assert_eq!(
            fs::read_to_string(root.join("releases/RELEASES")).unwrap(),
            "[{release, \"prim\", \"A\", \"0.1.0\", [{prim_app, \"1\", \"lib/prim_app-1\"}], \
             permanent},\n \
             {release, \"prim\", \"B\", \"0.1.0\", [{prim_app, \"2\", \"lib/prim_app-2\"}, \
             {ch_app, \"1\", \"lib/ch_app-1\"}], unpacked}].\n"
        );
        let record = fs::read_to_string(root.join("releases/A/modules.sha256")).unwrap();
        let files: Vec<&str> =
            record.lines().filter_map(|l| l.split_once("  ")).map(|(_, f)| f).collect();
        assert_eq!(files, ["lib/prim_app-1/prim_app.so", "lib/prim_app-1/prim_sup.so"]);
        assert!(!dist.join(".ex.assembling").exists(), "the staging directory is gone");
    }

    #[test]
    fn assemble_checks_everything_before_writing() {
        let cases = [
            // The hotcode version in the .rel files is not the package's, and no binary of
            // it was built.
            (
                "ex releases/a.rel permanent\n",
                "0.2.0",
                "no hotcode binary was built for host 0.1.0",
            ),
            // The relup is for another release.
            (
                "ex releases/a.rel permanent\nex releases/c.rel unpacked up.relup\n",
                "0.1.0",
                "is the relup of release \"B\"",
            ),
            // Two releases with one version.
            (
                "ex releases/a.rel permanent\nex releases/a.rel unpacked\n",
                "0.1.0",
                "release version \"A\" is in the root twice",
            ),
            ("ex releases/none.rel permanent\n", "0.1.0", "none.rel: cannot read the file"),
        ];
        for (index, (manifest, vsn, expected)) in cases.into_iter().enumerate() {
            let scratch = example(&format!("refuse-{index}"), manifest);
            scratch.write("dist/ex/kept.txt", "an earlier root stays when the new one is bad");
            let err = assemble(
                &scratch.0.join("relups/m.txt"),
                &scratch.0.join("dist"),
                vsn,
                &BTreeMap::new(),
                &no_check,
            )
            .unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(expected), "{manifest:?}: {msg}");
            assert!(msg.contains("root `ex`"), "{msg}");
            assert!(scratch.0.join("dist/ex/kept.txt").exists(), "{manifest:?}");
        }
    }

    #[test]
    fn assemble_names_a_missing_application_version() {
        let scratch = example("missing-app", "ex releases/b.rel permanent\n");
        fs::remove_dir_all(scratch.0.join("dist/lib/ch_app-1")).unwrap();
        let err = assemble(
            &scratch.0.join("relups/m.txt"),
            &scratch.0.join("dist"),
            "0.1.0",
            &BTreeMap::new(),
            &no_check,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("needs application ch_app 1"), "{msg}");
        assert!(msg.contains("ch_app-1/ch_app.app"), "{msg}");
    }
}
