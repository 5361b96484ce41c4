//! Removal of everything the run created, also when a phase failed.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::bench::bed::Ctx;
use crate::bench::watch::{Seen, until};

/// A PV still there at cleanup: (claim, PV name, image).
type Stale = (String, Option<String>, Option<String>);

pub async fn cleanup(cx: &Ctx) -> Vec<String> {
    let mut left = Vec::new();
    let pvcs = cx.pvcs();
    let _ = pvcs
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    // Give both provisioners a chance to delete what they made.
    let ours_or_peer = |g: &Seen| {
        g.pv_created
            .keys()
            .filter(|c| !c.starts_with("control-") && !g.pv_gone.contains_key(*c))
            .count()
    };
    let _ = until(&cx.seen, "all PVs gone", Duration::from_secs(120), |g| {
        ours_or_peer(g) == 0
    })
    .await;
    let _ = until(&cx.seen, "trash free", Duration::from_secs(120), |g| {
        g.trash_pending.is_empty()
    })
    .await;

    // Whatever is left: by force.
    let pvs = cx.pvs();
    let (stale, pending): (Vec<Stale>, Vec<String>) = {
        let g = cx.seen.lock().unwrap();
        (
            g.pv_created
                .keys()
                .filter(|c| !g.pv_gone.contains_key(*c))
                .map(|c| {
                    (
                        c.clone(),
                        g.pv_name.get(c).cloned(),
                        g.image.get(c).cloned(),
                    )
                })
                .collect(),
            g.trash_pending
                .iter()
                .filter_map(|c| g.image.get(c).cloned())
                .collect(),
        )
    };
    for (claim, pv, image) in stale {
        if let Some(pv) = pv {
            let _ = pvs
                .patch(
                    &pv,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
            let _ = pvs.delete(&pv, &DeleteParams::default()).await;
            left.push(format!("PV {pv} of claim {claim} removed by cleanup"));
        }
        if let Some(image) = image.filter(|i| i.starts_with("kubernetes-dynamic-pvc-"))
            && cx.ceph.remove_image("kube", &image).await.is_ok()
        {
            left.push(format!("image {image} removed by cleanup"));
        }
    }
    if !pending.is_empty()
        && let Ok(entries) = cx.ceph.trash_list("kube").await
    {
        for e in entries.iter().filter(|e| pending.contains(&e.name)) {
            let _ = cx.ceph.trash_remove("kube", &e.id, true).await;
            left.push(format!("trash entry {} purged by cleanup", e.name));
        }
    }
    let scs = Api::<StorageClass>::all(cx.admin.clone());
    for sc in [&cx.ours, &cx.peer, &cx.csi] {
        let _ = scs.delete(sc, &DeleteParams::default()).await;
    }
    let _ = Api::<Secret>::namespaced(cx.admin.clone(), "kube-system")
        .delete(&cx.admin_secret, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(cx.admin.clone())
        .delete(&cx.ns, &DeleteParams::default())
        .await;
    left
}
