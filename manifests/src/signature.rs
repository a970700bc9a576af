//! Ed25519 signatures in minisign's format (prehashed `ED` mode), so that an operator can
//! cross-check a bundle with the stock `minisign -Vm bundle.json -p key.pub` if they wish.
//!
//! Formats (all base64 standard with padding, integers little-endian):
//! - public key: `untrusted comment: ...\n` + base64(`Ed` || key_id[8] || pk[32])
//! - secret key (unencrypted): base64(`Ed` || kdf `\0\0` || `B2` || salt[32] || ops u64 || mem u64
//!   || key_id[8] || sk[64] || blake2b-256 checksum[32])
//! - signature: base64(`ED` || key_id[8] || sig[64]) over BLAKE2b-512(data), then a trusted comment
//!   and a global signature over sig || comment.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::Digest as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// An 8-byte minisign key id, shown as 16 uppercase hex digits of its little-endian u64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}
impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What can go wrong with keys and signatures.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each field is named in the message")]
pub enum SignatureError {
    /// A key file could not be parsed.
    #[error("{path} is not a minisign {kind} key: {reason}")]
    MalformedKey { path: PathBuf, kind: &'static str, reason: String },
    /// The signature file could not be parsed.
    #[error("the signature of bundle.json is malformed: {0}")]
    MalformedSignature(String),
    /// The bundle was signed by a key that is not in the trusted set.
    #[error("bundle.json is signed by key {signed_by}, which is not trusted (trusted: {trusted})")]
    UnknownKey { signed_by: KeyId, trusted: String },
    /// The signature does not match the data.
    #[error("the signature of bundle.json by key {0} does not match its content")]
    BadSignature(KeyId),
    /// The trusted comment was changed after signing.
    #[error("the trusted comment of the signature by key {0} was changed after signing")]
    BadGlobalSignature(KeyId),
    /// Only prehashed (`ED`) signatures are accepted.
    #[error("the signature uses minisign's legacy (non-prehashed) mode, which is not accepted")]
    LegacySignature,
}

/// A secret signing key with its id.
pub struct SecretKey {
    key_id: KeyId,
    signing: SigningKey,
}

/// A public key with its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key id.
    pub key_id: KeyId,
    verifying: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id)
    }
}

impl SecretKey {
    /// A fresh random key pair from the OS's random source.
    ///
    /// # Panics
    /// If the OS random source fails (nothing sensible can continue then).
    #[must_use]
    pub fn generate() -> Self {
        use getrandom::rand_core::UnwrapErr;
        let signing = SigningKey::generate(&mut UnwrapErr(getrandom::SysRng));
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the OS random source failed");
        Self { key_id: KeyId(id), signing }
    }

    /// The key id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The matching public key.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey { key_id: self.key_id, verifying: self.signing.verifying_key() }
    }

    /// The unencrypted minisign secret key file.
    #[must_use]
    pub fn to_file_string(&self) -> String {
        let mut keynum = Vec::with_capacity(104);
        keynum.extend_from_slice(&self.key_id.0);
        keynum.extend_from_slice(&self.signing.to_bytes());
        keynum.extend_from_slice(self.signing.verifying_key().as_bytes());
        let checksum = secret_checksum(&self.key_id, &keynum[8..72]);
        let mut raw = Vec::with_capacity(158);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&[0, 0]);
        raw.extend_from_slice(b"B2");
        raw.extend_from_slice(&[0u8; 32]);
        raw.extend_from_slice(&0u64.to_le_bytes());
        raw.extend_from_slice(&0u64.to_le_bytes());
        raw.extend_from_slice(&keynum);
        raw.extend_from_slice(&checksum);
        format!(
            "untrusted comment: bundler secret key {} (unencrypted; keep it in your CI secret store)\n{}\n",
            self.key_id,
            B64.encode(raw)
        )
    }

    /// Parse an unencrypted minisign secret key file.
    ///
    /// # Errors
    /// If the text is not such a key, or its checksum does not match.
    pub fn from_file_string(text: &str, path: &Path) -> Result<Self, SignatureError> {
        let bad = |reason: &str| SignatureError::MalformedKey {
            path: path.to_path_buf(),
            kind: "secret",
            reason: reason.to_string(),
        };
        let line = text.lines().nth(1).ok_or_else(|| bad("expected a comment line and a base64 line"))?;
        let raw = B64.decode(line.trim()).map_err(|_| bad("the second line is not base64"))?;
        if raw.len() != 158 || &raw[0..2] != b"Ed" || &raw[4..6] != b"B2" {
            return Err(bad("unexpected length or algorithm"));
        }
        if raw[2..4] != [0, 0] {
            return Err(bad("the key is password-protected; create one with `bundler keygen` or `minisign -G -W`"));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[54..62]);
        let key_id = KeyId(id);
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&raw[62..94]);
        if secret_checksum(&key_id, &raw[62..126]) != raw[126..158] {
            return Err(bad("checksum mismatch (the file is damaged)"));
        }
        let signing = SigningKey::from_bytes(&seed);
        if signing.verifying_key().as_bytes() != &raw[94..126] {
            return Err(bad("the embedded public key does not match the secret key"));
        }
        Ok(Self { key_id, signing })
    }

    /// Sign `data` in minisign `ED` mode with a trusted comment (one line).
    #[must_use]
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> String {
        let trusted_comment = trusted_comment.replace(['\n', '\r'], " ");
        let prehash = blake2::Blake2b512::digest(data);
        let sig = self.signing.sign(&prehash);
        let mut raw = Vec::with_capacity(74);
        raw.extend_from_slice(b"ED");
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&sig.to_bytes());
        let mut global_input = sig.to_bytes().to_vec();
        global_input.extend_from_slice(trusted_comment.as_bytes());
        let global = self.signing.sign(&global_input);
        render_signature(self.key_id, &raw, &trusted_comment, &global.to_bytes())
    }
}

fn render_signature(key_id: KeyId, raw: &[u8], trusted_comment: &str, global: &[u8]) -> String {
    format!(
        "untrusted comment: signature from bundler key {key_id}\n{}\ntrusted comment: {trusted_comment}\n{}\n",
        B64.encode(raw),
        B64.encode(global)
    )
}

fn secret_checksum(key_id: &KeyId, sk64: &[u8]) -> [u8; 32] {
    let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    h.update(b"Ed");
    h.update(key_id.0);
    h.update(sk64);
    h.finalize().into()
}

impl PublicKey {
    /// The minisign public key file.
    #[must_use]
    pub fn to_file_string(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(self.verifying.as_bytes());
        format!("untrusted comment: minisign public key {}\n{}\n", self.key_id, B64.encode(raw))
    }

    /// Parse a minisign public key: the file's text, or just its base64 line.
    ///
    /// # Errors
    /// If the text is not a minisign Ed25519 public key.
    pub fn from_file_string(text: &str, path: &Path) -> Result<Self, SignatureError> {
        let bad = |reason: &str| SignatureError::MalformedKey {
            path: path.to_path_buf(),
            kind: "public",
            reason: reason.to_string(),
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| bad("no key line found"))?;
        let raw = B64.decode(line).map_err(|_| bad("the key line is not base64"))?;
        if raw.len() != 42 || &raw[0..2] != b"Ed" {
            return Err(bad("unexpected length or algorithm"));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&raw[10..42]);
        let verifying = VerifyingKey::from_bytes(&pk).map_err(|_| bad("not a valid Ed25519 point"))?;
        Ok(Self { key_id: KeyId(id), verifying })
    }

    /// A short fingerprint for operators to compare out of band: the key id plus the first bytes
    /// of the sha256 of the public key.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let d = crate::Digest::of(self.verifying.as_bytes()).hex();
        format!("{} ({})", self.key_id, &d[..16])
    }
}

/// The keys an installer or verifier trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

/// The outcome of a good signature check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The key that signed.
    pub key_id: KeyId,
    /// The trusted comment.
    pub trusted_comment: String,
}

impl TrustedKeys {
    /// A set of keys.
    #[must_use]
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }
    /// Add a key.
    pub fn push(&mut self, key: PublicKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }
    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Check a minisign signature over `data` against the trusted keys.
    ///
    /// # Errors
    /// Malformed signature, unknown key, legacy mode, bad signature or bad trusted comment.
    pub fn verify(&self, data: &[u8], signature_file: &str) -> Result<Verified, SignatureError> {
        let bad = |r: &str| SignatureError::MalformedSignature(r.to_string());
        let mut lines = signature_file.lines();
        let first = lines.next().ok_or_else(|| bad("empty"))?;
        if !first.starts_with("untrusted comment:") {
            return Err(bad("the first line is not an untrusted comment"));
        }
        let sig_line = lines.next().ok_or_else(|| bad("no signature line"))?;
        let comment_line = lines.next().ok_or_else(|| bad("no trusted comment line"))?;
        let global_line = lines.next().ok_or_else(|| bad("no global signature line"))?;
        if lines.any(|l| !l.is_empty()) {
            return Err(bad("unexpected text after the global signature"));
        }
        let trusted_comment = comment_line
            .strip_prefix("trusted comment: ")
            .ok_or_else(|| bad("the third line is not a trusted comment"))?;
        let raw = B64.decode(sig_line.trim()).map_err(|_| bad("the signature line is not base64"))?;
        if raw.len() != 74 {
            return Err(bad("the signature line has the wrong length"));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let key_id = KeyId(id);
        let key = self.keys.iter().find(|k| k.key_id == key_id).ok_or_else(|| SignatureError::UnknownKey {
            signed_by: key_id,
            trusted: if self.keys.is_empty() {
                "none".into()
            } else {
                self.keys.iter().map(|k| k.key_id.to_string()).collect::<Vec<_>>().join(", ")
            },
        })?;
        match &raw[0..2] {
            b"ED" => {}
            b"Ed" => return Err(SignatureError::LegacySignature),
            _ => return Err(bad("unknown signature algorithm")),
        }
        let sig = Signature::from_slice(&raw[10..74]).map_err(|_| bad("invalid signature bytes"))?;
        let prehash = blake2::Blake2b512::digest(data);
        key.verifying.verify_strict(&prehash, &sig).map_err(|_| SignatureError::BadSignature(key_id))?;
        let global_raw = B64.decode(global_line.trim()).map_err(|_| bad("the global signature is not base64"))?;
        let global = Signature::from_slice(&global_raw).map_err(|_| bad("invalid global signature bytes"))?;
        let mut global_input = sig.to_bytes().to_vec();
        global_input.extend_from_slice(trusted_comment.as_bytes());
        key.verifying.verify_strict(&global_input, &global).map_err(|_| SignatureError::BadGlobalSignature(key_id))?;
        // minisign leaves the first line unsigned; a bundle's signature file must be exactly what
        // `bundler` writes, so that no byte of a bundle can change without being noticed.
        if render_signature(key_id, &raw, trusted_comment, &global_raw) != signature_file {
            return Err(bad("it is not in the exact form bundler writes (was the comment line edited?)"));
        }
        Ok(Verified { key_id, trusted_comment: trusted_comment.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_key_files_round_trip() {
        let sk = SecretKey::generate();
        let p = Path::new("k");
        let sk2 = SecretKey::from_file_string(&sk.to_file_string(), p).unwrap();
        let pk = PublicKey::from_file_string(&sk2.public_key().to_file_string(), p).unwrap();
        assert_eq!(pk, sk.public_key());
        let sig = sk2.sign(b"hello", "product:x release:1");
        let trusted = TrustedKeys::new(vec![pk]);
        let v = trusted.verify(b"hello", &sig).unwrap();
        assert_eq!(v.trusted_comment, "product:x release:1");
        assert!(matches!(trusted.verify(b"hellp", &sig), Err(SignatureError::BadSignature(_))));
        let forged = sig.replace("product:x release:1", "product:x release:9");
        assert!(matches!(trusted.verify(b"hello", &forged), Err(SignatureError::BadGlobalSignature(_))));
        let other = TrustedKeys::new(vec![SecretKey::generate().public_key()]);
        assert!(matches!(other.verify(b"hello", &sig), Err(SignatureError::UnknownKey { .. })));
    }

    #[test]
    fn damaged_secret_key_is_refused() {
        let sk = SecretKey::generate();
        let text = sk.to_file_string();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut raw = B64.decode(&lines[1]).unwrap();
        raw[70] ^= 1;
        lines[1] = B64.encode(raw);
        assert!(SecretKey::from_file_string(&lines.join("\n"), Path::new("k")).is_err());
    }
}
