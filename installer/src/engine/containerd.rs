//! Docker 25-29 with the containerd image store. An image is named by its manifest digest (the
//! archive's index.json points at our platform manifest). The OCI layout lets the import skip a
//! layer blob that is absent; unpacking then needs the snapshot or the blob in the content store.
//! Blobs the engine reports as held are left out: those of our images whose manifest it lists
//! as `Available` (`GET /images/json?manifests=1`, API 1.47+, Docker 27.3+); the new image is
//! then complete (savable, pushable). An engine that cannot say (Docker 25-27.2) gets left out
//! what it has unpacked (a snapshot per chain ID, which the unpack uses instead of the blob):
//! the image runs, but `docker save` of it would miss those blobs. Sending every layer there
//! would make each upgrade as large as a first install. If the engine refuses, the load is
//! repeated once with every layer.

use std::collections::BTreeSet;

use manifests::{Digest, Image, Layer};

use super::{EngineKind, Holdings, HostImage, Strategy, layers_of};

/// The containerd-store strategy.
pub struct ContainerdStore;

impl Strategy for ContainerdStore {
    fn kind(&self) -> EngineKind {
        EngineKind::ContainerdStore
    }
    fn image_id(&self, image: &Image) -> Digest {
        image.manifest.digest
    }
    fn holdings(&self, images: &[HostImage], known: &[&Image]) -> Holdings {
        let available: BTreeSet<Digest> = images.iter().flat_map(|i| i.available_manifests.iter().copied()).collect();
        Holdings {
            // An image pulled by tag has its index digest as ID; ours are loaded by manifest.
            ids: images.iter().map(|i| i.id).chain(available.iter().copied()).collect(),
            chain_ids: images.iter().flat_map(|i| crate::load::chain_ids(&i.diff_ids)).collect(),
            stored_blobs: layers_of(known, &available),
            content_reported: images.iter().any(|i| i.manifests_reported),
        }
    }
    fn may_skip(&self, layer: &Layer, chain_id: &Digest, holdings: &Holdings) -> bool {
        holdings.stored_blobs.contains(&layer.blob.digest)
            || (!holdings.content_reported && holdings.chain_ids.contains(chain_id))
    }
}

#[cfg(test)]
mod tests {
    use manifests::{Blob, Image, Layer};

    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn image(name: &str, layers: &[&str]) -> Image {
        let blob = |s: &str| Blob { digest: d(s), size: 10, media_type: String::new() };
        Image {
            reference: name.into(),
            index_digest: None,
            manifest: blob(&format!("manifest {name}")),
            config: blob(&format!("config {name}")),
            layers: layers.iter().map(|l| Layer { blob: blob(l), diff_id: d(&format!("diff {l}")) }).collect(),
        }
    }

    #[test]
    fn only_blobs_of_available_manifests_are_left_out_when_the_engine_reports_them() {
        let old = image("web:1", &["base", "v1"]);
        let new = image("web:2", &["base", "v2"]);
        let host = |available: bool, reported: bool| HostImage {
            id: old.manifest.digest,
            repo_digests: vec![],
            diff_ids: old.layers.iter().map(|l| l.diff_id).collect(),
            available_manifests: if available { vec![old.manifest.digest] } else { vec![] },
            manifests_reported: reported,
        };
        let chain = |i: &Image| crate::load::chain_ids(&i.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>());
        let s = ContainerdStore;
        // Docker 27.3+: web:1 complete in the content store -> its base blob may be left out.
        let h = s.holdings(&[host(true, true)], &[&old, &new]);
        assert!(s.may_skip(&new.layers[0], &chain(&new)[0], &h));
        assert!(!s.may_skip(&new.layers[1], &chain(&new)[1], &h));
        assert!(h.ids.contains(&s.image_id(&old)) && !h.ids.contains(&s.image_id(&new)));
        // Reported, but not available (its blobs were left out once): send.
        let h = s.holdings(&[host(false, true)], &[&old, &new]);
        assert!(!s.may_skip(&new.layers[0], &chain(&new)[0], &h));
        // Docker 25-27.2 cannot say: the unpacked layer (snapshot) is used.
        let h = s.holdings(&[host(false, false)], &[&old, &new]);
        assert!(s.may_skip(&new.layers[0], &chain(&new)[0], &h));
        assert!(!s.may_skip(&new.layers[1], &chain(&new)[1], &h));
    }
}
