//! rbd-provisioner: a Kubernetes external provisioner for Ceph RBD.
//!
//! Pure decisions (`params`, `claim`, `volume`) are kept apart from I/O (`ceph`, `k8s`),
//! and `controller` wires them together.

#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod ceph;
pub mod claim;
pub mod clone;
pub mod controller;
pub mod doctor;
pub mod error;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod migrate;
pub mod owner;
pub mod params;
pub mod quantity;
pub mod ratelimit;
pub mod reclaim;
pub mod resize;
pub mod volume;
