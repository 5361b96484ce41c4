//! What the benches share: the bench's bed (classes, secrets, peers), watches that time each
//! event, the figures and their percentiles, /proc readings, and the cleanup.

pub mod bed;
pub mod cleanup;
pub mod figures;
pub mod procfs;
pub mod watch;
