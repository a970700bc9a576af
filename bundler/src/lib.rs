//! `bundler`: runs in the vendor's CI, online. Reads a compose file, pulls every image it names,
//! and writes one signed offline bundle (format: the `manifests` crate).
//!
//! - [`build`]: the pipeline (compose -> registry -> signed tar)
//! - [`registry`]: the [`registry::ImageSource`] seam; the only module that imports oci-client
//! - [`archive`]: the deterministic tar writer; [`parts`]: the same archive cut into parts for removable media
//! - [`keys`], [`inspect`]: keygen, inspect, verify; [`iso`]: ISO images of a bundle for VM sites
//! - [`report`]: progress callbacks (the binary draws them)

pub mod archive;
pub mod build;
pub mod error;
pub mod inspect;
pub mod iso;
pub mod keys;
pub mod parts;
pub mod registry;
pub mod report;

pub use error::BundlerError;
