//! Reading `/proc/self/maps`: the only trustworthy answer to "is this library gone?".
//!
//! `dlclose` returning success does not mean the library left the address space: glibc
//! keeps an object mapped while a thread that registered a TLS destructor in it lives, or
//! while another object depends on it. Each load maps its own uniquely named copy, so the
//! copy's path identifies exactly one load, also once the copy's file has been unlinked
//! (as the loader does as soon as it is open): the kernel then shows the path followed by
//! ` (deleted)`, which is stripped here.

use std::io;
use std::path::{Path, PathBuf};

/// The file paths mapped into this process, one entry per distinct path (a deleted file
/// keeps its path without the kernel's ` (deleted)` suffix).
pub fn mapped_files() -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/maps")?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        if let Some(path) = path_of(line)
            && paths.last().map(|p| p.as_path()) != Some(path)
        {
            paths.push(path.to_path_buf());
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Whether `path` is mapped into this process right now.
pub fn is_mapped(path: &Path) -> io::Result<bool> {
    let text = std::fs::read_to_string("/proc/self/maps")?;
    Ok(text.lines().any(|line| path_of(line) == Some(path)))
}

/// How many mappings of files under `dir` this process has (distinct files).
pub fn mapped_files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(mapped_files()?.into_iter().filter(|p| p.starts_with(dir)).collect())
}

/// The pathname column of one maps line, if it names a file.
///
/// A line is `address perms offset dev inode [pathname]`; the pathname may contain spaces,
/// so it is everything after the fifth field, with leading padding removed.
fn path_of(line: &str) -> Option<&Path> {
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace)?;
        rest = &rest[end..];
    }
    let name = rest.trim_start();
    if !name.starts_with('/') {
        return None;
    }
    Some(Path::new(name.strip_suffix(" (deleted)").unwrap_or(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_with_spaces_and_deleted_suffix() {
        let line = "7f00-7f01 r-xp 00000000 08:01 1234    /tmp/a dir/x.so (deleted)";
        assert_eq!(path_of(line), Some(Path::new("/tmp/a dir/x.so")));
        let line = "7f00-7f01 r-xp 00000000 08:01 1234                       /usr/lib/libc.so.6";
        assert_eq!(path_of(line), Some(Path::new("/usr/lib/libc.so.6")));
        assert_eq!(path_of("7f00-7f01 rw-p 00000000 00:00 0 "), None);
        assert_eq!(path_of("7ffd-7ffe rw-p 00000000 00:00 0    [stack]"), None);
    }

    #[test]
    fn sees_our_own_executable() {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe link");
        assert!(is_mapped(&exe).expect("maps"));
        assert!(!is_mapped(Path::new("/definitely/not/mapped.so")).expect("maps"));
    }
}
