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
