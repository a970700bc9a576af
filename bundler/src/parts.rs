//! Writing a bundle as parts for removable media (`bundler build --part-size`).
//!
//! The archive after the signature does not depend on the manifest's bytes, and the manifest does
//! not depend on where the parts are cut: so the payload is written first, cut into files of at
//! most `part_size` bytes and hashed as it goes; the part table goes into the manifest; the
//! manifest is signed; and `bundle.json` + signature become part 000. Concatenated in name order
//! the parts are byte for byte the one-file bundle of the same manifest.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use manifests::digest::Hasher;
use manifests::media::{MAX_PARTS, part_name};
use manifests::{Part, Parts};
use tempfile::NamedTempFile;

/// One finished part, still under its temporary name.
pub struct Written {
    /// The temp file (renamed into place by [`persist`]).
    pub file: NamedTempFile,
    /// Name, size, sha256.
    pub part: Part,
}

/// A writer that cuts what it is given into part files `base.001`, `base.002`, … in `dir`.
pub struct PartWriter {
    dir: PathBuf,
    base: String,
    part_size: u64,
    current: Option<(BufWriter<NamedTempFile>, Hasher)>,
    done: Vec<Written>,
}

impl PartWriter {
    /// Parts of at most `part_size` bytes, named after `base`, written in `dir`.
    #[must_use]
    pub fn new(dir: &Path, base: &str, part_size: u64) -> Self {
        Self { dir: dir.to_path_buf(), base: base.to_string(), part_size, current: None, done: Vec::new() }
    }

    fn close(&mut self) -> io::Result<()> {
        let Some((writer, hasher)) = self.current.take() else { return Ok(()) };
        let file = writer.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.as_file().sync_all()?;
        let part =
            Part { name: part_name(&self.base, self.done.len() + 1), size: hasher.len(), sha256: hasher.finish() };
        self.done.push(Written { file, part });
        Ok(())
    }

    /// Close the last part; the parts in order.
    ///
    /// # Errors
    /// Flush or fsync failures.
    pub fn finish(mut self) -> io::Result<Vec<Written>> {
        self.close()?;
        Ok(self.done)
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_none() {
            if self.done.len() >= MAX_PARTS {
                return Err(io::Error::other(format!("more than {MAX_PARTS} parts: choose a larger --part-size")));
            }
            let file = tempfile::Builder::new().prefix(".bundle-part-").suffix(".partial").tempfile_in(&self.dir)?;
            self.current = Some((BufWriter::with_capacity(1 << 20, file), Hasher::new()));
        }
        let (writer, hasher) = self.current.as_mut().expect("opened above");
        let room = self.part_size - hasher.len();
        let n = writer.write(&buf[..usize::try_from(room).unwrap_or(usize::MAX).min(buf.len())])?;
        hasher.update(&buf[..n]);
        if hasher.len() == self.part_size {
            self.close()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.current.as_mut() {
            Some((w, _)) => w.flush(),
            None => Ok(()),
        }
    }
}

/// The signed header (part 000): the two first entries of the archive, without the
/// end-of-archive marker (the payload parts carry it).
///
/// # Errors
/// Never in practice (writes to memory).
pub fn header_bytes(mtime: u64, entries: &[(manifests::Entry, crate::archive::Source)]) -> io::Result<Vec<u8>> {
    let bytes = crate::archive::write_archive(Vec::new(), mtime, entries, &|_| {})
        .map_err(|e| io::Error::other(e.to_string()))?;
    // tar writes two zero blocks at the end; part 000 stops where the payload begins.
    Ok(bytes[..bytes.len() - 1024].to_vec())
}

/// The part table for the manifest.
#[must_use]
pub fn table(part_size: u64, written: &[Written]) -> Parts {
    Parts { part_size, parts: written.iter().map(|w| w.part.clone()).collect() }
}

/// Move the parts into place: 001… first, 000 last, so a set with a new part 000 is complete;
/// then remove parts of an earlier, longer build (`cat OUT.0*` would pick them up).
///
/// # Errors
/// Rename or removal failures.
pub fn persist(dir: &Path, base: &str, header: NamedTempFile, written: Vec<Written>) -> io::Result<Vec<PathBuf>> {
    let count = written.len();
    let mut paths = vec![dir.join(part_name(base, 0))];
    for w in written {
        let path = dir.join(&w.part.name);
        w.file.persist(&path).map_err(|e| e.error)?;
        paths.push(path);
    }
    header.persist(&paths[0]).map_err(|e| e.error)?;
    for n in count + 1..=MAX_PARTS {
        let stale = dir.join(part_name(base, n));
        match std::fs::remove_file(&stale) {
            Ok(()) => tracing::info!("removed {} left by an earlier build", stale.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(paths)
}
