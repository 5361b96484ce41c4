//! Input the migration must not trust: a tenant's forged backup, a claim in use through a
//! pod's ephemeral volume, and object text carrying terminal control sequences.

use super::*;

/// The attack of the issue: a tenant writes, on its own claims, the old backup annotation
/// naming another namespace's PVs (claimRef pointing at the tenant's claim). An
/// administrator's run must neither delete nor rebind the victims' volumes: a tenant-written
/// annotation is never read as a backup, and every step checks the live claim and PV.
#[tokio::test]
async fn a_forged_backup_on_a_tenant_claim_moves_nothing() {
    let mut s = Setup::new("forge").await;
    let _prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    // The victims, in the Setup's namespace: one in use by a pod, one idle.
    let (busy_claim, busy_pv, busy_image) = s.our_volume("busy").await;
    let (idle_claim, idle_pv, idle_image) = s.our_volume("idle").await;
    pod_using(&s.admin, &s.ns, "db-0", "busy").await;
    let busy_before = s.pvs().get(&busy_pv).await.unwrap();
    let idle_before = s.pvs().get(&idle_pv).await.unwrap();

    // The tenant: may edit claims in its own namespace, nothing else.
    let tenant_ns = unique("tenant");
    namespace(&s.admin, &tenant_ns).await;
    let tenant_user = format!("{tenant_ns}-user");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "claims", "namespace": tenant_ns},
        "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}],
    }))
    .unwrap();
    Api::<Role>::namespaced(s.admin.clone(), &tenant_ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "claims", "namespace": tenant_ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "claims"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": tenant_user}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(s.admin.clone(), &tenant_ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let tenant = client_as(&s.bed, &tenant_user).await;
    let tenant_pvcs = Api::<PersistentVolumeClaim>::namespaced(tenant.clone(), &tenant_ns);
    // Claims that no class provisions: they wait for a PV pre-bound to them.
    let mut forged_claims = Vec::new();
    for (name, victim) in [("grab-busy", &busy_before), ("grab-idle", &idle_before)] {
        let c: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": tenant_ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": "1Mi"}}},
        }))
        .unwrap();
        let c = tenant_pvcs
            .create(&PostParams::default(), &c)
            .await
            .expect("the tenant creates a claim");
        // The victim's PV, rewritten to belong to the tenant's claim.
        let mut forged = victim.clone();
        forged.metadata.managed_fields = None;
        let r = forged.spec.as_mut().unwrap().claim_ref.as_mut().unwrap();
        r.namespace = Some(tenant_ns.clone());
        r.name = Some(name.into());
        r.uid = c.metadata.uid.clone();
        r.resource_version = None;
        let patch = json!({"metadata": {"annotations": {
            ANN_BACKUP: serde_json::to_string(&forged).unwrap(),
        }}});
        tenant_pvcs
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("the tenant annotates its own claim");
        forged_claims.push(c);
    }
    // Where backups live now, the tenant cannot write.
    let denied = backups(&tenant)
        .create(
            &PostParams::default(),
            &plan::backup_config_map(&busy_before, BACKUP_NS).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&denied, kube::Error::Api(e) if e.code == 403),
        "{denied}"
    );

    let (ok, out) = s.migrate(&[]).await;
    assert!(!ok, "the busy claim is refused: {out}");
    // The busy victim: refused for its own pod, untouched.
    assert!(
        line_of(&out, &busy_pv).contains(&format!(
            "refused: claim {}/busy is used by pod(s) db-0",
            s.ns
        )),
        "{out}"
    );
    assert_untouched(&busy_before, &s.pvs().get(&busy_pv).await.unwrap());
    let busy_now = s.pvcs().get("busy").await.unwrap();
    assert_eq!(busy_now.metadata.uid, busy_claim.metadata.uid);
    assert_eq!(
        busy_now.spec.unwrap().volume_name.as_deref(),
        Some(busy_pv.as_str())
    );
    assert_eq!(busy_now.status.unwrap().phase.as_deref(), Some("Bound"));
    // The idle victim is migrated for its own claim, as if nothing had been forged.
    assert!(line_of(&out, &idle_pv).ends_with(": migrated"), "{out}");
    assert_migrated(&s, &idle_before, &idle_claim, "kube", &idle_image).await;
    // The forged annotations are reported, not used.
    for c in ["grab-busy", "grab-idle"] {
        let l = line_of(&out, &format!("claim {tenant_ns}/{c}:"));
        assert!(l.contains("not used") && l.contains("ignored"), "{l}");
    }
    // Nothing is bound to the tenant: the command has finished, so any PV it wrote exists now.
    for c in &forged_claims {
        let name = c.metadata.name.as_deref().unwrap();
        let now = tenant_pvcs.get(name).await.unwrap();
        assert_eq!(
            now.spec.as_ref().unwrap().volume_name,
            None,
            "{name} got a volume"
        );
        assert_eq!(now.status.unwrap().phase.as_deref(), Some("Pending"));
    }
    for pv in s.pvs().list(&Default::default()).await.unwrap() {
        let r = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        assert_ne!(
            r.and_then(|r| r.namespace.as_deref()),
            Some(tenant_ns.as_str()),
            "PV {:?} is bound to the tenant",
            pv.metadata.name
        );
    }
    // The images are where they were.
    assert!(image_exists(&s.ceph, "kube", &busy_image).await);
    assert!(image_exists(&s.ceph, "kube", &idle_image).await);
    assert_eq!(
        spec_image(&s.pvs().get(&idle_pv).await.unwrap()),
        Some(("kube".to_string(), idle_image.clone()))
    );

    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(s.admin.clone())
        .delete(&tenant_ns, &DeleteParams::default())
        .await;
    s.cleanup().await;
}

/// A claim made for a pod's generic ephemeral volume (named `<pod>-<volume>`, owned by the
/// pod) is in use while the pod is, though no pod names it in `persistentVolumeClaim`.
///
/// The bed's Kubernetes 1.20 has the GenericEphemeralVolume feature off, so the API server
/// drops `ephemeral` from pods: the claim is made here as the ephemeral volume controller
/// makes it, for a pod whose volume is an emptyDir.
#[tokio::test]
async fn refuses_a_claim_of_a_generic_ephemeral_volume() {
    let mut s = Setup::new("migeph").await;
    let _prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "worker", "namespace": s.ns},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(s.admin.clone(), &s.ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {
            "name": "worker-scratch", "namespace": s.ns,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": "worker",
                "uid": pod.metadata.uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": s.class,
                 "resources": {"requests": {"storage": "16Mi"}}},
    }))
    .unwrap();
    let created = s.pvcs().create(&PostParams::default(), &pvc).await.unwrap();
    s.claims.push(created);
    let bound = wait_bound(&s.admin, &s.ns, "worker-scratch", T).await;
    let pv_name = format!("pvc-{}", uid_of(&bound));
    let before = s.pvs().get(&pv_name).await.unwrap();

    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(!ok, "{out}");
    let (ok, out) = s.migrate(&[]).await;
    assert!(!ok, "{out}");
    assert!(
        line_of(&out, &pv_name).contains(&format!(
            "refused: claim {}/worker-scratch is used by pod(s) worker",
            s.ns
        )),
        "{out}"
    );
    assert_untouched(&before, &s.pvs().get(&pv_name).await.unwrap());
    assert_eq!(
        s.pvs()
            .get(&pv_name)
            .await
            .unwrap()
            .metadata
            .resource_version,
        before.metadata.resource_version
    );
    assert!(backup_of(&s.admin, &pv_name).await.is_none());
    s.cleanup().await;
}

/// Names, annotations and image names are printed escaped: a PV's `spec.rbd.image` (any
/// string) and a claim's annotation (which its owner writes) carrying terminal sequences and
/// a bidi override reach the operator's terminal as visible escapes, not as control bytes.
#[tokio::test]
async fn object_text_is_printed_escaped() {
    let s = Setup::new("migesc").await;
    let evil_image = "img\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}gpj.exe";
    let pv_name = format!("pvc-{}", unique("esc"));
    let pv = s.old_pv(&pv_name, "Retain", "kube", evil_image);
    let pv: PersistentVolume = serde_json::from_value(pv).unwrap();
    s.pvs().create(&PostParams::default(), &pv).await.unwrap();
    // A claim of no class (nothing binds it) whose owner wrote the old backup annotation,
    // naming a "PV" of the class: the report quotes that name.
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {
            "name": "noisy", "namespace": s.ns,
            "annotations": {ANN_BACKUP: serde_json::to_string(&json!({
                "metadata": {"name": "pv\u{1b}[31mred\u{9b}2J\u{202e}x"},
                "spec": {"storageClassName": s.class},
            })).unwrap()},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Mi"}}},
    }))
    .unwrap();
    s.pvcs()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();

    let (ok, out) = s.migrate(&["--dry-run"]).await;
    let _ = s.pvs().delete(&pv_name, &DeleteParams::default()).await;
    assert!(ok, "{out}");
    assert!(
        !out.contains(['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}']),
        "control characters reached the terminal: {out:?}"
    );
    let l = line_of(&out, &pv_name);
    assert!(
        l.contains(r"image kube/img\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}gpj.exe)"),
        "{l}"
    );
    let l = line_of(&out, &format!("claim {}/noisy:", s.ns));
    assert!(
        l.contains(r"naming PersistentVolume pv\u{1b}[31mred\u{9b}2J\u{202e}x)"),
        "{l}"
    );
    s.cleanup().await;
}
