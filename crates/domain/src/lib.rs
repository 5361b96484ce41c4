//! Pure decisions: what the StorageClass asks for, which claims and volumes are ours, what a
//! PV or image is named and holds, what to do with a released volume, a grown claim or a
//! clone, and how a migration to ceph-csi proceeds. No I/O: nothing here imports a
//! Kubernetes client, the async runtime or the Ceph layer (k8s-openapi's types are plain
//! data), so every decision is unit-tested without a cluster.

#![forbid(unsafe_code)]

pub mod adopt;
pub mod claim;
pub mod clone;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod lease;
pub mod meta;
pub mod migration;
pub mod monitors;
pub mod owner;
pub mod params;
pub mod provision_plan;
pub mod quantity;
pub mod reclaim;
pub mod resize;
pub mod server_version;
pub mod snapshot;
pub mod volume;
