//! The names leader election uses: the Lease's and a replica's.

/// The Lease name for a provisioner name ("ceph.com/rbd" → "rbd-provisioner-ceph-com-rbd").
pub fn lease_name(provisioner: &str) -> String {
    let mut s: String = provisioner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(200);
    format!("rbd-provisioner-{}", s.trim_matches('-'))
}

/// This replica's identity in the Lease: `<pod name, else host name>_<16 hex digits>`, the
/// digits random for each process. Two replicas must never share one, or both would take the
/// Lease for theirs and act at once; a pod name alone is not enough: it may be missing, or
/// copied into two replicas' environments. The name part is for people.
pub fn replica_identity(pod_name: Option<&str>, hostname: &str, random: u64) -> String {
    let name = [pod_name.unwrap_or_default(), hostname]
        .into_iter()
        .map(str::trim)
        .find(|n| !n.is_empty())
        .unwrap_or("rbd-provisioner");
    format!("{name}_{random:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(lease_name("ceph.com/rbd"), "rbd-provisioner-ceph-com-rbd");
        assert_eq!(
            lease_name("Example.io/RBD"),
            "rbd-provisioner-example-io-rbd"
        );
    }
}
