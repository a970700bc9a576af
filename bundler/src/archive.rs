//! The deterministic tar writer: ustar headers built by hand (mode 0644, uid/gid 0, no user
//! names, mtime = the manifest's `created`), entries in the order the manifest lists them, each
//! hashed as it is copied so that a changed cache file cannot slip into a signed bundle.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use manifests::Entry;
use manifests::digest::HashingReader;

/// Where an entry's bytes come from.
pub enum Source {
    /// In memory (manifest, signature, index).
    Bytes(Vec<u8>),
    /// A file on disk (stack files, cached blobs): hashed again as it is copied.
    File(PathBuf),
    /// A blob this run downloaded into the cache, its digest checked as it arrived: copied
    /// without a second hash (its length is still checked).
    Fetched(PathBuf),
}

/// A write failure, naming the entry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Writing the output failed (disk full lands here).
    #[error("writing entry `{path}` to the bundle failed: {source}")]
    Write {
        /// Entry.
        path: String,
        /// Error.
        source: io::Error,
    },
    /// Reading a source failed.
    #[error("reading {file} for entry `{path}` failed: {source}")]
    Read {
        /// Entry.
        path: String,
        /// Source file.
        file: PathBuf,
        /// Error.
        source: io::Error,
    },
    /// The source changed since it was hashed.
    #[error("{file} changed while the bundle was written (entry `{path}`): expected {expected}")]
    Changed {
        /// Entry.
        path: String,
        /// Source file.
        file: PathBuf,
        /// Expected digest.
        expected: manifests::Digest,
    },
}

/// Write the entries in order into `out`; returns `out` after the end-of-archive marker.
///
/// # Errors
/// Write failures, unreadable or changed sources.
pub fn write_archive<W: Write>(
    out: W,
    mtime: u64,
    entries: &[(Entry, Source)],
    progress: &dyn Fn(u64),
) -> Result<W, ArchiveError> {
    let mut builder = tar::Builder::new(out);
    for (entry, source) in entries {
        let write_err = |source| ArchiveError::Write { path: entry.path.clone(), source };
        let mut header = tar::Header::new_ustar();
        header.set_path(&entry.path).map_err(write_err)?;
        header.set_size(entry.size);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        match source {
            Source::Bytes(b) => {
                builder.append(&header, b.as_slice()).map_err(write_err)?;
            }
            Source::Fetched(file) | Source::File(file) => {
                let read_err = |source| ArchiveError::Read { path: entry.path.clone(), file: file.clone(), source };
                let changed =
                    || ArchiveError::Changed { path: entry.path.clone(), file: file.clone(), expected: entry.sha256 };
                let f = std::fs::File::open(file).map_err(read_err)?;
                let body = io::BufReader::with_capacity(1 << 20, f).take(entry.size);
                // tar's append copies and pads; a read error surfaces as an io::Error there.
                if matches!(source, Source::Fetched(_)) {
                    if std::fs::metadata(file).map_err(read_err)?.len() != entry.size {
                        return Err(changed());
                    }
                    builder.append(&header, body).map_err(write_err)?;
                } else {
                    let mut reader = HashingReader::new(body);
                    builder.append(&header, &mut reader).map_err(write_err)?;
                    if reader.finish() != (entry.sha256, entry.size) {
                        return Err(changed());
                    }
                }
            }
        }
        progress(entry.size);
    }
    builder.into_inner().map_err(|source| ArchiveError::Write { path: "end-of-archive marker".into(), source })
}
