//! Whether the nodes' kernels can map the class's images with krbd.

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};

use ceph::RBD_FEATURE_LAYERING;
use domain::params::ClassParams;

use super::{Row, Status, cannot_ask, fail, row};

/// Oldest kernel whose krbd maps an image with these features (`RBD_FEATURE_*` bits), per
/// Ceph's krbd documentation; `None` when krbd cannot map it at all (journaling).
pub fn krbd_minimum(features: u64) -> Option<(u32, u32)> {
    use ceph::*;
    if features & RBD_FEATURE_JOURNALING != 0 {
        return None;
    }
    let mut min = (3, 10); // layering (and striping v2)
    if features & RBD_FEATURE_EXCLUSIVE_LOCK != 0 {
        min = min.max((4, 9));
    }
    if features & RBD_FEATURE_DATA_POOL != 0 {
        min = min.max((4, 11));
    }
    if features & (RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF | RBD_FEATURE_DEEP_FLATTEN) != 0 {
        min = min.max((5, 3));
    }
    Some(min)
}

/// `major.minor` of a `status.nodeInfo.kernelVersion` such as "5.15.0-91-generic".
pub fn kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Nodes whose kernel is older than `min` (or unreadable), as "name (version)".
pub fn old_kernels(nodes: &[(String, String)], min: (u32, u32)) -> Vec<String> {
    nodes
        .iter()
        .filter(|(_, v)| kernel_version(v).is_none_or(|k| k < min))
        .map(|(n, v)| format!("{n} ({v})"))
        .collect()
}

/// Every Node's kernel can map the class's images with krbd.
pub(super) async fn kernel_row(client: &Client, p: &ClassParams) -> Row {
    let check = "node kernels";
    let features = RBD_FEATURE_LAYERING
        | if p.data_pool.is_some() {
            ceph::RBD_FEATURE_DATA_POOL
        } else {
            0
        };
    let min = krbd_minimum(features).unwrap_or((u32::MAX, 0));
    let nodes = match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            return cannot_ask(check, "list Nodes", &e);
        }
    };
    if nodes.is_empty() {
        return row(check, Status::Warn, "no Nodes registered: cannot check");
    }
    let kernels: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                n.status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .map(|i| i.kernel_version.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let old = old_kernels(&kernels, min);
    if old.is_empty() {
        row(
            check,
            Status::Ok,
            format!(
                "{} node(s) at kernel >= {}.{} (krbd maps layering{})",
                kernels.len(),
                min.0,
                min.1,
                if p.data_pool.is_some() {
                    ", data-pool"
                } else {
                    ""
                }
            ),
        )
    } else {
        fail(
            check,
            format!(
                "krbd of these nodes cannot map the images (needs kernel {}.{}, else \"feature set mismatch\"): {}",
                min.0,
                min.1,
                old.join(", ")
            ),
            "upgrade those nodes' kernels, or keep pods needing these volumes off them (node affinity)",
        )
    }
}
