//! Reading the `zipped_artifacts` zip of a 0.4.6 form without trusting its headers: the entry
//! count a zip64 footer declares is checked before the archive is opened (the zip reader
//! reserves room for it), each entry's declared size is checked against what is left of
//! [`ZipLimits::max_unzipped_bytes`] before it is read, and then at most one byte more than
//! it declares is read, into a buffer that grows with the data (never sized from a header).
//! An entry whose data do not match its header (a bomb among them) is refused.

use std::io::Read;

use bytes::Bytes;

use crate::limits::ZipLimits;
use crate::paths::RelPath;
use crate::{Error, Result};

/// The signature of a zip64 end-of-central-directory record.
const ZIP64_END: &[u8; 4] = b"PK\x06\x06";

/// The files of a zip, refusing anything that is not a plain file at a relative path inside
/// the work dir, and anything past `limits`.
pub(super) fn unzip(content: &Bytes, limits: &ZipLimits) -> Result<Vec<(String, Bytes)>> {
    check_declared_entries(content, limits)?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(content.clone()))
        .map_err(|e| Error::invalid(format!("zipped_artifacts is not a valid zip file: {e}")))?;
    limits.check_entries(archive.len() as u64)?;
    let mut files = Vec::new();
    let mut unzipped = limits.bytes();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| {
            Error::invalid(format!("zipped_artifacts: entry {i} cannot be read: {e}"))
        })?;
        let name = entry.name().to_string();
        if entry.is_dir() {
            continue;
        }
        if entry.is_symlink() {
            return Err(Error::invalid(format!(
                "zipped_artifacts: {name:?} is a symbolic link; only files are accepted"
            )));
        }
        let path = RelPath::new(name.as_str())
            .map_err(|e| Error::invalid(format!("zipped_artifacts: {e}")))?;
        // The header's claim first: past the cap, nothing is read. Then at most one byte
        // more than it claims, so a bomb stops there.
        let declared = entry.size();
        unzipped.clone().charge(declared)?;
        let data = read_entry(&mut entry, declared, &name)?;
        if data.len() as u64 != declared {
            let actual = match data.len() as u64 {
                n if n > declared => "more".to_string(),
                n => n.to_string(),
            };
            return Err(Error::invalid(format!(
                "zipped_artifacts: {name:?} holds {actual} bytes but its header says {declared}"
            )));
        }
        unzipped.charge(declared)?;
        files.push((path.to_string(), Bytes::from(data)));
    }
    Ok(files)
}

/// Reads at most `declared + 1` bytes of an entry (one more shows that the header lies),
/// into a buffer that grows with the data.
fn read_entry(entry: &mut impl Read, declared: u64, name: &str) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    entry
        .take(declared.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| {
            Error::invalid(format!(
                "zipped_artifacts: {name:?} cannot be unzipped: {e}"
            ))
        })?;
    Ok(data)
}

/// Refuses a zip with a zip64 footer that declares more entries than the cap, before the zip
/// reader reserves room for them. Every candidate footer is checked, so a reader that picks
/// another one than this function would cannot be led past it.
fn check_declared_entries(content: &[u8], limits: &ZipLimits) -> Result<()> {
    let footers = content
        .windows(ZIP64_END.len())
        .enumerate()
        .filter(|(_, w)| *w == ZIP64_END)
        .filter_map(|(at, _)| content.get(at + 24..at + 40));
    for counts in footers {
        let (on_disk, total) = counts.split_at(8);
        for count in [on_disk, total] {
            let mut le = [0u8; 8];
            le.copy_from_slice(count);
            limits.check_entries(u64::from_le_bytes(le))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn small_zip(method: zip::CompressionMethod) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        w.start_file("manifest.json", options).unwrap();
        w.write_all(&[b'{'; 300]).unwrap();
        w.start_file("seeds/a.csv", options).unwrap();
        w.write_all(b"id\n1\n").unwrap();
        w.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn no_header_byte_makes_it_panic_or_pass_the_caps() {
        let limits = ZipLimits {
            max_entries: 10,
            max_unzipped_bytes: 4096,
        };
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            let zip = small_zip(method);
            // Every byte of the headers (not the stored data) set to a few telling values.
            for at in 0..zip.len() {
                for value in [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff] {
                    let mut lying = zip.clone();
                    lying[at] = value;
                    if let Ok(files) = unzip(&Bytes::from(lying), &limits) {
                        let total: usize = files.iter().map(|(_, b)| b.len()).sum();
                        assert!(files.len() <= 10 && total <= 4096, "byte {at} = {value}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_zip64_footer_declaring_too_many_entries_is_refused() {
        let mut zip = b"junk".to_vec();
        zip.extend_from_slice(ZIP64_END);
        zip.extend_from_slice(&[0; 20]);
        zip.extend_from_slice(&u64::MAX.to_le_bytes());
        zip.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = check_declared_entries(&zip, &ZipLimits::default()).unwrap_err();
        assert!(matches!(err, Error::TooMany { .. }), "{err:?}");
        // Cut short: nothing to read, nothing refused here (the zip reader refuses it).
        assert!(check_declared_entries(&zip[..20], &ZipLimits::default()).is_ok());
    }
}
