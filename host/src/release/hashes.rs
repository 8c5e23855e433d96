//! The integrity record of a release: `releases/<vsn>/modules.sha256`.
//!
//! `cargo xtask dist` writes, for every module file a release ships, its SHA-256 and its
//! path relative to the release root, in the format of `sha256sum` (`<hex>  <path>`), so an
//! operator can check a root with standard tools (`cd ROOT && sha256sum -c
//! releases/B/modules.sha256`). The release handler refuses to load a module file whose
//! digest differs from the record.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::{ParseError, ParseErrorKind};
use super::names::check_relative;
use super::terms::{Pos, read_text};

/// The file name of the record, in each `releases/<vsn>/` directory.
pub const HASHES_FILE: &str = "modules.sha256";

/// Module file digests by root-relative path (`lib/<app>-<vsn>/<module>.so`).
pub type ModuleHashes = BTreeMap<String, [u8; 32]>;

/// Parses a record; every malformed line is an error naming its line.
pub fn parse_hashes(path: &Path, text: &str) -> Result<ModuleHashes, ParseError> {
    let mut hashes = ModuleHashes::new();
    for (i, line) in text.lines().enumerate() {
        let at = |column: usize, what: &str| {
            ParseError::at(
                path,
                Pos::new(i as u32 + 1, column as u32 + 1),
                ParseErrorKind::Invalid(what.to_owned()),
            )
        };
        if line.trim().is_empty() {
            continue;
        }
        let (digest, file) = match line.split_once("  ") {
            Some((d, f)) if !f.is_empty() => (d, f),
            _ => return Err(at(0, "expected `<64 hex digits>  <path>`")),
        };
        let mut bytes = [0u8; 32];
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(at(0, "expected 64 hexadecimal digits"));
        }
        for (k, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digest[2 * k..2 * k + 2], 16)
                .map_err(|_| at(2 * k, "bad hexadecimal digit"))?;
        }
        check_relative(file).map_err(|why| at(66, &why))?;
        if hashes.insert(file.to_owned(), bytes).is_some() {
            return Err(at(66, &format!("{file} is listed twice")));
        }
    }
    Ok(hashes)
}

/// Reads a record.
pub fn read_hashes(path: &Path) -> Result<ModuleHashes, ParseError> {
    let text = read_text(path)?;
    parse_hashes(path, &text)
}

/// Renders a record in `sha256sum` format, sorted by path.
pub fn render_hashes(hashes: &ModuleHashes) -> String {
    hashes
        .iter()
        .map(|(file, d)| {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex}  {file}\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_bad_lines_with_positions() {
        let mut h = ModuleHashes::new();
        h.insert("lib/a-1/m.so".into(), [0xab; 32]);
        h.insert("lib/a-1/n.so".into(), [0x01; 32]);
        let text = render_hashes(&h);
        assert!(text.starts_with(&format!("{}  lib/a-1/m.so\n", "ab".repeat(32))));
        assert_eq!(parse_hashes(Path::new("x"), &text).unwrap(), h);
        let err = parse_hashes(Path::new("r/modules.sha256"), "zz  lib/a.so\n").unwrap_err();
        assert!(err.to_string().starts_with("r/modules.sha256:1:1:"), "{err}");
        let dup = format!("{}  a\n{}  a\n", "00".repeat(32), "11".repeat(32));
        assert!(parse_hashes(Path::new("x"), &dup).unwrap_err().to_string().contains("twice"));
    }
}
