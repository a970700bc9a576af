//! `installer`: runs on the offline VM, as root, next to a local Docker Engine.
//!
//! - [`verify`]: signature first, then every entry -> [`verify::VerifiedBundle`]
//! - [`plan`]: pure (manifest, host state) -> [`plan::Plan`]
//! - [`load`]: the one pass over the bundle that streams a docker-save archive to Docker
//! - [`apply`]: runs the plan, journaled in [`state`]
//! - [`engine`]: the [`engine::Engine`] seam; [`engine::docker`] is the only module importing
//!   bollard; one file per engine strategy ([`engine::graph`], [`engine::containerd`],
//!   [`engine::podman`]) decides what to send and how images are named
//! - [`push`]: the bundle's images into a site registry byte for byte, through the
//!   [`registry::Registry`] seam ([`registry::http`] is the only module speaking HTTP)
//! - [`target`]: where a release goes besides one engine: [`target::swarm`]
//! - [`status`], [`prune`], [`preflight`], [`values`], [`trust`], [`report`]

pub mod apply;
pub mod data;
pub mod engine;
pub mod error;
pub mod load;
pub mod plan;
pub mod preflight;
pub mod prune;
pub mod push;
pub mod registry;
pub mod report;
pub mod state;
pub mod status;
pub mod support;
pub mod target;
pub mod trust;
pub mod values;
pub mod verify;

pub use error::InstallError;
