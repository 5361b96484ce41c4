//! The figures a run collects, phase by phase, for the report.

use std::time::Duration;

/// Nearest-rank percentile.
pub fn pct(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// The counts at which a batch of `len` made on top of `base` stops: the `steps` inside it,
/// then its end.
pub fn stops(steps: &[usize], base: usize, len: usize) -> Vec<usize> {
    let end = base + len;
    let mut v: Vec<usize> = steps
        .iter()
        .copied()
        .filter(|s| *s > base && *s < end)
        .collect();
    if len > 0 {
        v.push(end);
    }
    v
}

/// Least-squares slope of the points (x, y); `None` with fewer than two distinct x.
pub fn slope(pts: &[(f64, f64)]) -> Option<f64> {
    let n = pts.len() as f64;
    let (mx, my) = pts
        .iter()
        .fold((0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n));
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
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
    /// Per claim: claim gone → its image out of the pool (ours: in the trash), polled every
    /// [`POOL_POLL`](super::watch::POOL_POLL).
    pub gone_to_out_of_pool: Vec<Duration>,
    /// The last hand-over the harness saw (the binder's annotation on any claim of the burst)
    /// → every PV exists; zero when every PV existed by then (ours provisions early).
    pub last_handover_to_pvs: Option<Duration>,
    /// Until the pool listed none of them (ours: moved to the trash; peer: removed).
    pub images_gone: Option<Duration>,
    /// Ours: until the trash held none of them either (purged).
    pub trash_free: Option<Duration>,
    pub hwm_after_create_kib: Option<u64>,
    pub hwm_after_delete_kib: Option<u64>,
    pub rss_after_delete_kib: Option<u64>,
}

/// Who a phase drives: ours, the peer of `RBD_BENCH_PEER` (in-tree by default), or the CSI peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Ours,
    Peer,
    Csi,
}

/// `sides` rotated left by `n`: each run starts with another one, so that load drift on a shared
/// machine does not always land on the same side of the ratios.
pub fn rotated(sides: &[Side], n: usize) -> Vec<Side> {
    let mut v = sides.to_vec();
    if !v.is_empty() {
        v.rotate_left(n % sides.len());
    }
    v
}

#[derive(Default)]
pub struct Figures {
    pub seq_ours: Seq,
    pub seq_peer: Seq,
    pub seq_csi: Seq,
    pub del_1g: Del,
    pub del_100g: Del,
    pub burst_ours: Burst,
    pub burst_peer: Burst,
    pub burst_csi: Burst,
    pub control_all_bound: Option<Duration>,
    pub control_api_create: Option<Duration>,
    pub leftovers: Vec<String>,
    /// (phase, load average at its start, at its end), in the order run.
    pub phase_load: Vec<(String, String, String)>,
    /// The sides' phases in the order they ran this time (the binder-only control last).
    pub order: Vec<Side>,
    /// The rotation that gave `order` (`RBD_BENCH_ROTATE`).
    pub rotation: usize,
    /// The peer's phases were skipped (no in-tree RBD plugin on Kubernetes 1.31+).
    pub no_peer: bool,
    /// kube-controller-manager's client QPS/burst flags as it runs (empty: its defaults).
    pub kcm_qps: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_hold_the_steps_inside_a_batch_and_its_end() {
        let steps = [1, 10, 100, 1_000, 2_500, 5_000, 10_000];
        assert_eq!(
            stops(&steps, 0, 5_000),
            vec![1, 10, 100, 1_000, 2_500, 5_000]
        );
        assert_eq!(stops(&steps, 5_000, 5_000), vec![10_000]);
        assert_eq!(stops(&steps, 500, 500), vec![1_000]);
        assert_eq!(stops(&steps, 0, 500), vec![1, 10, 100, 500]);
        assert_eq!(stops(&steps, 0, 1), vec![1]);
        assert!(stops(&steps, 10, 0).is_empty());
    }

    #[test]
    fn slope_of_a_line() {
        let pts = [(1000.0, 10.0), (2000.0, 12.0), (4000.0, 16.0)];
        assert!((slope(&pts).unwrap() - 0.002).abs() < 1e-12);
        assert_eq!(slope(&pts[..1]), None);
        assert_eq!(slope(&[]), None);
    }

    #[test]
    fn rotation_starts_each_run_with_another_side() {
        use Side::*;
        let all = [Ours, Peer, Csi];
        assert_eq!(rotated(&all, 0), vec![Ours, Peer, Csi]);
        assert_eq!(rotated(&all, 1), vec![Peer, Csi, Ours]);
        assert_eq!(rotated(&all, 5), vec![Csi, Ours, Peer]);
        assert_eq!(rotated(&[Ours, Csi], 3), vec![Csi, Ours]);
        assert!(rotated(&[], 2).is_empty());
    }
}
