//! Where a release goes. One Docker Engine (the default) is `apply/`'s converge step; a Swarm
//! is [`swarm`]: the same signed bundle, values, plan and waves, its own services, gates and
//! release record ([ADR 0008](../../../docs/adr/0008-swarm-target.md)).

pub mod swarm;
