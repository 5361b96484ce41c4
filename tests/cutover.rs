//! The cut-over from the old external-storage provisioner (README: "Moving over from the old
//! ceph.com/rbd provisioner"): both serve the same name, so the old one is stopped first. A claim
//! made in between waits, handed over by kube-controller-manager, and is provisioned exactly
//! once when ours starts, even with two replicas starting at the same moment.

use testbed as common;

use std::time::Duration;

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_claim_pending_across_the_cut_over_is_provisioned_once() {
    // The scenario's own provisioner serves another name; the class below names one that no
    // process serves yet: the old provisioner has been stopped, ours not started.
    let s = Scenario::new("cutover").await;
    let served = format!("{}.old/rbd", s.ns);
    let p = s.params(&[]);
    let p: Vec<(&str, &str)> = p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let class = format!("{}-class", s.ns);
    storage_class(
        &s.admin,
        &class,
        &served,
        &p,
        json!({"reclaimPolicy": "Delete"}),
    )
    .await;
    let c = s.claim("data", &class).create().await;
    let uid = uid_of(&c);
    // Handed over by kube-controller-manager, and waiting.
    wait_for("the hand-over annotation", T, || async {
        let c = s.pvcs().get("data").await.ok()?;
        let ann = c.metadata.annotations.unwrap_or_default();
        (ann.get("volume.beta.kubernetes.io/storage-provisioner") == Some(&served)).then_some(())
    })
    .await;
    let waiting = s.pvcs().get("data").await.unwrap();
    assert_eq!(
        waiting.status.and_then(|st| st.phase).as_deref(),
        Some("Pending")
    );

    // The new Deployment's two replicas start together.
    let (a, b) = tokio::join!(
        Provisioner::start(&s.bed, &served, &[]),
        Provisioner::start(&s.bed, &served, &[])
    );
    wait_bound(&s.admin, &s.ns, "data", T).await;
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    assert!(
        rbd_exists(&s.bed, "kube", &image),
        "{image} not in the pool"
    );
    let ours: Vec<String> = rbd_ls(&s.bed, "kube")
        .into_iter()
        .filter(|i| i.contains(&uid))
        .collect();
    assert_eq!(ours, vec![image.clone()], "one image for the claim");
    let succeeded: Vec<_> = events_for(&s.admin, &s.ns, &uid)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ProvisioningSucceeded"))
        .collect();
    assert_eq!(succeeded.len(), 1, "provisioned once: {succeeded:#?}");
    // One replica led and acted; the other waited.
    let (la, lb) = (a.logs(), b.logs());
    let leaders = [&la, &lb]
        .iter()
        .filter(|l| l.contains("became leader"))
        .count();
    assert_eq!(leaders, 1, "exactly one replica leads:\n{la}\n---\n{lb}");
    let leader = if la.contains("became leader") {
        &la
    } else {
        &lb
    };
    assert!(
        leader.contains(&format!("pvc-{uid}")) || leader.contains(&uid),
        "the leader's log names the claim it provisioned"
    );
    // Deleting goes through the same single leader.
    s.pvcs().delete("data", &Default::default()).await.unwrap();
    s.wait_pv_gone(&uid).await;
    wait_for("the image removed", T, || async {
        (!rbd_exists(&s.bed, "kube", &image)).then_some(())
    })
    .await;
}
