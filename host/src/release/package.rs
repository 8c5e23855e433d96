//! Release packages: one release in one `.tar.gz`, as OTP's `systools:make_tar` makes it and
//! `release_handler:unpack_release` reads it.
//!
//! A package holds exactly what a release adds to a root, with root-relative paths:
//!
//! ```text
//! releases/<vsn>/<name>.rel
//! releases/<vsn>/modules.sha256
//! releases/<vsn>/relup                  (when the release has one)
//! lib/<app>-<appvsn>/<app>.app          (for every application of the release)
//! lib/<app>-<appvsn>/<app>.appup        (when the application version has one)
//! lib/<app>-<appvsn>/<module>.so
//! host-<hostvsn>/bin/hotcode            (when the release keeps its host binary)
//! ```
//!
//! [`write()`] makes one (deterministically: fixed modes, owner 0, time 0, entries in the order
//! given). [`extract`] reads one into a directory, and since a package comes from elsewhere it
//! is a trust boundary: every entry is checked before a byte of it is written, and the first
//! entry that fails stops the extraction with an error naming it. An entry must
//!
//! - have a path that is relative and made of words ([`super::names`]): no leading `/`, no
//!   `..` or `.` (one leading `./` is allowed, as `tar -C dir .` writes it), no hidden
//!   names, no control characters, UTF-8;
//! - fit the layout above: a directory `releases`, `lib`, `releases/<x>`, `lib/<x>`,
//!   `host-<x>` or `host-<x>/bin`, or a regular file `releases/<x>/<file>`,
//!   `lib/<x>/<file>` or `host-<x>/bin/hotcode`; nothing deeper;
//! - be a regular file or a directory: never a symbolic or hard link, a device, a FIFO or
//!   a sparse file;
//! - appear once;
//! - stay within the [`Limits`]: sizes are taken from the headers and refused before the
//!   data is read.
//!
//! Files are created new (`O_EXCL`) with mode 0644 (a host binary 0755) and directories
//! with 0755 below the target directory, which the caller makes private and empty; the package's own modes,
//! owners and times are ignored. What the files *mean* (the `.rel`, the `.app` files, the
//! integrity record) is then checked by the release handler as for any unpacked directory.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::names::{NameKind, check_name};

/// The file name ending of a release package.
pub const PACKAGE_SUFFIX: &str = ".tar.gz";

/// How much a package may hold; anything beyond is refused before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most entries (files and directories).
    pub max_entries: usize,
    /// The largest file, in bytes.
    pub max_file_size: u64,
    /// The most bytes of all files together.
    pub max_total_size: u64,
}

impl Default for Limits {
    /// 10,000 entries, 256 MiB a file, 1 GiB in all: far above any release of plugins
    /// (a release-built plugin is under 1 MiB), far below what fills a disk.
    fn default() -> Limits {
        Limits { max_entries: 10_000, max_file_size: 256 << 20, max_total_size: 1 << 30 }
    }
}

/// A release package could not be made or was refused.
///
/// Displays as `package: entry "path": message`, or `package: message` when no one entry is
/// concerned.
#[derive(Debug)]
pub struct PackageError {
    /// The package file.
    pub package: PathBuf,
    /// The entry concerned, as its header names it (lossily decoded when it is not UTF-8).
    pub entry: Option<String>,
    /// What was wrong.
    pub kind: PackageErrorKind,
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.package.display())?;
        if let Some(entry) = &self.entry {
            write!(f, "entry {entry:?}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

// The I/O error is part of the message, as with `ParseError`.
impl std::error::Error for PackageError {}

/// What was wrong with a release package or one of its entries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageErrorKind {
    /// The package (or a file it is made from, or one extracted) could not be read or
    /// written.
    #[error("{what} ({source})")]
    Io {
        /// What failed, e.g. `cannot read the package` or `cannot write lib/a-1/m.so`.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The file is not a gzip-compressed tar archive, or it is cut short.
    #[error("not a readable .tar.gz ({0})")]
    Corrupt(io::Error),
    /// An entry's path is not UTF-8.
    #[error("the path is not UTF-8")]
    NotUtf8,
    /// An entry's path is absolute.
    #[error("an absolute path; a package holds only paths relative to the root")]
    Absolute,
    /// An entry's path has a `..`, a `.` (other than one leading `./`) or an empty
    /// component.
    #[error("the path has a {0:?} component; a package holds only plain relative paths")]
    NotPlain(String),
    /// A component of an entry's path is not a word.
    #[error("{0}")]
    BadName(String),
    /// An entry outside the layout of a package.
    #[error(
        "not part of a release package, whose entries are releases/<vsn>/<file> and \
         lib/<app>-<vsn>/<file> (and their directories)"
    )]
    Layout,
    /// An entry that is neither a regular file nor a directory.
    #[error("{0}; a package holds only regular files and directories")]
    Type(&'static str),
    /// An entry given twice.
    #[error("given twice")]
    Duplicate,
    /// A file larger than [`Limits::max_file_size`].
    #[error("{size} bytes, more than the {limit} a file of a package may have")]
    TooLarge {
        /// Its size, from its header.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More entries than [`Limits::max_entries`].
    #[error("more than {0} entries")]
    TooManyEntries(usize),
    /// More bytes in all than [`Limits::max_total_size`].
    #[error("the files add up to more than {0} bytes")]
    TooMuchData(u64),
}

impl PackageError {
    fn new(package: &Path, entry: Option<&str>, kind: PackageErrorKind) -> PackageError {
        PackageError { package: package.to_owned(), entry: entry.map(str::to_owned), kind }
    }
}

fn io_error(
    package: &Path,
    entry: Option<&str>,
    what: impl Into<String>,
) -> impl FnOnce(io::Error) -> PackageError {
    let (package, entry, what) = (package.to_owned(), entry.map(str::to_owned), what.into());
    move |source| PackageError { package, entry, kind: PackageErrorKind::Io { what, source } }
}

/// One entry of a package to [`write()`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory, by its root-relative path (`lib/a-1`).
    Dir(String),
    /// A regular file: its root-relative path in the package and the file it is read from.
    File {
        /// Its path in the package (`lib/a-1/m.so`).
        path: String,
        /// Where its bytes are read from.
        source: PathBuf,
    },
}

/// Writes a package holding `entries`, in that order, to `out`, atomically (a temporary file
/// beside it, renamed into place). Headers are deterministic: directories 0755 and files
/// 0644 (a host binary 0755), owner and group 0, time 0, so two packages of the same files are the same bytes.
/// Returns the size of the package.
pub fn write(out: &Path, entries: &[Entry]) -> Result<u64, PackageError> {
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".hotcode-package-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_error(out, None, "cannot create the package"))?;
    let gz = flate2::write::GzEncoder::new(
        io::BufWriter::new(temp.as_file()),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, path, io::empty()).map_err(io_error(
                    out,
                    Some(path),
                    "cannot write the entry",
                ))?;
            }
            Entry::File { path, source } => {
                let file = fs::File::open(source).map_err(io_error(
                    out,
                    Some(path),
                    format!("cannot read {}", source.display()),
                ))?;
                let meta = file.metadata().map_err(io_error(
                    out,
                    Some(path),
                    format!("cannot read {}", source.display()),
                ))?;
                header.set_entry_type(tar::EntryType::Regular);
                let parts: Vec<&str> = path.split('/').collect();
                header.set_mode(if is_host_path(&parts) == Some(true) { 0o755 } else { 0o644 });
                header.set_size(meta.len());
                // `take` keeps the entry as long as its header says, even if the file grew.
                tar.append_data(&mut header, path, file.take(meta.len())).map_err(io_error(
                    out,
                    Some(path),
                    "cannot write the entry",
                ))?;
            }
        }
    }
    let gz = tar.into_inner().map_err(io_error(out, None, "cannot write the package"))?;
    let buffered = gz.finish().map_err(io_error(out, None, "cannot write the package"))?;
    buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .map_err(io_error(out, None, "cannot write the package"))?;
    let size =
        temp.as_file().metadata().map_err(io_error(out, None, "cannot write the package"))?.len();
    temp.persist(out).map_err(|e| io_error(out, None, "cannot write the package")(e.error))?;
    Ok(size)
}

/// What [`extract`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The root-relative paths of the files written, in the order of the package.
    pub files: Vec<String>,
    /// The bytes written.
    pub bytes: u64,
}

/// The longest GNU long-name record taken: a path of three words of at most 255 bytes,
/// with room to spare.
const MAX_LONG_NAME: u64 = 4096;

/// Extracts the package read from `input` (the file `package`, named in errors) into
/// `into`, an empty directory private to the caller, checking every entry as the
/// [module docs](self) say. On an error, what was written below `into` is left for the
/// caller to remove with the directory.
pub fn extract(
    package: &Path,
    input: impl Read,
    into: &Path,
    limits: &Limits,
) -> Result<Extracted, PackageError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(input));
    let corrupt = |e: io::Error| PackageError::new(package, None, PackageErrorKind::Corrupt(e));
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut extracted = Extracted::default();
    // Raw entries: the tar crate would read a GNU long-name or PAX record's whole body into
    // memory before any limit here could look at it (a few KiB of gzip can claim GiBs). So
    // a long name (`write` makes one for a path over 100 bytes, as GNU tar does) is read
    // here, bounded, and applies to the next entry; PAX headers come through as entries of
    // their own type and are refused below.
    let mut long_name: Option<Vec<u8>> = None;
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        let mut entry = entry.map_err(corrupt)?;
        if entry.header().entry_type() == tar::EntryType::GNULongName {
            let size = entry.size();
            if size > MAX_LONG_NAME {
                let fail =
                    |kind| PackageError::new(package, Some("(a GNU long-name record)"), kind);
                return Err(fail(PackageErrorKind::TooLarge { size, limit: MAX_LONG_NAME }));
            }
            let mut name = Vec::new();
            (&mut entry).take(size).read_to_end(&mut name).map_err(corrupt)?;
            while name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
            continue;
        }
        let raw = match long_name.take() {
            Some(name) => name,
            None => entry.path_bytes().into_owned(),
        };
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let fail = |kind| PackageError::new(package, Some(&shown), kind);
        if seen.len() >= limits.max_entries {
            return Err(fail(PackageErrorKind::TooManyEntries(limits.max_entries)));
        }
        let path = std::str::from_utf8(&raw).map_err(|_| fail(PackageErrorKind::NotUtf8))?;
        let kind = entry.header().entry_type();
        // The root itself, as `tar -C dir .` writes it first: nothing to make.
        if matches!(path, "." | "./") && kind == tar::EntryType::Directory {
            seen.insert(String::new());
            continue;
        }
        let parts = plain_parts(path).map_err(fail)?;
        let is_dir = match kind {
            tar::EntryType::Directory => true,
            tar::EntryType::Regular if !path.ends_with('/') => false,
            other => return Err(fail(PackageErrorKind::Type(type_name(other)))),
        };
        let host = is_host_path(&parts);
        let layout_ok = host.is_some()
            || matches!(parts.first().copied(), Some("releases" | "lib"))
                && if is_dir { parts.len() <= 2 } else { parts.len() == 3 };
        let layout_ok = layout_ok && host.is_none_or(|binary| binary != is_dir);
        if !layout_ok {
            return Err(fail(PackageErrorKind::Layout));
        }
        let key = parts.join("/");
        if !seen.insert(key.clone()) {
            return Err(fail(PackageErrorKind::Duplicate));
        }
        let target = parts.iter().fold(into.to_path_buf(), |path, part| path.join(part));
        if is_dir {
            make_dirs(into, &parts).map_err(io_error(package, Some(&shown), "cannot create it"))?;
            continue;
        }
        let size = entry.size();
        if size > limits.max_file_size {
            return Err(fail(PackageErrorKind::TooLarge { size, limit: limits.max_file_size }));
        }
        extracted.bytes = extracted.bytes.saturating_add(size);
        if extracted.bytes > limits.max_total_size {
            return Err(fail(PackageErrorKind::TooMuchData(limits.max_total_size)));
        }
        make_dirs(into, &parts[..parts.len() - 1]).map_err(io_error(
            package,
            Some(&shown),
            "cannot create its directory",
        ))?;
        let mode = if host == Some(true) { 0o755 } else { 0o644 };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)
            .map_err(io_error(package, Some(&shown), "cannot create it"))?;
        let copied = io::copy(&mut (&mut entry).take(size), &mut file).map_err(corrupt)?;
        if copied != size {
            return Err(fail(PackageErrorKind::Corrupt(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{copied} of its {size} bytes"),
            ))));
        }
        file.flush().map_err(io_error(package, Some(&shown), "cannot write it"))?;
        extracted.files.push(key);
    }
    Ok(extracted)
}

/// Whether `parts` is in a host directory: `Some(true)` for the host binary
/// `host-<vsn>/bin/hotcode`, `Some(false)` for `host-<vsn>` or `host-<vsn>/bin`.
fn is_host_path(parts: &[&str]) -> Option<bool> {
    let vsn = parts.first()?.strip_prefix("host-")?;
    if check_name(NameKind::Vsn, vsn).is_err() {
        return None;
    }
    match parts[1..] {
        [] | ["bin"] => Some(false),
        ["bin", "hotcode"] => Some(true),
        _ => None,
    }
}

/// The components of an entry's path, checked: relative, plain, words. One leading `./`
/// and one trailing `/` (a directory's) are allowed.
fn plain_parts(path: &str) -> Result<Vec<&str>, PackageErrorKind> {
    if path.starts_with('/') {
        return Err(PackageErrorKind::Absolute);
    }
    let path = path.strip_prefix("./").unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut parts = Vec::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(PackageErrorKind::NotPlain(part.to_owned()));
        }
        check_name(NameKind::File, part).map_err(PackageErrorKind::BadName)?;
        parts.push(part);
    }
    Ok(parts)
}

/// Creates `into/<parts...>` one directory at a time (mode 0755), each either made here or
/// already a real directory (never a link: extraction never makes one).
fn make_dirs(into: &Path, parts: &[&str]) -> io::Result<()> {
    let mut dir = into.to_path_buf();
    for part in parts {
        dir.push(part);
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&dir)?.is_dir() {
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, "not a directory"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What an entry type is, for messages.
fn type_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Fifo => "a FIFO",
        tar::EntryType::GNUSparse => "a sparse file",
        tar::EntryType::GNULongLink => "a GNU long-link record",
        tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {
            "a PAX extended header (not taken: a package needs none)"
        }
        tar::EntryType::Regular => "a regular file whose name ends with '/'",
        tar::EntryType::Directory => "a directory",
        _ => "an entry of another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package built header by header, so that it can hold what `write` never makes.
    fn raw_package(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            // Set the name bytes as they are: `append_data` would refuse `..` itself.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                header.set_link_name("/etc/passwd").expect("link name");
            }
            header.set_cksum();
            tar.append(&header, *data).expect("append");
        }
        tar.into_inner().expect("tar").finish().expect("gz")
    }

    fn extract_bytes(
        bytes: &[u8],
        limits: &Limits,
    ) -> (tempfile::TempDir, Result<Extracted, PackageError>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let result = extract(Path::new("p.tar.gz"), bytes, dir.path(), limits);
        (dir, result)
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(next) = stack.pop() {
            for item in fs::read_dir(&next).expect("read dir") {
                let path = item.expect("entry").path();
                let shown = path.strip_prefix(dir).expect("under").display().to_string();
                if path.is_dir() {
                    stack.push(path);
                    out.push(format!("{shown}/"));
                } else {
                    out.push(shown);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_written_package_extracts_to_the_same_files_and_is_deterministic() {
        let src = tempfile::tempdir().expect("temp dir");
        fs::write(src.path().join("m.so"), b"module bytes").expect("write");
        fs::write(src.path().join("a.rel"), b"{release, ...}.").expect("write");
        let long = format!("lib/{}-1", "a".repeat(200));
        let entries = [
            Entry::Dir("releases".into()),
            Entry::Dir("releases/1".into()),
            Entry::File { path: "releases/1/a.rel".into(), source: src.path().join("a.rel") },
            Entry::Dir("lib".into()),
            Entry::Dir(long.clone()),
            Entry::File { path: format!("{long}/m.so"), source: src.path().join("m.so") },
        ];
        let out = src.path().join("p.tar.gz");
        write(&out, &entries).expect("write package");
        let first = fs::read(&out).expect("read");
        write(&out, &entries).expect("write package again");
        assert_eq!(fs::read(&out).expect("read"), first, "the same files give the same bytes");
        let (dir, result) = extract_bytes(&first, &Limits::default());
        let extracted = result.expect("extracts");
        assert_eq!(extracted.files, ["releases/1/a.rel".to_owned(), format!("{long}/m.so")]);
        assert_eq!(extracted.bytes, 12 + 15);
        assert_eq!(fs::read(dir.path().join(&long).join("m.so")).expect("read"), b"module bytes");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("releases/1/a.rel")).expect("meta").permissions();
        assert_eq!(mode.mode() & 0o022, 0, "nobody else may write an extracted file");
    }

    #[test]
    fn a_long_name_record_is_read_bounded_and_pax_headers_are_refused() {
        use tar::EntryType::{GNULongName, Regular, XHeader};
        // A long-name record bigger than any path: refused before its body is read.
        let mut huge =
            raw_package(&[(b"././@LongLink", GNULongName, &[b'a'; 5000]), (b"x", Regular, b"")]);
        let (_dir, result) = extract_bytes(&huge, &Limits::default());
        let err = result.expect_err("refused").to_string();
        assert!(err.contains("GNU long-name record") && err.contains("5000"), "{err}");
        // A PAX header: refused as an entry of its own type.
        huge = raw_package(&[(b"./PaxHeaders/x", XHeader, b"30 path=releases/1/a.rel\n")]);
        let (_dir, result) = extract_bytes(&huge, &Limits::default());
        let err = result.expect_err("refused").to_string();
        assert!(err.contains("PAX extended header"), "{err}");
    }

    #[test]
    fn hostile_entries_are_refused_naming_the_entry() {
        use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
        let cases: [(&[u8], tar::EntryType, &str); 14] = [
            (b"../x", Regular, "\"../x\": the path has a \"..\" component"),
            (b"lib/../../x", Regular, "the path has a \"..\" component"),
            (b"/etc/x", Regular, "\"/etc/x\": an absolute path"),
            (b"lib/a-1/m.so", Symlink, "a symbolic link; a package holds only regular files"),
            (b"lib/a-1/m.so", Link, "a hard link"),
            (b"lib/a-1/dev", Char, "a character device"),
            (b"lib/a-1/dev", Block, "a block device"),
            (b"lib/a-1/fifo", Fifo, "a FIFO"),
            (b"lib/.hidden/m.so", Regular, "file name \".hidden\" starts with '.'"),
            (b"lib/a\x01-1/m.so", Regular, "holds a control character"),
            (b"lib/a-1/\xff.so", Regular, "the path is not UTF-8"),
            (b"etc/passwd/x", Regular, "not part of a release package"),
            (b"lib/a-1/sub/m.so", Regular, "not part of a release package"),
            (b"lib/a-1/sub", Directory, "not part of a release package"),
        ];
        for (path, kind, expected) in cases {
            let bytes = raw_package(&[(path, kind, b"")]);
            let (dir, result) = extract_bytes(&bytes, &Limits::default());
            let message = result.expect_err("refused").to_string();
            assert!(message.starts_with("p.tar.gz: entry "), "{message}");
            assert!(message.contains(expected), "{:?}: {message}", String::from_utf8_lossy(path));
            assert!(listing(dir.path()).is_empty(), "{message}: wrote {:?}", listing(dir.path()));
        }
    }

    #[test]
    fn duplicates_and_limits_are_refused() {
        // As `tar -C root -czf p.tar.gz .` writes a package: the root, then `./` paths.
        let dotted = raw_package(&[
            (b"./", tar::EntryType::Directory, b""),
            (b"./lib/", tar::EntryType::Directory, b""),
            (b"./lib/a-1/m.so", tar::EntryType::Regular, b"m"),
        ]);
        let extracted = extract_bytes(&dotted, &Limits::default()).1.expect("extracts");
        assert_eq!(extracted.files, ["lib/a-1/m.so"]);
        let twice = raw_package(&[
            (b"lib/a-1/m.so", tar::EntryType::Regular, b"one"),
            (b"./lib/a-1/m.so", tar::EntryType::Regular, b"two"),
        ]);
        let (_dir, result) = extract_bytes(&twice, &Limits::default());
        let message = result.expect_err("refused").to_string();
        assert!(message.contains("entry \"./lib/a-1/m.so\": given twice"), "{message}");

        let limits = Limits { max_entries: 2, max_file_size: 4, max_total_size: 6 };
        let big = raw_package(&[(b"lib/a-1/m.so", tar::EntryType::Regular, b"12345")]);
        let (dir, result) = extract_bytes(&big, &limits);
        let message = result.expect_err("refused").to_string();
        assert!(message.contains("5 bytes, more than the 4"), "{message}");
        assert!(!dir.path().join("lib/a-1/m.so").exists(), "refused before it is written");
        let many = raw_package(&[
            (b"lib/a-1/a", tar::EntryType::Regular, b"1"),
            (b"lib/a-1/b", tar::EntryType::Regular, b"1"),
            (b"lib/a-1/c", tar::EntryType::Regular, b"1"),
        ]);
        let message = extract_bytes(&many, &limits).1.expect_err("refused").to_string();
        assert!(message.contains("entry \"lib/a-1/c\": more than 2 entries"), "{message}");
        let much = raw_package(&[
            (b"lib/a-1/a", tar::EntryType::Regular, b"1234"),
            (b"lib/a-1/b", tar::EntryType::Regular, b"1234"),
        ]);
        let message = extract_bytes(&much, &limits).1.expect_err("refused").to_string();
        assert!(message.contains("add up to more than 6 bytes"), "{message}");
        let message = extract_bytes(b"not a package", &limits).1.expect_err("refused").to_string();
        assert!(message.starts_with("p.tar.gz: not a readable .tar.gz"), "{message}");
    }
}
