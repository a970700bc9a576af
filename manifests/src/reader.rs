//! The strict bundle reader, shared by `bundler verify`, `installer verify` and `installer apply`.
//!
//! It reads the tar stream itself, one 512-byte header at a time (using the `tar` crate only to
//! decode a header), because the reader is the security boundary and must be able to say:
//! - the signature of `bundle.json` is checked before one payload byte is read;
//! - every entry is the next one the manifest lists: same path, same size, a regular file;
//! - no size is trusted before it is checked against the manifest and against the bytes left in
//!   the file, so nothing is allocated or read from an unchecked size;
//! - every entry's sha256 is checked as it streams past; the caller sees the bytes once.

use std::io::{self, Read, Write};

use crate::digest::Hasher;
use crate::layout::{MANIFEST, MAX_MANIFEST_SIZE, MAX_SIGNATURE_SIZE, SIGNATURE};
use crate::manifest::{Entry, Manifest, ManifestError};
use crate::signature::{SignatureError, TrustedKeys, Verified};
use crate::{Diagnose, Digest, Exit};

const BLOCK: u64 = 512;

/// Why a bundle was rejected. Every variant names the entry and the evidence.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading the file failed.
    #[error("reading the bundle at byte {offset} failed: {source}")]
    Read {
        /// Where.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is empty.
    #[error("the bundle is empty (0 bytes)")]
    Empty,
    /// The first header is not a tar header.
    #[error("the file is not a bundle: {reason}")]
    NotATar {
        /// What was found.
        reason: String,
    },
    /// A header's checksum does not match.
    #[error("damaged tar header at byte {offset} (checksum mismatch)")]
    BadHeader {
        /// Where.
        offset: u64,
    },
    /// The file ends early.
    #[error("the bundle is truncated: it ends inside {what} at byte {offset}")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where.
        offset: u64,
    },
    /// The first entries are not bundle.json and its signature.
    #[error("the bundle is not signed: expected `{expected}` as entry {index}, found `{found}`")]
    Unsigned {
        /// Expected path.
        expected: &'static str,
        /// Found path.
        found: String,
        /// Position.
        index: usize,
    },
    /// A size is larger than a reader accepts.
    #[error("`{path}` declares {size} bytes, more than the {limit} bytes allowed")]
    TooLarge {
        /// Entry.
        path: String,
        /// Declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A size runs past the end of the file.
    #[error("`{path}` declares {size} bytes but only {left} bytes are left in the file")]
    PastEnd {
        /// Entry.
        path: String,
        /// Declared size.
        size: u64,
        /// Bytes left.
        left: u64,
    },
    /// The signature check failed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The manifest could not be parsed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest itself lists something unsafe.
    #[error("bundle.json lists an unsafe entry `{path}`: {reason}")]
    BadManifestEntry {
        /// Entry.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// An entry of a type other than a regular file.
    #[error("entry `{path}` is a {kind}; a bundle holds only regular files")]
    ForbiddenType {
        /// Entry.
        path: String,
        /// Type.
        kind: String,
    },
    /// An entry path that is absolute, has `..`, or is not UTF-8.
    #[error("entry `{path}` has an unsafe path")]
    UnsafePath {
        /// Entry.
        path: String,
    },
    /// An entry other than the one the manifest lists next.
    #[error(
        "entry {index} is `{found}`, but bundle.json lists `{expected}` there (entry added, removed, renamed or reordered)"
    )]
    UnexpectedEntry {
        /// Position.
        index: usize,
        /// Found.
        found: String,
        /// Expected.
        expected: String,
    },
    /// More entries than the manifest lists.
    #[error("entry `{path}` is not listed in bundle.json")]
    ExtraEntry {
        /// Entry.
        path: String,
    },
    /// Fewer entries than the manifest lists.
    #[error("the bundle ends before entry `{path}` that bundle.json lists")]
    MissingEntry {
        /// Entry.
        path: String,
    },
    /// Size differs from the manifest.
    #[error("entry `{path}` is {found} bytes, bundle.json says {expected}")]
    SizeMismatch {
        /// Entry.
        path: String,
        /// Found.
        found: u64,
        /// Expected.
        expected: u64,
    },
    /// Content differs from the manifest.
    #[error("entry `{path}` does not match bundle.json: sha256 is {actual}, expected {expected}")]
    DigestMismatch {
        /// Entry.
        path: String,
        /// Expected.
        expected: Digest,
        /// Actual.
        actual: Digest,
    },
    /// Non-zero bytes in the padding after an entry.
    #[error("non-zero padding after entry `{path}` at byte {offset}")]
    NonZeroPadding {
        /// Entry.
        path: String,
        /// Where.
        offset: u64,
    },
    /// Non-zero bytes after the end of the archive.
    #[error("unexpected data after the end of the archive at byte {offset}")]
    TrailingData {
        /// Where.
        offset: u64,
    },
    /// Parts of a split bundle are missing or of another size.
    #[error("{} of the {total} parts of this bundle {} missing or incomplete: {}", missing.len(), if missing.len() == 1 { "is" } else { "are" }, describe_missing(missing))]
    PartsMissing {
        /// What is missing.
        missing: Vec<crate::media::MissingPart>,
        /// Where they were looked for.
        searched: Vec<std::path::PathBuf>,
        /// How many parts the bundle has (besides part 000).
        total: usize,
    },
    /// A part's content differs from the signed part table (boxed: the evidence is large).
    #[error("part {} is damaged ({}): its sha256 is {}, the signed part table says {} (found while checking: {})", .0.part, .0.path.display(), .0.actual, .0.expected, .0.found)]
    PartDamaged(Box<PartDamage>),
    /// A later part was given instead of part 000.
    #[error("{given} is a later part of a split bundle; give its first part, {first}")]
    NotFirstPart {
        /// The file given.
        given: String,
        /// The file to give.
        first: String,
    },
    /// The caller's sink failed (e.g. Docker went away); the bundle itself may be fine.
    #[error("writing entry `{path}` failed: {source}")]
    Sink {
        /// Entry.
        path: String,
        /// The error.
        source: io::Error,
    },
}

impl Diagnose for BundleError {
    fn exit(&self) -> Exit {
        match self {
            BundleError::Signature(_) | BundleError::Unsigned { .. } => Exit::SignatureRejected,
            BundleError::PartsMissing { .. } | BundleError::NotFirstPart { .. } => Exit::BundleIncomplete,
            BundleError::Read { source, .. } | BundleError::Sink { source, .. } => crate::exit::io_exit(source),
            _ => Exit::BundleInvalid,
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            BundleError::Signature(SignatureError::UnknownKey { .. }) => {
                "the bundle was signed with a key this host does not trust: check that it comes from your vendor, \
                 and pass the vendor's public key with --key (compare its fingerprint with the one the vendor gave you)"
                    .into()
            }
            BundleError::Signature(_) | BundleError::Unsigned { .. } => {
                "do not install this file: it was not signed by your vendor or was changed after signing; \
                 ask the vendor for a fresh copy"
                    .into()
            }
            BundleError::Manifest(ManifestError::UnsupportedVersion { .. }) => {
                "this bundle needs a newer installer; ask the vendor for the installer that matches the bundle".into()
            }
            BundleError::Read { offset: 0, .. } => {
                "check the path and that the file is readable (is the USB stick or ISO still mounted?)".into()
            }
            BundleError::Read { .. } => {
                "the medium could not be read to the end; copy the bundle to local disk and run the command on that copy"
                    .into()
            }
            BundleError::Sink { .. } => return None,
            BundleError::PartsMissing { missing, searched, .. } => {
                let dirs: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
                let on: Vec<String> = missing
                    .iter()
                    .filter_map(|m| m.volume.as_ref().map(|v| format!("{} is on {v}", m.name)))
                    .collect();
                format!(
                    "{}every part must be readable before anything is installed; looked in {}. Copy the missing parts \
                     next to the first part, or mount the medium that holds them and add `--media DIR` for it \
                     (repeatable); a part of the wrong size is a copy cut short: copy it again",
                    if on.is_empty() { String::new() } else { format!("{}. ", on.join("; ")) },
                    dirs.join(", ")
                )
            }
            BundleError::PartDamaged(d) => format!(
                "copy {} again from the vendor's medium (or ask for a fresh copy of that part only); \
                 the other parts do not need to be copied again",
                d.part
            ),
            BundleError::NotFirstPart { first, .. } => format!("run the command on {first}; the other parts are found beside it"),
            BundleError::Empty | BundleError::NotATar { .. } => "check the path: this is not a bundle file".into(),
            _ => "the file was damaged or changed in transit (USB copy, download): copy it again from the original \
                  and compare its sha256 with the vendor's"
                .into(),
        })
    }
}

/// The evidence of a damaged part.
#[derive(Debug)]
pub struct PartDamage {
    /// Part name.
    pub part: String,
    /// Where it was read.
    pub path: std::path::PathBuf,
    /// Listed digest.
    pub expected: Digest,
    /// Digest of the file.
    pub actual: Digest,
    /// The error that led to it.
    pub found: BundleError,
}

fn describe_missing(missing: &[crate::media::MissingPart]) -> String {
    missing
        .iter()
        .map(|m| match &m.found {
            Some((path, size)) => format!("{} is {size} bytes at {}, expected {}", m.name, path.display(), m.size),
            None => format!("{} ({} bytes) not found", m.name, m.size),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

struct Current {
    index: usize,
    left: u64,
    padding: u64,
    hasher: Hasher,
}

/// A bundle being read: the manifest is trusted, entries are checked as they stream.
pub struct BundleReader<R> {
    inner: R,
    offset: u64,
    file_len: Option<u64>,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signature_text: String,
    signer: Option<Verified>,
    next: usize,
    current: Option<Current>,
    /// The parts after part 000 of a split bundle, to name a damaged one.
    parts: Vec<crate::media::PartFile>,
    /// Where the current entry's header started (the range a content error lies in).
    mark: u64,
    /// Where the current entry's content starts.
    data_start: u64,
}

struct Header {
    path: String,
    size: u64,
}

impl<R: Read> BundleReader<R> {
    /// Read `bundle.json` and its signature, and check the signature against `keys` before
    /// anything else is read. `file_len` (when known) lets the reader refuse a declared size that
    /// runs past the end of the file before reading it.
    ///
    /// # Errors
    /// Any structural problem, or a signature that is missing, bad or from an untrusted key.
    pub fn open(inner: R, file_len: Option<u64>, keys: &TrustedKeys) -> Result<Self, BundleError> {
        let mut reader = Self::open_unverified(inner, file_len)?;
        let signature = reader.signature_text.take().unwrap_or_default();
        let verified = keys.verify(&reader.reader.manifest_bytes, &signature)?;
        reader.reader.signature_text = signature;
        let manifest = Manifest::from_bytes(&reader.reader.manifest_bytes)?;
        check_manifest_entries(&manifest)?;
        reader.reader.manifest = manifest;
        reader.reader.signer = Some(verified);
        Ok(reader.reader)
    }

    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact bytes of `bundle.json`.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The exact text of `bundle.json.minisig` (so a release can be re-verified later).
    pub fn signature_text(&self) -> &str {
        &self.signature_text
    }

    /// Who signed (None only for [`read_unverified_manifest`]).
    pub fn signer(&self) -> Option<&Verified> {
        self.signer.as_ref()
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Offset in the bundle of the first content byte of the entry [`Self::next_entry`] returned
    /// last (to read it again later in place, e.g. with [`crate::media::read_range`]).
    pub fn entry_offset(&self) -> u64 {
        self.data_start
    }

    /// The underlying reader.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    pub(crate) fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The parts of a split bundle were found: the file now ends at `total`.
    pub(crate) fn set_parts(&mut self, parts: Vec<crate::media::PartFile>, total: u64) {
        self.parts = parts;
        self.file_len = Some(total);
    }

    /// Move to the next entry, first reading (and verifying) whatever is left of the current one.
    /// Returns `None` after the last entry the manifest lists, once the end of the archive and
    /// everything after it were checked.
    ///
    /// # Errors
    /// Any mismatch with the manifest.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, BundleError> {
        let result = self.next_entry_inner();
        result.map_err(|e| self.blame(e))
    }

    fn next_entry_inner(&mut self) -> Result<Option<Entry>, BundleError> {
        if self.current.is_some() {
            self.copy_entry_to(&mut io::sink())?;
        }
        self.mark = self.offset;
        let header = self.read_header("a tar header")?;
        let Some(header) = header else {
            if let Some(missing) = self.manifest.entries.get(self.next) {
                return Err(BundleError::MissingEntry { path: missing.path.clone() });
            }
            self.check_trailing()?;
            return Ok(None);
        };
        let Some(expected) = self.manifest.entries.get(self.next) else {
            return Err(BundleError::ExtraEntry { path: header.path });
        };
        if header.path != expected.path {
            return Err(BundleError::UnexpectedEntry {
                index: self.next + 2,
                found: header.path,
                expected: expected.path.clone(),
            });
        }
        if header.size != expected.size {
            return Err(BundleError::SizeMismatch { path: header.path, found: header.size, expected: expected.size });
        }
        self.check_fits(&header.path, header.size)?;
        self.data_start = self.offset;
        self.current =
            Some(Current { index: self.next, left: header.size, padding: padding(header.size), hasher: Hasher::new() });
        self.next += 1;
        Ok(Some(expected.clone()))
    }

    /// Read from the current entry. Returns 0 at its end, after its digest matched.
    ///
    /// # Errors
    /// Truncation or digest mismatch.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        let result = self.read_inner(buf);
        result.map_err(|e| self.blame(e))
    }

    /// A content error in a split bundle: name the damaged part (see [`crate::media::blame`]).
    fn blame(&self, err: BundleError) -> BundleError {
        match err {
            BundleError::PartDamaged(_) | BundleError::Read { .. } | BundleError::Sink { .. } => err,
            _ if self.parts.is_empty() => err,
            _ => crate::media::blame(&self.parts, self.mark, self.offset, err),
        }
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        let Some(cur) = self.current.as_mut() else { return Ok(0) };
        if cur.left == 0 {
            self.end_entry()?;
            return Ok(0);
        }
        let want = usize::try_from(cur.left).unwrap_or(usize::MAX).min(buf.len());
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(BundleError::Read { offset: self.offset, source }),
            }
        };
        if n == 0 {
            let path = self.manifest.entries[cur.index].path.clone();
            return Err(BundleError::Truncated { what: format!("entry `{path}`"), offset: self.offset });
        }
        cur.hasher.update(&buf[..n]);
        cur.left -= n as u64;
        self.offset += n as u64;
        if cur.left == 0 {
            self.end_entry()?;
        }
        Ok(n)
    }

    /// Copy the rest of the current entry to `sink`, verifying it.
    ///
    /// # Errors
    /// Bundle errors, or [`BundleError::Sink`] if the sink fails.
    pub fn copy_entry_to(&mut self, sink: &mut dyn Write) -> Result<u64, BundleError> {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let path = self.current.as_ref().map(|c| self.manifest.entries[c.index].path.clone());
            let n = self.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            sink.write_all(&buf[..n]).map_err(|source| BundleError::Sink { path: path.unwrap_or_default(), source })?;
            total += n as u64;
        }
    }

    /// Read every remaining entry and the end of the archive.
    ///
    /// # Errors
    /// The first problem found.
    pub fn finish(mut self) -> Result<Manifest, BundleError> {
        while self.next_entry()?.is_some() {}
        Ok(self.manifest)
    }

    fn end_entry(&mut self) -> Result<(), BundleError> {
        let Some(cur) = self.current.take() else { return Ok(()) };
        let entry = &self.manifest.entries[cur.index];
        let actual = cur.hasher.finish();
        if actual != entry.sha256 {
            return Err(BundleError::DigestMismatch { path: entry.path.clone(), expected: entry.sha256, actual });
        }
        let path = entry.path.clone();
        self.read_padding(cur.padding, &path)
    }

    /// Padding must be zeros: every byte of a bundle is either signed content or fixed.
    fn read_padding(&mut self, len: u64, path: &str) -> Result<(), BundleError> {
        let mut pad = [0u8; BLOCK as usize];
        let start = self.offset;
        let pad = &mut pad[..usize::try_from(len).unwrap_or(0)];
        self.read_exact(pad, &format!("the padding of `{path}`"))?;
        if let Some(pos) = pad.iter().position(|b| *b != 0) {
            return Err(BundleError::NonZeroPadding { path: path.to_string(), offset: start + pos as u64 });
        }
        Ok(())
    }

    fn check_fits(&self, path: &str, size: u64) -> Result<(), BundleError> {
        if let Some(len) = self.file_len {
            let left = len.saturating_sub(self.offset);
            if size.saturating_add(padding(size)) > left {
                return Err(BundleError::PastEnd { path: path.to_string(), size, left });
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), BundleError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(BundleError::Truncated { what: what.to_string(), offset: self.offset + filled as u64 });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(BundleError::Read { offset: self.offset + filled as u64, source }),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Read one header; `None` at the end-of-archive marker (two zero blocks).
    fn read_header(&mut self, what: &str) -> Result<Option<Header>, BundleError> {
        let start = self.offset;
        let mut block = [0u8; BLOCK as usize];
        self.read_exact(&mut block, what)?;
        if block.iter().all(|b| *b == 0) {
            self.read_exact(&mut block, "the end-of-archive marker")?;
            if block.iter().any(|b| *b != 0) {
                return Err(BundleError::BadHeader { offset: start + BLOCK });
            }
            return Ok(None);
        }
        let header = tar::Header::from_byte_slice(&block);
        let stored = header.cksum().map_err(|_| BundleError::BadHeader { offset: start })?;
        let computed: u32 =
            block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) }).sum();
        if stored != computed {
            return Err(BundleError::BadHeader { offset: start });
        }
        let raw_path = header.path_bytes();
        let path = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = match header.entry_type() {
            tar::EntryType::Regular => None,
            tar::EntryType::Symlink => Some("symbolic link"),
            tar::EntryType::Link => Some("hard link"),
            tar::EntryType::Char | tar::EntryType::Block => Some("device"),
            tar::EntryType::Fifo => Some("FIFO"),
            tar::EntryType::Directory => Some("directory"),
            tar::EntryType::GNULongName | tar::EntryType::GNULongLink => Some("GNU long-name record"),
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => Some("PAX extended header"),
            _ => Some("non-regular entry"),
        };
        if let Some(kind) = kind {
            return Err(BundleError::ForbiddenType { path, kind: kind.to_string() });
        }
        if std::str::from_utf8(&raw_path).is_err() || !safe_path(&path) {
            return Err(BundleError::UnsafePath { path });
        }
        let size = header.entry_size().map_err(|_| BundleError::BadHeader { offset: start })?;
        Ok(Some(Header { path, size }))
    }

    fn check_trailing(&mut self) -> Result<(), BundleError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = match self.inner.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(BundleError::Read { offset: self.offset, source }),
            };
            if n == 0 {
                return Ok(());
            }
            if let Some(pos) = buf[..n].iter().position(|b| *b != 0) {
                return Err(BundleError::TrailingData { offset: self.offset + pos as u64 });
            }
            self.offset += n as u64;
        }
    }

    /// Read a small leading entry (manifest or signature) whole, after checking its size.
    fn read_small(&mut self, expected: &'static str, index: usize, limit: u64) -> Result<Vec<u8>, BundleError> {
        let header = match self.read_header("the first tar header") {
            Err(BundleError::Truncated { offset: 0, .. }) => return Err(BundleError::Empty),
            Err(BundleError::Truncated { offset, .. }) if index == 0 => {
                return Err(BundleError::NotATar { reason: format!("only {offset} bytes, shorter than a tar header") });
            }
            Err(BundleError::BadHeader { offset: 0 }) => {
                return Err(BundleError::NotATar { reason: "the first 512 bytes are not a tar header".into() });
            }
            other => other?,
        };
        let Some(header) = header else {
            return Err(BundleError::Unsigned { expected, found: "the end of the archive".into(), index });
        };
        if header.path != expected {
            return Err(BundleError::Unsigned { expected, found: header.path, index });
        }
        if header.size > limit {
            return Err(BundleError::TooLarge { path: header.path, size: header.size, limit });
        }
        self.check_fits(&header.path, header.size)?;
        let mut data = vec![0u8; usize::try_from(header.size).unwrap_or(0)];
        self.read_exact(&mut data, expected)?;
        self.read_padding(padding(header.size), expected)?;
        Ok(data)
    }

    fn open_unverified(inner: R, file_len: Option<u64>) -> Result<Unverified<R>, BundleError> {
        let mut reader = BundleReader {
            inner,
            offset: 0,
            file_len,
            manifest: empty_manifest(),
            manifest_bytes: Vec::new(),
            signature_text: String::new(),
            signer: None,
            next: 0,
            current: None,
            parts: Vec::new(),
            mark: 0,
            data_start: 0,
        };
        reader.manifest_bytes = reader.read_small(MANIFEST, 0, MAX_MANIFEST_SIZE)?;
        let signature = reader.read_small(SIGNATURE, 1, MAX_SIGNATURE_SIZE)?;
        let signature_text = String::from_utf8(signature)
            .map_err(|_| SignatureError::MalformedSignature("the signature file is not UTF-8".into()))?;
        Ok(Unverified { reader, signature_text: Some(signature_text) })
    }
}

struct Unverified<R> {
    reader: BundleReader<R>,
    signature_text: Option<String>,
}

/// Read the manifest **without** checking the signature, for `bundler inspect` on a bundle whose
/// key is not at hand. Returns the manifest and the signature file's text. Never use this to
/// decide whether to install.
///
/// # Errors
/// Structural problems reading the first two entries, or a malformed manifest.
pub fn read_unverified_manifest<R: Read>(inner: R, file_len: Option<u64>) -> Result<(Manifest, String), BundleError> {
    let mut u = BundleReader::open_unverified(inner, file_len)?;
    let manifest = Manifest::from_bytes(&u.reader.manifest_bytes)?;
    Ok((manifest, u.signature_text.take().unwrap_or_default()))
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The manifest is signed, but a check of its own entry list keeps a signing mistake (or a
/// compromised build machine listing `../x`) from turning into a path escape later.
fn check_manifest_entries(manifest: &Manifest) -> Result<(), BundleError> {
    let mut seen = std::collections::HashSet::new();
    for e in &manifest.entries {
        if !safe_path(&e.path) {
            return Err(BundleError::BadManifestEntry { path: e.path.clone(), reason: "unsafe path" });
        }
        if e.path == MANIFEST || e.path == SIGNATURE {
            return Err(BundleError::BadManifestEntry { path: e.path.clone(), reason: "reserved name" });
        }
        if !seen.insert(e.path.as_str()) {
            return Err(BundleError::BadManifestEntry { path: e.path.clone(), reason: "listed twice" });
        }
    }
    Ok(())
}

/// A manifest with every field empty (a placeholder until the real one is read; format tests).
pub fn empty_manifest() -> Manifest {
    Manifest {
        schema_version: crate::SCHEMA_VERSION,
        product: String::new(),
        version: String::new(),
        release: 0,
        channel: String::new(),
        created: 0,
        expires: None,
        platform: String::new(),
        key_id: String::new(),
        project: String::new(),
        entries: Vec::new(),
        images: Vec::new(),
        stack: serde_json::json!({"services": {}}),
        migrations: Vec::new(),
        backup: None,
        snapshot: None,
        templates: std::collections::BTreeMap::new(),
        swarm: std::collections::BTreeMap::new(),
        variables: std::collections::BTreeMap::new(),
        health: crate::HealthSettings { timeout_ms: 0 },
        requires: crate::Requirements { image_bytes: 0, docker_api_version: String::new() },
        key_rotation: None,
        parts: None,
    }
}
