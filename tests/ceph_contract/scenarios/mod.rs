//! The scenarios, each run on both sides by `contract!`.

mod images;
mod snapshots;
mod trash;

pub use images::*;
pub use snapshots::*;
pub use trash::*;
