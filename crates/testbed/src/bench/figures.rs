//! The figures a run collects, phase by phase, for the report.

use std::time::Duration;

/// Nearest-rank percentile.
pub fn pct(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

#[derive(Default)]
pub struct Seq {
    pub annotated: Vec<Duration>,
    /// Annotation -> PV: what the provisioner itself takes once the binder handed it the claim.
    pub ann_to_pv: Vec<Duration>,
    /// Claims whose PV event came before their annotation event, by how much. Not clamped to
    /// zero: both watches are timestamped on this process's monotonic clock, so a negative
    /// gap is real (early provisioning, or one watch delivering later than the other).
    pub pv_before_ann: Vec<Duration>,
    pub pv: Vec<Duration>,
    pub bound: Vec<Duration>,
}

#[derive(Default)]
pub struct Del {
    pub pv_gone: Vec<Duration>,
    pub purged: Vec<Duration>,
    /// From the first claim deletion of the batch until the trash held none of its images.
    pub trash_clear: Option<Duration>,
    /// From the last PV gone until the trash held none of the batch's images.
    pub trash_after_last_pv: Option<Duration>,
}

#[derive(Default)]
pub struct Burst {
    pub api_create: Option<Duration>,
    pub all_annotated: Option<Duration>,
    pub ann_to_pv: Vec<Duration>,
    /// As in [`Seq::pv_before_ann`].
    pub pv_before_ann: Vec<Duration>,
    pub pv_p50: Option<Duration>,
    pub all_pvs: Option<Duration>,
    pub all_bound: Option<Duration>,
    pub api_delete: Option<Duration>,
    pub all_gone: Option<Duration>,
    /// Until the last claim was gone (kube-controller-manager's pvc-protection dropped its
    /// finalizer): what follows is the provisioner's part.
    pub claims_gone: Option<Duration>,
    /// Per claim: claim gone → its PV gone.
    pub gone_to_pv_gone: Vec<Duration>,
    /// Until the pool listed none of them (ours: moved to the trash; peer: removed).
    pub images_gone: Option<Duration>,
    /// Ours: until the trash held none of them either (purged).
    pub trash_free: Option<Duration>,
    pub hwm_after_create_kib: Option<u64>,
    pub hwm_after_delete_kib: Option<u64>,
    pub rss_after_delete_kib: Option<u64>,
}

#[derive(Default)]
pub struct Figures {
    pub seq_ours: Seq,
    pub seq_peer: Seq,
    pub del_1g: Del,
    pub del_100g: Del,
    pub burst_ours: Burst,
    pub burst_peer: Burst,
    pub control_all_bound: Option<Duration>,
    pub control_api_create: Option<Duration>,
    pub leftovers: Vec<String>,
    /// (phase, load average at its start, at its end), in the order run.
    pub phase_load: Vec<(String, String, String)>,
    /// Whether the in-tree peer's phases ran before ours this time.
    pub peer_first: bool,
    /// The peer's phases were skipped (no in-tree RBD plugin on Kubernetes 1.31+).
    pub no_peer: bool,
}
