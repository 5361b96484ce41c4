//! Runs that died part-way: each state a crash can leave, finished by the next run.

use super::*;

/// A run that died after each step is finished by the next one.
#[tokio::test]
async fn resumes_after_a_crash_at_each_step() {
    let mut s = Setup::new("resume").await;
    let (legacy_claim, legacy_pv, legacy_image) = s.legacy_volume("legacy", "kube").await;
    let _prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    let (a_claim, a_pv, a_image) = s.our_volume("a").await;
    let (b_claim, b_pv, b_image) = s.our_volume("b").await;
    let (c_claim, c_pv, c_image) = s.our_volume("c").await;
    let settings = s.settings();
    let mut before = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (pv, image) in [
        (&legacy_pv, &legacy_image),
        (&a_pv, &a_image),
        (&b_pv, &b_image),
        (&c_pv, &c_image),
    ] {
        before.insert(pv.clone(), s.pvs().get(pv).await.unwrap());
        ids.insert(
            image.clone(),
            s.ceph.image_info("kube", image).await.unwrap().id,
        );
    }
    // What the command saves before it touches a PV, where it saves it.
    let save_backup = |_claim: &str, pv: &PersistentVolume| {
        let cms = backups(&s.admin);
        let cm = plan::backup_config_map(pv, BACKUP_NS).unwrap();
        async move {
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
    };
    let delete_old = |name: &str| {
        let pvs = s.pvs();
        let name = name.to_string();
        async move {
            pvs.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
            )
            .await
            .unwrap();
            pvs.delete(&name, &DeleteParams::default()).await.unwrap();
            pvs.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
            wait_absent(&pvs, &name, "old PV gone", T).await;
        }
    };

    // a: died right after saving the backup.
    save_backup("a", &before[&a_pv]).await;
    // c: died after asking for the deletion, before dropping the finalizers: the PV stays
    // Terminating (pv-protection holds a Bound PV).
    save_backup("c", &before[&c_pv]).await;
    s.pvs()
        .patch(
            &c_pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
        )
        .await
        .unwrap();
    s.pvs()
        .delete(&c_pv, &DeleteParams::default())
        .await
        .unwrap();
    let terminating = s.pvs().get(&c_pv).await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    // legacy: died after deleting the old PV. The claim goes Lost and stays so.
    save_backup("legacy", &before[&legacy_pv]).await;
    let t = Instant::now();
    delete_old(&legacy_pv).await;
    wait_for("legacy claim Lost", T, || async {
        let c = s.pvcs().get("legacy").await.unwrap();
        (c.status?.phase.as_deref() == Some("Lost")).then_some(())
    })
    .await;
    eprintln!(
        "legacy claim Lost {:?} after the old PV's deletion began",
        t.elapsed()
    );
    let c = s.pvcs().get("legacy").await.unwrap();
    assert_eq!(
        c.spec.unwrap().volume_name.as_deref(),
        Some(legacy_pv.as_str()),
        "a Lost claim keeps its volumeName"
    );
    // b: died after creating the csi PV, before the cleanup.
    save_backup("b", &before[&b_pv]).await;
    delete_old(&b_pv).await;
    s.pvs()
        .create(
            &PostParams::default(),
            &plan::csi_pv(&before[&b_pv], &settings).unwrap(),
        )
        .await
        .unwrap();
    // Left alone, the PV binder rebinds the claim by itself, at its next periodic resync
    // of the claim (--pvclaimbinder-sync-period, 15 s on the bed and by default).
    let t = Instant::now();
    let by_itself = wait_for("claim b Bound again by itself", T, || async {
        let c = s.pvcs().get("b").await.unwrap();
        (c.status?.phase.as_deref() == Some("Bound")).then_some(())
    });
    by_itself.await;
    eprintln!(
        "claim b Bound again by itself {:?} after its csi PV was created",
        t.elapsed()
    );

    // The image is the same one: the old PVs were Retain, so their deletion did not touch it.
    assert_eq!(
        s.ceph.image_info("kube", &legacy_image).await.unwrap().id,
        ids[&legacy_image]
    );

    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok, "{out}");
    assert!(line_of(&out, &a_pv).contains("would resume an interrupted migration (the backup is saved, the old rbd PV is still there)"), "{out}");
    assert!(
        line_of(&out, &legacy_pv)
            .contains("would resume an interrupted migration (the old rbd PV is gone"),
        "{out}"
    );
    assert!(
        line_of(&out, &b_pv).contains("would resume an interrupted migration (the csi PV exists"),
        "{out}"
    );
    assert!(
        line_of(&out, &legacy_pv).contains(&format!("image kube/{legacy_image}")),
        "{out}"
    );
    assert!(
        s.pvs().get_opt(&legacy_pv).await.unwrap().is_none(),
        "dry run created nothing"
    );

    assert!(
        line_of(&out, &c_pv).contains("would resume an interrupted migration (the backup is saved, the old rbd PV is still there)"),
        "{out}"
    );

    let (ok, out) = s.migrate(&[]).await;
    assert!(ok, "{out}");
    for pv in [&a_pv, &legacy_pv, &b_pv, &c_pv] {
        assert!(
            line_of(&out, pv).ends_with(": migrated (resumed an interrupted migration)"),
            "{out}"
        );
    }
    assert_migrated(&s, &before[&a_pv], &a_claim, "kube", &a_image).await;
    assert_migrated(
        &s,
        &before[&legacy_pv],
        &legacy_claim,
        "kube",
        &legacy_image,
    )
    .await;
    assert_migrated(&s, &before[&b_pv], &b_claim, "kube", &b_image).await;
    assert_migrated(&s, &before[&c_pv], &c_claim, "kube", &c_image).await;
    for (image, id) in &ids {
        assert_eq!(
            &s.ceph.image_info("kube", image).await.unwrap().id,
            id,
            "{image} untouched"
        );
    }
    s.cleanup().await;
}

/// The binary itself interrupted (its failpoints, exit without cleanup) right after each step
/// of the real order: backup saved, old PV set to Retain, old PV deleted (Terminating, held by
/// pv-protection), csi PV created. Each state is checked as the crash left it, then a rerun
/// finishes the migration and the image is untouched (its id, seen by the rbd CLI).
#[tokio::test]
async fn resumes_after_the_binary_is_interrupted_at_each_step() {
    let runs = ["backup", "retain", "delete", "create"].map(interrupted_at);
    futures::future::join_all(runs).await;
}

async fn interrupted_at(step: &'static str) {
    let mut s = Setup::new(&format!("fp-{step}")).await;
    let prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    let (claim, pv, image) = s.our_volume("data").await;
    // The provisioner must not act on the Retain PV or the csi PV meanwhile; stopping it also
    // keeps the checks below about what the crash left.
    drop(prov);
    let before = s.pvs().get(&pv).await.unwrap();
    let id = rbd_json(&s.bed, &["info", &format!("kube/{image}")]).expect("rbd info")["id"].clone();
    let fp = format!("exit-after-{step}:{pv}");
    let (code, out) = s
        .migrate_env(&[], &[("RBD_PROVISIONER_MIGRATE_FAILPOINT", &fp)])
        .await;
    assert_eq!(code, Some(86), "{step}: the failpoint ended the run: {out}");
    assert!(out.contains(&format!("failpoint {fp}")), "{out}");
    assert!(
        backup_of(&s.admin, &pv).await.is_some(),
        "{step}: the backup is there"
    );
    let live = s.pvs().get_opt(&pv).await.unwrap();
    let policy = |p: &PersistentVolume| {
        p.spec
            .as_ref()
            .unwrap()
            .persistent_volume_reclaim_policy
            .clone()
    };
    match step {
        "backup" => {
            let live = live.expect("old PV still there");
            assert_eq!(live.metadata.uid, before.metadata.uid);
            assert_eq!(policy(&live).as_deref(), Some("Delete"));
            assert!(live.metadata.deletion_timestamp.is_none());
        }
        "retain" => {
            let live = live.expect("old PV still there");
            assert_eq!(live.metadata.uid, before.metadata.uid);
            assert_eq!(policy(&live).as_deref(), Some("Retain"));
            assert!(live.metadata.deletion_timestamp.is_none());
        }
        "delete" => {
            let live = live.expect("old PV Terminating, held by pv-protection");
            assert_eq!(live.metadata.uid, before.metadata.uid);
            assert_eq!(policy(&live).as_deref(), Some("Retain"));
            assert!(live.metadata.deletion_timestamp.is_some());
        }
        "create" => {
            let live = live.expect("csi PV there");
            assert_ne!(live.metadata.uid, before.metadata.uid);
            assert!(live.spec.as_ref().unwrap().csi.is_some());
        }
        _ => unreachable!(),
    }
    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok, "{out}");
    assert!(
        line_of(&out, &pv).contains("would resume an interrupted migration"),
        "{step}: {out}"
    );
    let (ok, out) = s.migrate(&[]).await;
    assert!(ok, "{step}: {out}");
    assert!(
        line_of(&out, &pv).ends_with(": migrated (resumed an interrupted migration)"),
        "{step}: {out}"
    );
    assert_migrated(&s, &before, &claim, "kube", &image).await;
    assert_eq!(
        rbd_json(&s.bed, &["info", &format!("kube/{image}")]).expect("image kept")["id"],
        id,
        "{step}: image untouched"
    );
    s.cleanup().await;
}
