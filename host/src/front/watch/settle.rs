//! When a rebuilt library has settled: the file's fingerprint, the two looks a quiet period
//! apart, which filesystem events count as a change, and the ELF completeness check.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::EventKind;
use notify::event::{AccessKind, AccessMode};
use object::read::ReadCache;
use object::{Object, ObjectSection, ObjectSegment};

use crate::code::error::LoadErrorKind;

/// Raw events from the filesystem watch.
pub(super) type RawEvent = notify::Result<notify::Event>;

/// What identifies one written state of a file: any write moves the modification and
/// change times, and a replacement brings another inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

pub(super) fn fingerprint(path: &Path) -> io::Result<Fingerprint> {
    let m = std::fs::metadata(path)?;
    Ok(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

pub(super) fn io_kind(e: io::Error) -> LoadErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound => LoadErrorKind::NotFound,
        _ => LoadErrorKind::Io(e),
    }
}

/// One watched file and where it is in settling.
pub(super) struct Tracked {
    pub(super) module: String,
    pub(super) path: PathBuf,
    /// When the last event named the file, while it is waiting to settle.
    pub(super) dirty_since: Option<Instant>,
    /// The first of the two looks: what the file was, and when.
    pub(super) look: Option<(Fingerprint, Instant)>,
    /// The file last loaded or rejected: if it settles unchanged, there is nothing to do.
    pub(super) handled: Option<Fingerprint>,
}

impl Tracked {
    pub(super) fn touch(&mut self, now: Instant) {
        self.dirty_since = Some(now);
        self.look = None;
    }

    /// When this file should next be looked at, if it is waiting to settle.
    pub(super) fn due(&self, quiet: Duration) -> Option<Instant> {
        let last = self.dirty_since?;
        Some(match self.look {
            None => last + quiet,
            Some((_, at)) => at + quiet,
        })
    }
}

/// Whether an event of this kind may mean the file's content changed. Opening and reading
/// (the loader's own copy among them) do not.
pub(super) fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

pub(super) fn names_content_change(event: &RawEvent, path: &Path) -> bool {
    match event {
        Ok(e) => changes_content(&e.kind) && (e.need_rescan() || e.paths.iter().any(|p| p == path)),
        // An error may hide anything.
        Err(_) => true,
    }
}

/// Checks that `path` is a complete ELF shared object: an ELF header for this target, and
/// no segment, section or header table described past the end of the file.
pub(super) fn check_complete(path: &Path) -> Result<(), LoadErrorKind> {
    crate::code::loader::check_elf(path)?;
    let file = File::open(path).map_err(io_kind)?;
    let len = file.metadata().map_err(LoadErrorKind::Io)?.len();
    match described_len(&ReadCache::new(file)) {
        Ok(needed) if needed <= len => Ok(()),
        Ok(needed) => Err(LoadErrorKind::NotSharedObject(format!(
            "truncated: its headers describe {needed} bytes, the file has {len}"
        ))),
        Err(why) => Err(LoadErrorKind::NotSharedObject(format!("incomplete or malformed: {why}"))),
    }
}

/// How long the ELF file in `data` says it is: the end of its furthest segment or section.
/// Parsing also reads the program and section header tables, so a file cut inside them
/// fails here.
pub(super) fn described_len<'data, R: object::ReadRef<'data>>(
    data: R,
) -> Result<u64, object::Error> {
    let elf = object::File::parse(data)?;
    let segments = elf.segments().map(|s| s.file_range());
    let sections = elf.sections().filter_map(|s| s.file_range());
    Ok(segments
        .chain(sections)
        .map(|(offset, size)| offset.saturating_add(size))
        .max()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode};

    use super::*;

    #[test]
    fn a_cut_elf_file_describes_more_than_it_has() {
        // The test executable stands in for any linker output: whole, it describes no
        // byte past its end; cut anywhere, it does (or no longer parses).
        let exe = std::env::current_exe().expect("test executable");
        let bytes = std::fs::read(&exe).expect("read test executable");
        let whole = described_len(bytes.as_slice()).expect("parse");
        assert!(whole <= bytes.len() as u64);
        for cut in [bytes.len() - 1, bytes.len() / 2, 4096, 64] {
            let cut_bytes = &bytes[..cut];
            // A parse error is just as good: the cut file is refused either way.
            if let Ok(needed) = described_len(cut_bytes) {
                assert!(needed > cut as u64, "cut at {cut}: needs {needed}");
            }
        }
    }

    #[test]
    fn only_content_changes_count() {
        assert!(changes_content(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(changes_content(&EventKind::Create(notify::event::CreateKind::File)));
    }
}
