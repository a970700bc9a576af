//! Podman's Docker-compatible API (4.3 to 6). An image is named by its config digest. Its
//! docker-archive reader needs every layer file; its OCI reader (taken when index.json lists
//! exactly one manifest) reuses a blob only if an image came in through an OCI load with the
//! same compressed digest, which its `RepoDigests` show. The installer sends every layer of an
//! image Podman lacks; an image it holds (by config digest) is only tagged.

use manifests::{Digest, Image, Layer};

use super::{EngineKind, Holdings, HostImage, Strategy};

/// The Podman strategy.
pub struct Podman;

impl Strategy for Podman {
    fn kind(&self) -> EngineKind {
        EngineKind::Podman
    }
    fn image_id(&self, image: &Image) -> Digest {
        image.config.digest
    }
    fn holdings(&self, images: &[HostImage], _known: &[&Image]) -> Holdings {
        super::ids_only(images)
    }
    fn may_skip(&self, _layer: &Layer, _chain_id: &Digest, _holdings: &Holdings) -> bool {
        // A multi-image archive goes through Podman's docker-archive reader, which refuses any
        // missing layer file (podman#8132).
        false
    }
}
