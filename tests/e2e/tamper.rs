//! Damaged and forged bundles are rejected with the entry named (issue 3). The bundle is a real
//! one, built by `bundler` from the local registry; verification is the shared reader of
//! `manifests`, which both `bundler verify` and `installer verify` call.

use std::process::Command;
use std::sync::OnceLock;

use e2e::{RawEntry, Workspace, bin, e2e_enabled, join_tar, run, split_tar};
use manifests::reader::BundleError;
use manifests::{Diagnose, Exit, PublicKey, TrustedKeys};
use proptest::prelude::*;

struct Fixture {
    ws: Workspace,
    bytes: Vec<u8>,
    keys: TrustedKeys,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ws = Workspace::new();
        let compose = ws.stack("s", &[]);
        let out = ws.path("good.tar");
        let r = ws.build(&compose, 1, &out, &[]);
        assert_eq!(r.code, 0, "{r:?}");
        let bytes = std::fs::read(&out).unwrap();
        let key = PublicKey::from_file_string(&std::fs::read_to_string(&ws.public).unwrap(), &ws.public).unwrap();
        Fixture { ws, bytes, keys: TrustedKeys::new(vec![key]) }
    })
}

fn verify(bytes: &[u8], keys: &TrustedKeys) -> Result<(), BundleError> {
    let reader = manifests::BundleReader::open(std::io::Cursor::new(bytes), Some(bytes.len() as u64), keys)?;
    reader.finish().map(|_| ())
}

fn rejected(bytes: &[u8], exit: Exit, needle: &str) {
    let f = fixture();
    match verify(bytes, &f.keys) {
        Ok(()) => panic!("accepted a bad bundle (expected `{needle}`)"),
        Err(e) => {
            assert_eq!(e.exit(), exit, "{e}");
            assert!(e.to_string().contains(needle), "`{e}` does not name `{needle}`");
            assert!(e.hint().is_some(), "no hint for `{e}`");
        }
    }
}

fn offset_of(entries: &[RawEntry], index: usize) -> usize {
    entries[..index].iter().map(|e| 512 + e.data.len().div_ceil(512) * 512).sum()
}

#[test]
fn the_good_bundle_verifies() {
    if !e2e_enabled("the_good_bundle_verifies") {
        return;
    }
    let f = fixture();
    verify(&f.bytes, &f.keys).expect("the untouched bundle verifies");
    assert_eq!(join_tar(&split_tar(&f.bytes)), f.bytes, "split/join is not faithful");
}

#[test]
fn flipped_bytes_are_rejected_naming_the_entry() {
    if !e2e_enabled("flipped_bytes_are_rejected_naming_the_entry") {
        return;
    }
    let f = fixture();
    let entries = split_tar(&f.bytes);
    let layer = entries.iter().position(|e| e.data.len() > 100_000).expect("a big layer");
    let layer_path = entries[layer].path();
    let flip = |at: usize| {
        let mut b = f.bytes.clone();
        b[at] ^= 0x01;
        b
    };
    // Header of the first entry, of a blob; content of manifest, signature, compose, blob.
    rejected(&flip(10), Exit::BundleInvalid, "not a bundle");
    rejected(&flip(offset_of(&entries, layer) + 5), Exit::BundleInvalid, "header");
    rejected(&flip(512 + 20), Exit::SignatureRejected, "signature");
    rejected(&flip(offset_of(&entries, 1) + 512 + 60), Exit::SignatureRejected, "signature");
    rejected(&flip(offset_of(&entries, 2) + 512 + 3), Exit::BundleInvalid, "stack/compose.yaml");
    rejected(&flip(offset_of(&entries, layer) + 512 + 50_000), Exit::BundleInvalid, &layer_path);
}

#[test]
fn truncation_anywhere_is_rejected() {
    if !e2e_enabled("truncation_anywhere_is_rejected") {
        return;
    }
    let f = fixture();
    let entries = split_tar(&f.bytes);
    let layer = entries.iter().position(|e| e.data.len() > 100_000).unwrap();
    rejected(&[], Exit::BundleInvalid, "empty");
    for cut in [
        100,
        600,
        512 + 100,
        offset_of(&entries, 3) + 10,
        offset_of(&entries, layer) + 512 + 4096,
        f.bytes.len() - 600,
        f.bytes.len() - 1,
    ] {
        let e = verify(&f.bytes[..cut], &f.keys).expect_err("a truncated bundle verified");
        assert!(matches!(e.exit(), Exit::BundleInvalid | Exit::SignatureRejected), "cut at {cut}: {e}");
    }
}

#[test]
fn added_removed_renamed_reordered_entries_are_rejected() {
    if !e2e_enabled("added_removed_renamed_reordered_entries_are_rejected") {
        return;
    }
    let f = fixture();
    let entries = split_tar(&f.bytes);
    let n = entries.len();

    let mut added = entries.clone();
    added.push(RawEntry::file("stack/files/extra.sh", b"rm -rf /\n".to_vec()));
    rejected(&join_tar(&added), Exit::BundleInvalid, "stack/files/extra.sh");

    let mut inserted = entries.clone();
    inserted.insert(3, RawEntry::file("stack/files/evil.conf", b"x".to_vec()));
    rejected(&join_tar(&inserted), Exit::BundleInvalid, "stack/files/evil.conf");

    let mut removed = entries.clone();
    let gone = removed.remove(n - 1).path();
    rejected(&join_tar(&removed), Exit::BundleInvalid, &gone);

    let mut renamed = entries.clone();
    renamed[3].edit_header(|h| h.set_path("stack/files/conf/other.conf").unwrap());
    rejected(&join_tar(&renamed), Exit::BundleInvalid, "stack/files/conf/other.conf");

    let mut reordered = entries.clone();
    reordered.swap(n - 1, n - 2);
    rejected(&join_tar(&reordered), Exit::BundleInvalid, &entries[n - 1].path());
}

#[test]
fn links_devices_and_escaping_paths_are_rejected() {
    if !e2e_enabled("links_devices_and_escaping_paths_are_rejected") {
        return;
    }
    let f = fixture();
    let entries = split_tar(&f.bytes);
    type Edit = Box<dyn Fn(&mut tar::Header)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "symbolic link",
            Box::new(|h| {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name("/etc/passwd").unwrap();
            }),
        ),
        (
            "hard link",
            Box::new(|h| {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name("bundle.json").unwrap();
            }),
        ),
        ("device", Box::new(|h| h.set_entry_type(tar::EntryType::Char))),
        ("directory", Box::new(|h| h.set_entry_type(tar::EntryType::Directory))),
    ];
    for (kind, edit) in cases {
        let mut e = entries.clone();
        e[3].edit_header(|h| edit(h));
        rejected(&join_tar(&e), Exit::BundleInvalid, kind);
    }
    for path in ["../../etc/cron.d/x", "/etc/cron.d/x", "stack/../../x"] {
        let mut e = entries.clone();
        // set_path refuses `..`; write the name field directly.
        let mut h = tar::Header::from_byte_slice(&e[3].header).clone();
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(u) = h.as_ustar_mut() {
            u.prefix.fill(0);
        }
        h.set_cksum();
        e[3].header = *h.as_bytes();
        rejected(&join_tar(&e), Exit::BundleInvalid, path);
    }
}

#[test]
fn unsigned_foreign_key_and_non_bundles_are_rejected() {
    if !e2e_enabled("unsigned_foreign_key_and_non_bundles_are_rejected") {
        return;
    }
    let f = fixture();
    let entries = split_tar(&f.bytes);

    let mut unsigned = entries.clone();
    unsigned.remove(1);
    rejected(&join_tar(&unsigned), Exit::SignatureRejected, "bundle.json.minisig");

    let other = TrustedKeys::new(vec![manifests::SecretKey::generate().public_key()]);
    let e = verify(&f.bytes, &other).expect_err("verified with a foreign key");
    assert_eq!(e.exit(), Exit::SignatureRejected);
    assert!(e.to_string().contains("not trusted"), "{e}");

    // Re-signed by another key: the manifest is intact, the signer is not trusted.
    let intruder = manifests::SecretKey::generate();
    let mut resigned = entries.clone();
    resigned[1] = RawEntry::file("bundle.json.minisig", intruder.sign(&entries[0].data, "forged").into_bytes());
    rejected(&join_tar(&resigned), Exit::SignatureRejected, &intruder.key_id().to_string());

    rejected(b"this is not a tar file at all, just some text\n", Exit::BundleInvalid, "not a bundle");
    rejected(&vec![0u8; 4096], Exit::SignatureRejected, "end of the archive");
}

#[test]
fn declared_sizes_are_checked_before_they_are_used() {
    if !e2e_enabled("declared_sizes_are_checked_before_they_are_used") {
        return;
    }
    let f = fixture();
    let entries = split_tar(&f.bytes);
    // A manifest that claims 10 GB: refused before any allocation.
    let mut huge = entries.clone();
    huge[0].edit_header(|h| h.set_size(10 << 30));
    rejected(&join_tar(&huge), Exit::BundleInvalid, "10737418240");
    // A signature that claims more than the file holds.
    let mut past = entries.clone();
    past[1].edit_header(|h| h.set_size(4000));
    let bytes = join_tar(&past);
    let cut = offset_of(&past, 1) + 1024;
    let e = verify(&bytes[..cut], &f.keys).expect_err("accepted");
    assert!(e.to_string().contains("bundle.json.minisig"), "{e}");
    // A blob that claims a size larger than bundle.json says.
    let n = entries.len();
    let mut big = entries.clone();
    big[n - 1].edit_header(|h| h.set_size(1 << 40));
    rejected(&join_tar(&big), Exit::BundleInvalid, "1099511627776");
}

#[test]
fn the_cli_reports_tampering_with_exit_codes_and_hints() {
    if !e2e_enabled("the_cli_reports_tampering_with_exit_codes_and_hints") {
        return;
    }
    let f = fixture();
    let mut bad = f.bytes.clone();
    let at = bad.len() - 5000;
    bad[at] ^= 0xff;
    let path = f.ws.path("bad.tar");
    std::fs::write(&path, &bad).unwrap();
    for tool in ["bundler", "installer"] {
        let r = run(Command::new(bin(tool))
            .arg("verify")
            .arg(&path)
            .arg("--key")
            .arg(&f.ws.public)
            .env("INSTALLER_STATE_DIR", f.ws.path("state")));
        assert_eq!(r.code, 20, "{tool}: {r:?}");
        assert!(r.stderr.contains("images/blobs/sha256/") && r.stderr.contains("hint:"), "{tool}: {r:?}");
    }
    let other = f.ws.path("other.pub");
    std::fs::write(&other, manifests::SecretKey::generate().public_key().to_file_string()).unwrap();
    let r = run(Command::new(bin("installer"))
        .arg("verify")
        .arg(f.ws.path("good.tar"))
        .arg("--key")
        .arg(&other)
        .env("INSTALLER_STATE_DIR", f.ws.path("state2")));
    assert_eq!(r.code, 21, "{r:?}");
    assert!(r.stderr.contains("not trusted") && r.stderr.contains("hint:"), "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// Any single flipped byte, anywhere in a real bundle, is rejected.
    #[test]
    fn any_flipped_byte_is_rejected(position in 0.0f64..1.0, mask in 1u8..=255) {
        if std::env::var_os("E2E").is_some() {
            let f = fixture();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let at = ((f.bytes.len() as f64) * position) as usize;
            let mut b = f.bytes.clone();
            b[at] ^= mask;
            prop_assert!(verify(&b, &f.keys).is_err(), "flipping byte {} with {:#04x} was accepted", at, mask);
        }
    }
}
