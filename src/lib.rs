//! rbd-provisioner: a Kubernetes external provisioner for Ceph RBD.
//!
//! Decisions live in the `domain` crate (no client, runtime or Ceph, no `unsafe`), Ceph access
//! in the `ceph` crate (the only FFI); this crate is the Kubernetes side: the controllers that
//! wire decisions to I/O ([`controller`]), the API calls ([`k8s`]), leader election, metrics,
//! and the subcommands ([`app`], [`doctor`], [`migrate`], [`audit`]).

pub mod adopt;
pub mod app;
pub mod audit;
pub mod controller;
pub mod doctor;
pub mod error;
pub mod failpoint;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod migrate;
pub mod output;
pub mod process;
pub mod ratelimit;
pub mod text;
