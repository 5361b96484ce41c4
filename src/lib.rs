//! rbd-provisioner: a Kubernetes external provisioner for Ceph RBD.
//!
//! Pure decisions live in [`domain`] (no client, runtime or Ceph imports, no `unsafe`), kept
//! apart from I/O ([`ceph`], [`k8s`]); [`controller`] wires them together.

#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod ceph;
pub mod controller;
pub mod doctor;
pub mod domain;
pub mod error;
pub mod failpoint;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod migrate;
pub mod ratelimit;
pub mod text;
