//! The example release roots that `cargo xtask dist` assembles (SPEC §6, §7).
//!
//! Which roots exist, which releases each holds and which relup upgrades to which release is
//! data, not code: the manifest `relups/examples.txt` (its comments describe the format)
//! names `.rel` files and relup scripts under `relups/`. This module reads them, checks
//! everything it can before touching the disk, and then lays out each root from the library
//! pool `target/dist/lib` as a self-contained ROOT: a root can be moved or copied elsewhere,
//! because it holds its own copies and RELEASES names library directories relative to it.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::project;
use crate::terms::{self, Spanned, Term};

/// The manifest of the example roots, relative to the workspace root.
pub const MANIFEST: &str = "relups/examples.txt";

/// The shape of a `.rel` file, for messages.
const REL_FORM: &str = "{release, {Name, Vsn}, {hotcode, HostVsn}, [{App, AppVsn}]}.";

/// A release's status as RELEASES records it. `current` is deliberately missing: it is never
/// written to disk (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The release the node boots; exactly one per root.
    Permanent,
    /// Unpacked into the root, ready to be installed.
    Unpacked,
    /// Once permanent, since replaced.
    Old,
}

impl Status {
    /// The atom RELEASES uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Permanent => "permanent",
            Status::Unpacked => "unpacked",
            Status::Old => "old",
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
/// appearance. Each root must have exactly one permanent release.
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
            "old" => Status::Old,
            "current" => bail!(
                "{file}:{line}: status `current` is never written to disk (SPEC §6); \
                 use permanent, unpacked or old"
            ),
            other => {
                bail!("{file}:{line}: unknown status `{other}` (use permanent, unpacked or old)")
            }
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
        match roots.iter_mut().find(|r| r.name == root) {
            Some(spec) => spec.releases.push(entry),
            None => roots.push(RootSpec { name: root.to_owned(), releases: vec![entry] }),
        }
    }
    for root in &roots {
        let permanent: Vec<String> = root
            .releases
            .iter()
            .filter(|r| r.status == Status::Permanent)
            .map(|r| r.line.to_string())
            .collect();
        match permanent.len() {
            1 => {}
            0 => bail!(
                "{file}: root `{}` has no permanent release; mark the one `hotcode boot` runs \
                 as permanent",
                root.name
            ),
            _ => bail!(
                "{file}: root `{}` has {} permanent releases (lines {}); only one can be",
                root.name,
                permanent.len(),
                permanent.join(", ")
            ),
        }
    }
    Ok(roots)
}

/// A release, as its `.rel` file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The release's name.
    pub name: String,
    /// The release's version.
    pub vsn: String,
    /// The hotcode version it runs on (where OTP writes the erts version).
    pub host_vsn: String,
    /// Its applications, in boot order.
    pub apps: Vec<App>,
}

/// An application version of a release.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct App {
    /// The application.
    pub name: String,
    /// Its version.
    pub vsn: String,
}

impl App {
    /// Its library directory's name, `<app>-<vsn>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.vsn)
    }
}

/// Parses `text`, the `.rel` file `file` (named in errors, with line and column).
pub fn parse_rel(file: &str, text: &str) -> Result<Release> {
    let term = terms::parse_single(file, text)?;
    let string = |at: &Spanned, what: &str| match &at.term {
        Term::Str(s) => {
            check_file_name(s)
                .with_context(|| format!("{file}:{}:{}: bad {what}", at.line, at.col))?;
            Ok(s.clone())
        }
        _ => Err(expected(file, at, &format!("a string for {what}"))),
    };
    let is_atom = |at: &Spanned, name: &str| matches!(&at.term, Term::Atom(a) if a == name);

    let [tag, id, host, apps] = tuple(file, &term, "a 4-tuple")?;
    if !is_atom(tag, "release") {
        return Err(expected(file, tag, "the atom release"));
    }
    let [name, vsn] = tuple(file, id, "{Name, Vsn}")?;
    let [host_tag, host_vsn] = tuple(file, host, "{hotcode, HostVsn}")?;
    if !is_atom(host_tag, "hotcode") {
        // OTP writes `erts` here; say where hotcode differs, since that is the likely slip.
        return Err(expected(file, host_tag, "the atom hotcode (the host, where OTP writes erts)"));
    }
    let Term::Str(host_vsn) = &host_vsn.term else {
        return Err(expected(file, host_vsn, "a string for HostVsn"));
    };
    let mut release = Release {
        name: string(name, "Name")?,
        vsn: string(vsn, "Vsn")?,
        host_vsn: host_vsn.clone(),
        apps: Vec::new(),
    };
    let Term::List(items) = &apps.term else {
        return Err(expected(file, apps, "a list of {App, AppVsn}"));
    };
    for item in items {
        let [app, app_vsn] = tuple(file, item, "{App, AppVsn}")?;
        let Term::Atom(app_name) = &app.term else {
            return Err(expected(file, app, "an atom for App"));
        };
        check_file_name(app_name)
            .with_context(|| format!("{file}:{}:{}: bad App", app.line, app.col))?;
        if release.apps.iter().any(|known| &known.name == app_name) {
            bail!("{file}:{}:{}: application {app_name} is listed twice", item.line, item.col);
        }
        release.apps.push(App { name: app_name.clone(), vsn: string(app_vsn, "AppVsn")? });
    }
    Ok(release)
}

/// The elements of `at` if it is a tuple of `N`, else an error saying `what` was expected.
fn tuple<'t, const N: usize>(file: &str, at: &'t Spanned, what: &str) -> Result<&'t [Spanned; N]> {
    match &at.term {
        Term::Tuple(items) => items.as_slice().try_into().map_err(|_| expected(file, at, what)),
        _ => Err(expected(file, at, what)),
    }
}

/// An error in a `.rel` file: `what` was expected at `at`.
fn expected(file: &str, at: &Spanned, what: &str) -> anyhow::Error {
    anyhow!(
        "{file}:{}:{}: expected {what}, found {}; a .rel file is {REL_FORM}",
        at.line,
        at.col,
        at.term.describe()
    )
}

/// Renders RELEASES for `releases` in the host's syntax: one release per line, strings in
/// double quotes, atoms bare where they can be, library directories relative to the root.
pub fn render_releases(releases: &[(&Release, Status)]) -> String {
    if releases.is_empty() {
        return "[].\n".to_owned();
    }
    let mut out = String::new();
    for (index, (release, status)) in releases.iter().enumerate() {
        out.push_str(if index == 0 { "[" } else { ",\n " });
        out.push_str("{release, ");
        for text in [&release.name, &release.vsn, &release.host_vsn] {
            terms::write_string(&mut out, text);
            out.push_str(", ");
        }
        out.push('[');
        for (index, app) in release.apps.iter().enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            out.push('{');
            terms::write_atom(&mut out, &app.name);
            out.push_str(", ");
            terms::write_string(&mut out, &app.vsn);
            out.push_str(", ");
            terms::write_string(&mut out, &format!("lib/{}", app.dir_name()));
            out.push('}');
        }
        out.push_str("], ");
        out.push_str(status.as_str());
        out.push('}');
    }
    out.push_str("].\n");
    out
}

/// A root with everything read and checked, ready to be written.
struct PlannedRoot {
    dir: PathBuf,
    releases: Vec<PlannedRelease>,
}

struct PlannedRelease {
    release: Release,
    status: Status,
    /// The `.rel` file, copied byte for byte.
    rel_path: PathBuf,
    /// The relup script and its text, copied byte for byte.
    relup: Option<(PathBuf, Vec<u8>)>,
}

/// Assembles every root that the manifest at `manifest` lists into `dist_dir/<root>/`, from
/// the library pool `dist_dir/lib`. Every `.rel` must be for hotcode `hotcode_vsn`.
///
/// Everything is read and checked first; only then is any root removed and recreated, so a
/// mistake in the manifest or its files leaves the previous roots as they were. Returns the
/// roots' directories.
pub fn assemble(manifest: &Path, dist_dir: &Path, hotcode_vsn: &str) -> Result<Vec<PathBuf>> {
    let pool = dist_dir.join("lib");
    let planned = plan(manifest, dist_dir, hotcode_vsn, Some(&pool))?;
    let mut dirs = Vec::new();
    for root in &planned {
        write_root(root, &pool)?;
        dirs.push(root.dir.clone());
    }
    Ok(dirs)
}

/// Checks the manifest at `manifest` and the files it names, as far as that is possible
/// before the libraries are built: everything but the library pool. Run before a long
/// release build, so that a slip in the data fails at once.
pub fn check(manifest: &Path, hotcode_vsn: &str) -> Result<()> {
    plan(manifest, Path::new("."), hotcode_vsn, None).map(drop)
}

/// Reads and checks every root of the manifest; with `pool`, also that the pool has every
/// application version the releases need.
fn plan(
    manifest: &Path,
    dist_dir: &Path,
    hotcode_vsn: &str,
    pool: Option<&Path>,
) -> Result<Vec<PlannedRoot>> {
    let manifest_name = project::display(manifest);
    let text = fs::read_to_string(manifest)
        .with_context(|| format!("failed to read the example manifest {manifest_name}"))?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut planned = Vec::new();
    for root in parse_manifest(&manifest_name, &text)? {
        planned.push(
            plan_root(&root, base, pool, dist_dir, hotcode_vsn)
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
    hotcode_vsn: &str,
) -> Result<PlannedRoot> {
    let mut releases: Vec<PlannedRelease> = Vec::new();
    for line in &root.releases {
        let rel_path = base.join(&line.rel);
        let rel_name = project::display(&rel_path);
        let text =
            fs::read_to_string(&rel_path).with_context(|| format!("failed to read {rel_name}"))?;
        let release = parse_rel(&rel_name, &text)?;
        if release.host_vsn != hotcode_vsn {
            bail!(
                "{rel_name}: release {} {} is for hotcode {:?}, but the hotcode package is \
                 version {hotcode_vsn:?}; change {{hotcode, {:?}}} in the file to \
                 {{hotcode, {hotcode_vsn:?}}}",
                release.name,
                release.vsn,
                release.host_vsn,
                release.host_vsn,
            );
        }
        if let Some(other) = releases.iter().find(|r| r.release.vsn == release.vsn) {
            bail!(
                "{rel_name} and {} are both release version {:?}; versions in a root must differ",
                project::display(&other.rel_path),
                release.vsn
            );
        }
        // Before the build there is no pool yet: `assemble` checks the applications later.
        if let Some(pool_dir) = pool {
            for app in &release.apps {
                let app_file = pool_dir.join(app.dir_name()).join(format!("{}.app", app.name));
                if !app_file.is_file() {
                    bail!(
                        "{rel_name}: release {} needs application {} {}, but the pool has no {} \
                         (no non-fixture plugin crate declares app = {:?}, vsn = {:?} with its \
                         .app beside it)",
                        release.vsn,
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
                let name = project::display(&path);
                let bytes = fs::read(&path).with_context(|| format!("failed to read {name}"))?;
                let text = std::str::from_utf8(&bytes)
                    .with_context(|| format!("{name} is not UTF-8 text"))?;
                let vsn = terms::relup_vsn(&name, text)?;
                if vsn != release.vsn {
                    bail!(
                        "{name} is the relup of release {vsn:?}, but the manifest gives it to \
                         release {:?} ({rel_name})",
                        release.vsn
                    );
                }
                Some((path, bytes))
            }
        };
        releases.push(PlannedRelease { release, status: line.status, rel_path, relup });
    }
    Ok(PlannedRoot { dir: dist_dir.join(&root.name), releases })
}

/// Removes and recreates one root and fills it.
fn write_root(root: &PlannedRoot, pool: &Path) -> Result<()> {
    if root.dir.exists() {
        fs::remove_dir_all(&root.dir)
            .with_context(|| format!("failed to remove {}", root.dir.display()))?;
    }
    let apps: BTreeSet<&App> = root.releases.iter().flat_map(|r| &r.release.apps).collect();
    for app in apps {
        copy_dir_files(&pool.join(app.dir_name()), &root.dir.join("lib").join(app.dir_name()))?;
    }
    let releases_dir = root.dir.join("releases");
    for planned in &root.releases {
        let release = &planned.release;
        let dir = releases_dir.join(&release.vsn);
        create_dir(&dir)?;
        copy(&planned.rel_path, &dir.join(format!("{}.rel", release.name)))?;
        if let Some((_, bytes)) = &planned.relup {
            let dest = dir.join("relup");
            fs::write(&dest, bytes)
                .with_context(|| format!("failed to write {}", dest.display()))?;
        }
        write_hashes(&root.dir, release, &dir.join(HASHES_FILE))?;
    }
    let entries: Vec<(&Release, Status)> =
        root.releases.iter().map(|r| (&r.release, r.status)).collect();
    let releases_file = releases_dir.join("RELEASES");
    fs::write(&releases_file, render_releases(&entries))
        .with_context(|| format!("failed to write {}", releases_file.display()))?;
    // The node's private directory (socket, lock): its own, mode 0700, or it refuses it.
    let run = root.dir.join("run");
    create_dir(&run)?;
    fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("failed to set the mode of {}", run.display()))?;

    let described: Vec<String> = root
        .releases
        .iter()
        .map(|r| match &r.relup {
            None => format!("{} ({})", r.release.vsn, r.status),
            Some((path, _)) => {
                format!("{} ({}, relup from {})", r.release.vsn, r.status, project::display(path))
            }
        })
        .collect();
    eprintln!("xtask: root {}: release {}", project::display(&root.dir), described.join(", "));
    Ok(())
}

/// The name of a release's integrity record (the host reads it as `modules.sha256`).
const HASHES_FILE: &str = "modules.sha256";

/// Records the SHA-256 of every module file of `release`, in `sha256sum` format with
/// root-relative paths, so the host refuses a module file changed after the build (and an
/// operator can run `sha256sum -c` from the root).
fn write_hashes(root: &Path, release: &Release, dest: &Path) -> Result<()> {
    use sha2::Digest;
    let mut lines = Vec::new();
    for app in &release.apps {
        let dir = Path::new("lib").join(app.dir_name());
        let mut files: Vec<PathBuf> = fs::read_dir(root.join(&dir))
            .with_context(|| format!("failed to read {}", root.join(&dir).display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "so"))
            .collect();
        files.sort();
        for file in files {
            let bytes =
                fs::read(&file).with_context(|| format!("failed to read {}", file.display()))?;
            let digest = sha2::Sha256::digest(&bytes);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            let name =
                file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            lines.push(format!("{hex}  {}/{name}\n", dir.display()));
        }
    }
    fs::write(dest, lines.concat()).with_context(|| format!("failed to write {}", dest.display()))
}

/// Copies every regular file of `from` into a new directory `to`.
fn copy_dir_files(from: &Path, to: &Path) -> Result<()> {
    create_dir(to)?;
    let entries =
        fs::read_dir(from).with_context(|| format!("failed to read {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to read {}", from.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            copy(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("failed to copy {} to {}", from.display(), to.display()))
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

    fn app(name: &str, vsn: &str) -> App {
        App { name: name.into(), vsn: vsn.into() }
    }

    #[test]
    fn manifest_groups_lines_by_root() {
        let text = "# comment\n\n\
                    r1 releases/a.rel permanent\n\
                    r2  releases/a.rel  unpacked\n\
                    \tr1 releases/b.rel unpacked r1.relup  \n\
                    r2 releases/b.rel permanent\n";
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
        assert_eq!(roots[1].releases[1].status, Status::Permanent);
    }

    #[test]
    fn manifest_errors_name_file_and_line() {
        let cases = [
            ("r a.rel\n", "m.txt:1: expected `<root> <rel file> <status> [<relup file>]`"),
            ("r a.rel permanent x.relup extra\n", "found 5 fields"),
            ("r a.rel current\n", "m.txt:1: status `current` is never written to disk"),
            ("r a.rel perm\n", "m.txt:1: unknown status `perm`"),
            ("r /abs/a.rel permanent\n", "m.txt:1: the .rel file /abs/a.rel must be relative"),
            ("lib a.rel permanent\n", "m.txt:1: a root cannot be called `lib`"),
            ("../up a.rel permanent\n", "m.txt:1: bad root name: \"../up\" cannot be used"),
            ("r a.rel unpacked\n", "m.txt: root `r` has no permanent release"),
            (
                "r a.rel permanent\n# x\nr b.rel permanent\n",
                "m.txt: root `r` has 2 permanent releases (lines 1, 3)",
            ),
        ];
        for (text, expected) in cases {
            let msg = format!("{:#}", parse_manifest("m.txt", text).unwrap_err());
            assert!(msg.contains(expected), "{text:?}: {msg}");
        }
    }

    #[test]
    fn rel_files_are_read() {
        let a = parse_rel("a.rel", REL_A).unwrap();
        assert_eq!(
            a,
            Release {
                name: "prim".into(),
                vsn: "A".into(),
                host_vsn: "0.1.0".into(),
                apps: vec![app("prim_app", "1")],
            }
        );
        let b = parse_rel("b.rel", REL_B).unwrap();
        assert_eq!(b.apps, [app("prim_app", "2"), app("ch_app", "1")]);
    }

    #[test]
    fn rel_errors_name_file_line_and_column() {
        let cases = [
            (
                "{release, {\"prim\", \"A\"}, {erts, \"14\"}, []}.",
                "r.rel:1:27: expected the atom hotcode (the host, where OTP writes erts), \
                 found the atom erts",
            ),
            (
                "{rel, {\"p\", \"A\"}, {hotcode, \"1\"}, []}.",
                "r.rel:1:2: expected the atom release",
            ),
            (
                "{release, {p, \"A\"}, {hotcode, \"1\"}, []}.",
                "r.rel:1:12: expected a string for Name",
            ),
            ("{release, {\"p\", \"A\"}, {hotcode, \"1\"}}.", "r.rel:1:1: expected a 4-tuple"),
            (
                "{release, {\"p\", \"A\"}, {hotcode, \"1\"}, [{a, \"1\"},\n {a, \"2\"}]}.",
                "r.rel:2:2: application a is listed twice",
            ),
            (
                "{release, {\"p\", \"A\"}, {hotcode, \"1\"}, [{a, \"../1\"}]}.",
                "r.rel:1:44: bad AppVsn: \"../1\" cannot be used in a file name",
            ),
            (
                "{release, {\"p\", \"A\"}, {hotcode, \"1\"}, [a]}.",
                "r.rel:1:40: expected {App, AppVsn}",
            ),
            ("{release, {\"p\", \"A\"}, {hotcode, \"1\"}, []}", "r.rel:1:42: expected `.`"),
        ];
        for (text, expected) in cases {
            let msg = format!("{:#}", parse_rel("r.rel", text).unwrap_err());
            assert!(msg.contains(expected), "{text:?}: {msg}");
        }
    }

    #[test]
    fn releases_text_is_exact() {
        let a = parse_rel("a.rel", REL_A).unwrap();
        let b = parse_rel("b.rel", REL_B).unwrap();
        assert_eq!(
            render_releases(&[(&a, Status::Permanent), (&b, Status::Unpacked)]),
            "[{release, \"prim\", \"A\", \"0.1.0\", [{prim_app, \"1\", \"lib/prim_app-1\"}], \
             permanent},\n \
             {release, \"prim\", \"B\", \"0.1.0\", [{prim_app, \"2\", \"lib/prim_app-2\"}, \
             {ch_app, \"1\", \"lib/ch_app-1\"}], unpacked}].\n"
        );
        assert_eq!(render_releases(&[]), "[].\n");
        let odd = Release {
            name: "we\"ird".into(),
            vsn: "1".into(),
            host_vsn: "0.1.0".into(),
            apps: vec![app("Odd", "1")],
        };
        assert_eq!(
            render_releases(&[(&odd, Status::Old)]),
            "[{release, \"we\\\"ird\", \"1\", \"0.1.0\", [{'Odd', \"1\", \"lib/Odd-1\"}], old}].\n"
        );
    }

    #[test]
    fn the_repository_manifest_and_rel_files_are_well_formed() {
        let manifest = project::init().unwrap().join(MANIFEST);
        let text = fs::read_to_string(&manifest).unwrap();
        let roots = parse_manifest(MANIFEST, &text).unwrap();
        let names: Vec<&str> = roots.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"included-app-restart"), "{names:?}");
        assert!(names.contains(&"included-app-supervisor"), "{names:?}");
        let base = manifest.parent().unwrap();
        for root in &roots {
            for line in &root.releases {
                let path = base.join(&line.rel);
                let rel =
                    parse_rel(&path.display().to_string(), &fs::read_to_string(&path).unwrap())
                        .unwrap();
                if let Some(relup) = &line.relup {
                    let path = base.join(relup);
                    let vsn = terms::relup_vsn(
                        &path.display().to_string(),
                        &fs::read_to_string(&path).unwrap(),
                    )
                    .unwrap();
                    assert_eq!(vsn, rel.vsn, "{}", path.display());
                }
            }
        }
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
    /// pool with fake libraries.
    fn example(name: &str, manifest: &str) -> Scratch {
        let scratch = Scratch::new(name);
        scratch.write("relups/m.txt", manifest);
        scratch.write("relups/releases/a.rel", REL_A);
        scratch.write("relups/releases/b.rel", REL_B);
        scratch
            .write("relups/up.relup", "%% seed\n{\"B\", [{\"A\", [], []}], [{\"A\", [], []}]}.\n");
        for (dir, files) in [
            ("prim_app-1", ["prim_app.app", "prim_app.so", "prim_sup.so"]),
            ("prim_app-2", ["prim_app.app", "prim_app.so", "prim_sup.so"]),
            ("ch_app-1", ["ch_app.app", "ch_app.so", "ch3.so"]),
            ("greeter-1", ["greeter.app", "greeter.so", "x.so"]),
        ] {
            for file in files {
                scratch.write(&format!("dist/lib/{dir}/{file}"), dir);
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
        let roots = assemble(&scratch.0.join("relups/m.txt"), &dist, "0.1.0").unwrap();
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
        assert_eq!(fs::read_to_string(root.join("releases/A/prim.rel")).unwrap(), REL_A);
        assert_eq!(
            fs::read(root.join("releases/B/relup")).unwrap(),
            fs::read(scratch.0.join("relups/up.relup")).unwrap()
        );
        let a = parse_rel("a", REL_A).unwrap();
        let b = parse_rel("b", REL_B).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("releases/RELEASES")).unwrap(),
            render_releases(&[(&a, Status::Permanent), (&b, Status::Unpacked)])
        );
    }

    #[test]
    fn assemble_checks_everything_before_writing() {
        let cases = [
            // The hotcode version in the .rel files is not the package's.
            ("ex releases/a.rel permanent\n", "0.2.0", "is for hotcode \"0.1.0\""),
            // The relup is for another release.
            ("ex releases/a.rel permanent up.relup\n", "0.1.0", "is the relup of release \"B\""),
            // Two releases with one version.
            (
                "ex releases/a.rel permanent\nex releases/a.rel unpacked\n",
                "0.1.0",
                "are both release version \"A\"",
            ),
            ("ex releases/none.rel permanent\n", "0.1.0", "failed to read"),
        ];
        for (index, (manifest, vsn, expected)) in cases.into_iter().enumerate() {
            let scratch = example(&format!("refuse-{index}"), manifest);
            scratch.write("dist/ex/kept.txt", "an earlier root stays when the new one is bad");
            let err = assemble(&scratch.0.join("relups/m.txt"), &scratch.0.join("dist"), vsn)
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
        let err = assemble(&scratch.0.join("relups/m.txt"), &scratch.0.join("dist"), "0.1.0")
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("needs application ch_app 1"), "{msg}");
        assert!(msg.contains("ch_app-1/ch_app.app"), "{msg}");
    }
}
