//! Checks on the tar streams Docker's archive endpoint sends (`GET /containers/{id}/archive`).
//!
//! The daemon logs and skips a file it cannot read, and after a write error it leaves out the
//! end-of-archive trailer (shared/notes/backups.md §3), and tar readers accept a stream cut at a
//! header boundary. So every stream is walked here as it passes: the two zero blocks must end
//! it, and two digests come out of it: the stream's sha256 (what a backup file records for a
//! part) and a tree digest over each entry's name, mode, owner, size, mtime, type, link target
//! and content, which ignores how the daemon formatted the headers, so that a copy read back
//! from the engine proves it holds the same tree as the source.

use manifests::Digest;
use manifests::digest::Hasher;

const BLOCK: usize = 512;

/// What a finished stream held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// sha256 of the stream's bytes.
    pub sha256: Digest,
    /// The tree digest (see the module docs).
    pub tree: Digest,
    /// Bytes of the stream.
    pub bytes: u64,
    /// Entries (files, directories, links; PAX records counted with their entry).
    pub entries: u64,
}

/// Walks a tar stream fed in chunks of any size.
#[derive(Default)]
pub struct Inspector {
    stream: Hasher,
    tree: Hasher,
    header: Vec<u8>,
    /// Content bytes (then padding) still to come for the current entry.
    content_left: u64,
    padding_left: u64,
    zero_blocks: u32,
    entries: u64,
    error: Option<String>,
}

impl Inspector {
    /// A fresh inspector.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes seen so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.stream.len()
    }

    /// Feed the next chunk.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        self.stream.update(chunk);
        while !chunk.is_empty() && self.error.is_none() {
            if self.content_left > 0 {
                let n = usize::try_from(self.content_left).unwrap_or(usize::MAX).min(chunk.len());
                self.tree.update(&chunk[..n]);
                self.content_left -= n as u64;
                chunk = &chunk[n..];
            } else if self.padding_left > 0 {
                let n = usize::try_from(self.padding_left).unwrap_or(usize::MAX).min(chunk.len());
                self.padding_left -= n as u64;
                chunk = &chunk[n..];
            } else {
                let n = (BLOCK - self.header.len()).min(chunk.len());
                self.header.extend_from_slice(&chunk[..n]);
                chunk = &chunk[n..];
                if self.header.len() == BLOCK {
                    let block = std::mem::take(&mut self.header);
                    self.block(&block);
                }
            }
        }
    }

    fn block(&mut self, h: &[u8]) {
        if h.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            return;
        }
        if self.zero_blocks > 0 {
            self.error = Some(format!("an entry follows the end-of-archive marker at byte {}", self.stream.len()));
            return;
        }
        let stored: u32 =
            h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) }).sum();
        if octal(&h[148..156]) != Some(u64::from(stored)) {
            self.error = Some(format!("a damaged tar header (checksum) near byte {}", self.stream.len()));
            return;
        }
        let Some(size) = size_field(&h[124..136]) else {
            self.error = Some(format!("a tar header with an unreadable size near byte {}", self.stream.len()));
            return;
        };
        // Name, mode, uid, gid, size, mtime | type, link target | prefix: what the tree is.
        self.tree.update(&h[0..148]);
        self.tree.update(&h[156..257]);
        self.tree.update(&h[345..500]);
        self.entries += 1;
        self.content_left = size;
        self.padding_left = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    }

    /// The summary, if the stream was a whole archive.
    ///
    /// # Errors
    /// A damaged header, a stream that ends inside an entry or without the end-of-archive
    /// marker (two zero blocks): the daemon did not send the whole tree.
    pub fn finish(self) -> Result<Summary, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.content_left > 0 || self.padding_left > 0 || !self.header.is_empty() {
            return Err(format!("the archive ends inside an entry after {} bytes", self.stream.len()));
        }
        if self.zero_blocks < 2 {
            return Err(format!(
                "the archive has no end-of-archive marker after {} bytes (the engine stopped sending)",
                self.stream.len()
            ));
        }
        Ok(Summary {
            entries: self.entries,
            bytes: self.stream.len(),
            sha256: self.stream.finish(),
            tree: self.tree.finish(),
        })
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() { Some(0) } else { u64::from_str_radix(s, 8).ok() }
}

/// Octal, or GNU base-256 for sizes of 8 GiB and more.
fn size_field(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        Some(v)
    } else {
        octal(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_uid(999);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn inspect(bytes: &[u8], chunk: usize) -> Result<Summary, String> {
        let mut i = Inspector::new();
        for c in bytes.chunks(chunk) {
            i.feed(c);
        }
        i.finish()
    }

    #[test]
    fn a_whole_archive_passes_in_any_chunking_with_the_same_digests() {
        let a = archive(&[("v/a", b"hello"), ("v/b", &[7u8; 1500])]);
        let whole = inspect(&a, a.len()).unwrap();
        assert_eq!(whole.entries, 2);
        assert_eq!(whole.sha256, Digest::of(&a));
        for chunk in [1, 7, 511, 512, 513, 4096] {
            assert_eq!(inspect(&a, chunk).unwrap(), whole);
        }
    }

    #[test]
    fn a_cut_stream_or_a_missing_trailer_is_refused() {
        let a = archive(&[("v/a", b"hello")]);
        // At a header boundary, without the trailer: what tar readers accept.
        assert!(inspect(&a[..1024], 100).unwrap_err().contains("end-of-archive"));
        assert!(inspect(&a[..600], 100).unwrap_err().contains("inside an entry"));
    }

    #[test]
    fn content_and_owner_change_the_tree_digest() {
        let a = inspect(&archive(&[("v/a", b"hello")]), 64).unwrap();
        let b = inspect(&archive(&[("v/a", b"hellp")]), 64).unwrap();
        assert_ne!(a.tree, b.tree);
        let mut bytes = archive(&[("v/a", b"hello")]);
        bytes[100] ^= 1; // mode
        assert!(inspect(&bytes, 64).unwrap_err().contains("checksum"));
    }
}
