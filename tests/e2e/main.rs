//! One test binary for everything that crosses crates or touches real components.
//!
//! - `build`: `bundler build` against a real registry, its bad inputs (issue 3)
//! - `tamper`: verification of damaged and forged bundles, with a property test (issue 3)
//! - `apply`: `installer apply` on a real dockerd, its faults and interruptions (issue 4)
//! - `media`: split bundles, parts read in place from read-only mounts, ISO images (issue 14)
//! - `push`: `installer push` to real registries, pulled back by dockerd (issue 15)
//! - `swarm`: `installer apply --target swarm` on a one-node Swarm (issue 15)
//! - `fake`: the apply logic on a fake Engine, no Docker needed (runs in plain `cargo test`)
//!
//! Docker-touching tests share one daemon, so `scripts/test` runs this binary with one thread.

mod apply;
mod build;
mod compose;
mod data;
mod fake;
mod media;
mod podman;
mod push;
mod support;
mod swarm;
mod tamper;
