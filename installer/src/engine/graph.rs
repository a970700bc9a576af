//! Docker with a graph driver (overlay2), 20.10 to 29: an image is named by its config digest;
//! a layer file is opened only when its chain ID is absent, so a layer whose chain ID the engine
//! has may be left out (moby `tarexport.Load`, unchanged from 20.10 to 29).

use std::collections::BTreeSet;

use manifests::{Digest, Image, Layer};

use super::{EngineKind, Holdings, HostImage, Strategy};

/// The graph-driver strategy.
pub struct GraphDriver;

fn chain_ids(images: &[HostImage]) -> BTreeSet<Digest> {
    images.iter().flat_map(|i| crate::load::chain_ids(&i.diff_ids)).collect()
}

impl Strategy for GraphDriver {
    fn kind(&self) -> EngineKind {
        EngineKind::GraphDriver
    }
    fn image_id(&self, image: &Image) -> Digest {
        image.config.digest
    }
    fn holdings(&self, images: &[HostImage], _known: &[&Image]) -> Holdings {
        Holdings { ids: images.iter().map(|i| i.id).collect(), chain_ids: chain_ids(images), ..Holdings::default() }
    }
    fn may_skip(&self, _layer: &Layer, chain_id: &Digest, holdings: &Holdings) -> bool {
        holdings.chain_ids.contains(chain_id)
    }
}

/// An engine the installer does not recognise: images named by config digest as Docker does,
/// and every layer sent, since nothing is known about what it can do without one.
pub struct Unrecognised;

impl Strategy for Unrecognised {
    fn kind(&self) -> EngineKind {
        EngineKind::Unknown
    }
    fn image_id(&self, image: &Image) -> Digest {
        image.config.digest
    }
    fn holdings(&self, images: &[HostImage], _known: &[&Image]) -> Holdings {
        super::ids_only(images)
    }
    fn may_skip(&self, _layer: &Layer, _chain_id: &Digest, _holdings: &Holdings) -> bool {
        false
    }
}
