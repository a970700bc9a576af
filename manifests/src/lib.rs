//! The bundle format: the contract between `bundler` (online, in CI) and `installer` (offline).
//!
//! A bundle is one uncompressed tar file:
//!
//! ```text
//! bundle.json                  the manifest (canonical JSON), first
//! bundle.json.minisig          minisign signature of bundle.json, second
//! stack/compose.yaml           the author's compose file
//! stack/files/...              config files it references
//! images/oci-layout, images/index.json
//! images/blobs/sha256/<hex>    every blob once; manifests and configs before layers
//! ```
//!
//! This crate has no network, no async runtime and no Docker: [`spec`] parses the author's input,
//! [`manifest`] is what was packed, [`layout`] names every path, [`signature`] signs and checks,
//! [`reader`] verifies a bundle as it streams, [`order`] computes the start order.
#![deny(missing_docs)]

pub mod compose;
pub mod digest;
pub mod display;
pub mod exit;
pub mod fsutil;
pub mod layout;
pub mod manifest;
pub mod media;
pub mod order;
pub mod reader;
pub mod signature;
pub mod time;

pub use digest::Digest;
pub use exit::{Diagnose, Exit};
pub use manifest::{
    Blob, Condition, Entry, HealthSettings, HealthcheckDef, Image, KeyRotation, Layer, LimitsDef, LoggingDef, Manifest,
    Mount, MountKind, NetworkDef, Part, Parts, PortMapping, Requirements, RuntimeDef, SCHEMA_VERSION, ServiceDef,
    SwarmSettings, Ulimit, VariableDef, VolumeDef,
};
pub use reader::{BundleError, BundleReader};
pub use signature::{KeyId, PublicKey, SecretKey, TrustedKeys};
