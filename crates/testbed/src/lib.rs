//! The test bed for integration tests and benches (dev-only): the local Ceph and control
//! planes started by hack/bed-up.sh, the provisioner as a process under the shipped RBAC,
//! independent oracles (the `rbd` CLI), the fault harness and the bench harness.
//!
//! One module per concern; everything is re-exported here, so tests name it `common::X`
//! (`use testbed as common;`) whichever module holds it.

pub mod bench;
pub mod fake_ceph;
pub mod harness;
mod layout;
mod process;

mod bed;
mod cleanup;
mod dashboard;
mod leaks;
mod objects;
mod oracles;
mod plane;
mod provisioner;
mod scenario;
mod snapshots;
mod tokens;
mod values_doc;
mod waits;

pub use bed::*;
pub use cleanup::*;
pub use dashboard::*;
pub use leaks::*;
pub use objects::*;
pub use oracles::*;
pub use plane::*;
pub use process::{die_with_parent, signal};
pub use provisioner::*;
pub use scenario::*;
pub use snapshots::*;
pub use tokens::*;
pub use values_doc::*;
pub use waits::*;
