//! Bundles on removable media: one file, or parts that each fit a FAT32 stick or an ISO volume,
//! read in place.
//!
//! A split bundle (`bundler build --part-size`) is the same archive cut into byte ranges:
//! part `.000` holds `bundle.json` and its signature, parts `.001`, `.002`, … the rest, each listed
//! with size and sha256 in the signed manifest. So `cat OUT.0* > OUT` gives the one-file bundle,
//! and a reader checks the signature from part 000 before it looks at any other part.
//!
//! Reading never joins the parts into a copy and never writes next to them (DVDs, ISO images and
//! write-protected sticks are read-only): [`MediaReader`] reads the part files in order. Every part
//! must be present with its size before one payload byte is read ([`open`]); a damaged part is
//! found by the entry digests as they stream, and named by hashing the parts the bad entry lies in
//! ([`blame`]), so a healthy read costs no second hash.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::Digest;
use crate::digest::digest_file;
use crate::manifest::{Manifest, Parts};
use crate::reader::{BundleError, BundleReader};
use crate::signature::TrustedKeys;
use crate::signature::Verified;

/// The largest file FAT32 holds (4 GiB - 1 byte); also the largest ISO 9660 file extent.
pub const FAT32_MAX_FILE: u64 = (4 << 30) - 1;

/// Parts are numbered with three digits: `.001` … `.999`.
pub const MAX_PARTS: usize = 999;

/// The file name of part `index` of the bundle `base` (`base.000`, `base.001`, …).
#[must_use]
pub fn part_name(base: &str, index: usize) -> String {
    format!("{base}.{index:03}")
}

/// Parse a size: a number of bytes, or with `K`, `M`, `G`, `T` (powers of 1024; `KiB`, `MiB`, …
/// are accepted too). `4095M` is the largest round size that fits FAT32.
///
/// # Errors
/// A text that is not such a size, or zero.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use K, M, G or T, powers of 1024; e.g. 4095M for FAT32)"
            ));
        }
    };
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a size (e.g. 4095M)"))?;
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n).ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes == 0 {
        return Err(format!("`{text}`: a size must be larger than 0"));
    }
    Ok(bytes)
}

/// One file the archive is read from: a byte range of the logical bundle.
#[derive(Debug, Clone)]
pub struct PartFile {
    /// The part's name (as the manifest lists it; for part 000, the file name given).
    pub name: String,
    /// Where it was found.
    pub path: PathBuf,
    /// Offset of its first byte in the logical bundle.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// sha256 the manifest lists (none for part 000, which the signature covers).
    pub sha256: Option<Digest>,
}

/// Reads the parts of a bundle (or its one file) in order, without copying or writing.
pub struct MediaReader {
    files: Vec<PartFile>,
    index: usize,
    current: Option<BufReader<File>>,
    left: u64,
}

impl MediaReader {
    fn first(path: &Path) -> io::Result<(Self, u64)> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let part = PartFile { name, path: path.to_path_buf(), start: 0, size, sha256: None };
        let reader =
            Self { files: vec![part], index: 0, current: Some(BufReader::with_capacity(1 << 20, file)), left: size };
        Ok((reader, size))
    }

    /// The files read, in order.
    #[must_use]
    pub fn files(&self) -> &[PartFile] {
        &self.files
    }

    /// More than one file: a split bundle read from its parts.
    #[must_use]
    pub fn is_split(&self) -> bool {
        self.files.len() > 1
    }
}

impl Read for MediaReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.left > 0
                && let Some(cur) = self.current.as_mut()
            {
                let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
                let n = cur.read(&mut buf[..want])?;
                if n == 0 {
                    // Sizes were checked when the parts were found: the file shrank since.
                    let part = &self.files[self.index];
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "part {} ended {} bytes early (changed or unplugged while read?)",
                            part.name, self.left
                        ),
                    ));
                }
                self.left -= n as u64;
                return Ok(n);
            }
            // This part is done: on to the next, or the end of the bundle.
            if self.index + 1 >= self.files.len() {
                // Past the last part: end of input (the one-file case reads to the file's end).
                if let Some(cur) = self.current.as_mut()
                    && self.files.len() == 1
                {
                    return cur.read(buf);
                }
                return Ok(0);
            }
            self.index += 1;
            let part = &self.files[self.index];
            let file = File::open(&part.path).map_err(|e| {
                io::Error::new(e.kind(), format!("opening part {} ({}): {e}", part.name, part.path.display()))
            })?;
            self.current = Some(BufReader::with_capacity(1 << 20, file));
            self.left = part.size;
        }
    }
}

/// Read `len` bytes at `offset` of the logical bundle made of `files` (one file or its parts):
/// how a verified entry is read again in place, without reading what comes before it.
///
/// # Errors
/// An offset outside the files; open or seek failures.
pub fn read_range(files: &[PartFile], offset: u64, len: u64) -> io::Result<RangeReader> {
    let end = offset.checked_add(len).ok_or_else(|| io::Error::other("range overflows"))?;
    let total = files.last().map_or(0, |f| f.start + f.size);
    if end > total {
        return Err(io::Error::other(format!("bytes {offset}..{end} are past the end of the bundle ({total} bytes)")));
    }
    Ok(RangeReader { files: files.to_vec(), pos: offset, end, current: None })
}

/// A byte range of a bundle, read across part boundaries ([`read_range`]).
pub struct RangeReader {
    files: Vec<PartFile>,
    pos: u64,
    end: u64,
    current: Option<(usize, File)>,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::{Seek, SeekFrom};
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let index = self
            .files
            .iter()
            .position(|f| f.start <= self.pos && self.pos < f.start + f.size)
            .ok_or_else(|| io::Error::other(format!("byte {} is in no part", self.pos)))?;
        if self.current.as_ref().is_none_or(|(i, _)| *i != index) {
            let part = &self.files[index];
            let mut file = File::open(&part.path).map_err(|e| {
                io::Error::new(e.kind(), format!("opening part {} ({}): {e}", part.name, part.path.display()))
            })?;
            file.seek(SeekFrom::Start(self.pos - part.start))?;
            self.current = Some((index, file));
        }
        let part = &self.files[index];
        let room = (part.start + part.size).min(self.end) - self.pos;
        let want = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
        let (_, file) = self.current.as_mut().expect("opened above");
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("part {} is shorter than listed", part.name),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A part that is not where it should be, or not of its size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MissingPart {
    /// Part name.
    pub name: String,
    /// Size the manifest lists.
    pub size: u64,
    /// A file of that name found with another size (a copy cut short, or another build's part).
    pub found: Option<(PathBuf, u64)>,
    /// The volume that holds it, from the set's `VOLUMES.json` (written by `bundler iso`).
    pub volume: Option<String>,
}

/// Open a bundle from its file or its first part and check the signature; for a split bundle,
/// check that every part is present with its size (in the first part's directory or one of
/// `media`) before anything else is read.
///
/// A file given as `OUT` that does not exist while `OUT.000` does is read as `OUT.000`.
///
/// # Errors
/// Unreadable first file, structural or signature problems, missing parts.
pub fn open(path: &Path, media: &[PathBuf], keys: &TrustedKeys) -> Result<BundleReader<MediaReader>, BundleError> {
    let path = first_part(path);
    let (reader, len) = MediaReader::first(&path).map_err(|source| BundleError::Read { offset: 0, source })?;
    let mut reader = BundleReader::open(reader, Some(len), keys).map_err(|e| not_first_part(&path, e))?;
    attach(&mut reader, &path, media)?;
    Ok(reader)
}

/// Read the manifest without checking the signature (`bundler inspect` without a key), and the
/// parts' locations. Never use this to decide whether to install.
///
/// # Errors
/// As [`open`], minus the signature.
pub fn open_unverified(path: &Path, media: &[PathBuf]) -> Result<(Manifest, Vec<PartFile>), BundleError> {
    let path = first_part(path);
    let (reader, len) = MediaReader::first(&path).map_err(|source| BundleError::Read { offset: 0, source })?;
    let mut files = reader.files().to_vec();
    let (manifest, _) =
        crate::reader::read_unverified_manifest(reader, Some(len)).map_err(|e| not_first_part(&path, e))?;
    if let Some(parts) = &manifest.parts
        && header_only(len, parts)
    {
        files.extend(locate(&path, len, parts, media)?);
    }
    Ok((manifest, files))
}

/// Verify a whole bundle (one file or its parts): signature, then every entry.
///
/// # Errors
/// The first problem found.
pub fn verify(path: &Path, media: &[PathBuf], keys: &TrustedKeys) -> Result<(Manifest, Verified), BundleError> {
    let reader = open(path, media, keys)?;
    let signer = reader.signer().cloned().expect("open() sets the signer");
    Ok((reader.finish()?, signer))
}

fn first_part(path: &Path) -> PathBuf {
    let zero = PathBuf::from(format!("{}.000", path.display()));
    if !path.exists() && zero.exists() { zero } else { path.to_path_buf() }
}

/// Part 001 (or later) given instead of part 000 is not a tar file: say which file to give.
fn not_first_part(path: &Path, err: BundleError) -> BundleError {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match (&err, name.rsplit_once('.')) {
        // A later part starts inside an entry (not a tar header) or at one (not `bundle.json`).
        (BundleError::NotATar { .. } | BundleError::Unsigned { index: 0, .. }, Some((base, n)))
            if n.len() == 3 && n != "000" && n.parse::<u16>().is_ok() =>
        {
            BundleError::NotFirstPart { given: name.clone(), first: part_name(base, 0) }
        }
        _ => err,
    }
}

/// Part 000 holds only the header; a joined file (`cat OUT.0* > OUT`) holds everything and is
/// read as one file.
fn header_only(len: u64, parts: &Parts) -> bool {
    // The header (two small entries) is far shorter than the rest; a joined file is longer.
    len < parts.parts.iter().map(|x| x.size).sum::<u64>()
}

fn attach(reader: &mut BundleReader<MediaReader>, path: &Path, media: &[PathBuf]) -> Result<(), BundleError> {
    let Some(parts) = reader.manifest().parts.clone() else { return Ok(()) };
    let len = reader.offset();
    // Part 000 is exactly the header: anything after the signature means a joined file.
    if reader.inner().files[0].size != len {
        return Ok(());
    }
    let found = locate(path, len, &parts, media)?;
    let total = found.last().map_or(len, |p| p.start + p.size);
    reader.inner_mut().files.extend(found.iter().cloned());
    reader.set_parts(found, total);
    Ok(())
}

/// Find every part: in the first part's directory, then in each of `media`, by the name the
/// manifest lists. All are checked before any is read; every missing one is reported at once.
fn locate(first: &Path, header_len: u64, parts: &Parts, media: &[PathBuf]) -> Result<Vec<PartFile>, BundleError> {
    let home = match first.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Absolute, so that "looked in" names a place the operator can find.
    let home = std::fs::canonicalize(&home).unwrap_or(home);
    let mut dirs = vec![home.clone()];
    dirs.extend(media.iter().filter(|m| **m != home).cloned());
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut start = header_len;
    for part in &parts.parts {
        let mut wrong_size = None;
        let hit = dirs.iter().map(|d| d.join(&part.name)).find(|p| match std::fs::metadata(p) {
            Ok(m) if m.is_file() && m.len() == part.size => true,
            Ok(m) if m.is_file() => {
                wrong_size.get_or_insert((p.clone(), m.len()));
                false
            }
            _ => false,
        });
        match hit {
            Some(p) => found.push(PartFile {
                name: part.name.clone(),
                path: p,
                start,
                size: part.size,
                sha256: Some(part.sha256),
            }),
            None => {
                missing.push(MissingPart { name: part.name.clone(), size: part.size, found: wrong_size, volume: None })
            }
        }
        start += part.size;
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let volumes = read_volumes(&home);
    for m in &mut missing {
        m.volume = volumes
            .iter()
            .find(|v| v.parts.contains(&m.name))
            .map(|v| format!("volume {} of {} (label {})", v.number, volumes.len(), v.label));
    }
    Err(BundleError::PartsMissing { missing, searched: dirs, total: parts.parts.len() })
}

/// One volume of a set written by `bundler iso` (the set's `VOLUMES.json`, beside part 000).
/// Not signed: it only helps the operator find a part; the parts themselves are checked.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// 1, 2, …
    pub number: usize,
    /// The ISO volume label.
    pub label: String,
    /// Part file names on it.
    pub parts: Vec<String>,
}

/// The set's volumes as `bundler iso` describes them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VolumeSet {
    /// The volumes, in order.
    pub volumes: Vec<Volume>,
}

/// File name of the volume list on the first volume.
pub const VOLUMES_FILE: &str = "VOLUMES.json";

fn read_volumes(dir: &Path) -> Vec<Volume> {
    let Ok(file) = File::open(dir.join(VOLUMES_FILE)) else { return Vec::new() };
    let mut text = String::new();
    if file.take(1 << 20).read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    serde_json::from_str::<VolumeSet>(&text).map(|s| s.volumes).unwrap_or_default()
}

/// Name the damaged part behind a content error found between bundle offsets `from` and `to`:
/// hash each listed part overlapping that range and return the first that does not match. The
/// parts before the range already passed (their entries matched), so this reads at most the few
/// parts the bad entry spans, and only on the error path.
#[must_use]
pub fn blame(parts: &[PartFile], from: u64, to: u64, err: BundleError) -> BundleError {
    for part in parts.iter().filter(|p| p.start < to.max(from + 1) && p.start + p.size > from) {
        let Some(expected) = part.sha256 else { continue };
        match digest_file(&part.path) {
            Ok((actual, _)) if actual != expected => {
                return BundleError::PartDamaged(Box::new(crate::reader::PartDamage {
                    part: part.name.clone(),
                    path: part.path.clone(),
                    expected,
                    actual,
                    found: err,
                }));
            }
            _ => {}
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(parse_size("4095M").unwrap(), 4095 << 20);
        assert_eq!(parse_size("4095M").unwrap(), 4_293_918_720);
        assert!(parse_size("4095M").unwrap() <= FAT32_MAX_FILE);
        assert_eq!(parse_size("4G").unwrap(), FAT32_MAX_FILE + 1);
        assert_eq!(parse_size("64K").unwrap(), 65_536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("4GB").is_err(), "decimal units are ambiguous and refused");
        assert!(parse_size("0").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn a_range_reads_across_part_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        let mut files = Vec::new();
        for (i, chunk) in data.chunks(30).enumerate() {
            let path = dir.path().join(part_name("b", i));
            std::fs::write(&path, chunk).unwrap();
            files.push(PartFile {
                name: part_name("b", i),
                path,
                start: i as u64 * 30,
                size: chunk.len() as u64,
                sha256: None,
            });
        }
        for (offset, len) in [(0, 100), (25, 10), (30, 30), (59, 2), (95, 5), (10, 0)] {
            let mut got = Vec::new();
            read_range(&files, offset, len).unwrap().read_to_end(&mut got).unwrap();
            assert_eq!(got, data[offset as usize..(offset + len) as usize], "{offset}+{len}");
        }
        assert!(read_range(&files, 90, 11).is_err());
    }

    #[test]
    fn part_names_sort_in_stream_order() {
        let names: Vec<String> = (0..12).map(|i| part_name("b.tar", i)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[10], "b.tar.010");
    }
}
