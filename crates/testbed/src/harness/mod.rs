//! The fault harness shared by `faults.rs`, `outages.rs` and `soak.rs`: a seeded random
//! source, bursts of claims, the invariant checks (made with the API server and the `rbd` CLI,
//! not the code under test), a bed of the harness's own for the scenarios that stop daemons,
//! and the control of those daemons. Re-exported here, so tests name it all `harness::X`.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

mod claims;
mod daemons;
mod invariants;
mod own_bed;
mod witness;

pub use claims::*;
pub use daemons::*;
pub use invariants::*;
pub use own_bed::*;
// The harness's endpoints are the provisioner's: one function, named from either place.
pub use crate::free_addr;
#[allow(unused_imports)]
pub use witness::*;

/// xorshift64*: small, seedable, good enough to pick moments and counts.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `RBDP_FAULT_SEED`, or the clock; the seed is printed either way.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("RBDP_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{test}: fault seed {seed} (replay with RBDP_FAULT_SEED={seed})");
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo + 1))
    }
}

/// Full sizes (`RBDP_FAULT_FULL=1`) rather than the quick ones the suite runs.
pub fn full() -> bool {
    std::env::var_os("RBDP_FAULT_FULL").is_some()
}

/// Fails the test with its violations, one per line, unless there are none.
pub fn assert_no_violations(violations: &[String]) {
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
}

/// A scenario's verdict: its violations, one per line.
pub fn verdict(v: Vec<String>) -> Result<(), String> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("\n"))
    }
}

pub fn healthz(addr: &str) -> bool {
    Command::new("curl")
        .args(["-fsS", "--max-time", "3", &format!("http://{addr}/healthz")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// p50 and max of some durations, in seconds.
pub fn p50_max(mut d: Vec<Duration>) -> (f64, f64) {
    if d.is_empty() {
        return (0.0, 0.0);
    }
    d.sort();
    (d[d.len() / 2].as_secs_f64(), d[d.len() - 1].as_secs_f64())
}

/// Appends one line of figures to `$RBDP_FAULT_REPORT` (when set), for RELIABILITY.md.
pub fn report(line: &str) {
    println!("FIGURES {line}");
    if let Some(path) = std::env::var_os("RBDP_FAULT_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
