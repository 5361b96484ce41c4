//! What a migration must leave, and what it must not touch: the csi PV that replaces the old
//! one, the claims' phases watched meanwhile, and PVs that are not migrated.

use super::*;

/// Records each phase change of the claims of a namespace, from a watch (so that a Lost
/// phase of a few milliseconds is seen too), until stopped.
pub struct PhaseLog {
    pub log: Arc<Mutex<Vec<(Duration, String, String)>>>,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

impl PhaseLog {
    pub async fn start(api: Api<PersistentVolumeClaim>) -> PhaseLog {
        use futures::TryStreamExt;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let l = log.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            let mut ready_tx = Some(ready_tx);
            let stream = kube::runtime::watcher(api, Default::default());
            futures::pin_mut!(stream);
            loop {
                let ev = tokio::select! {
                    _ = stopped.changed() => break,
                    ev = stream.try_next() => ev,
                };
                let objs = match ev {
                    Ok(Some(kube::runtime::watcher::Event::Apply(c)))
                    | Ok(Some(kube::runtime::watcher::Event::InitApply(c))) => vec![c],
                    Ok(Some(kube::runtime::watcher::Event::InitDone)) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                        vec![]
                    }
                    Ok(Some(kube::runtime::watcher::Event::Delete(_)))
                    | Ok(Some(kube::runtime::watcher::Event::Init)) => vec![],
                    // A watch error means a re-list, across which a Lost of a few
                    // milliseconds can be missed: recorded, and the test fails on it.
                    Ok(None) | Err(_) => {
                        l.lock().unwrap().push((
                            start.elapsed(),
                            String::new(),
                            format!("watch error or end: {ev:?}"),
                        ));
                        vec![]
                    }
                };
                // Every update (not only phase changes), so the test can tell that the watch
                // saw the migration touch the claim.
                for c in objs {
                    let n = c.metadata.name.clone().unwrap_or_default();
                    let rv = c.metadata.resource_version.clone().unwrap_or_default();
                    let phase = c.status.and_then(|s| s.phase).unwrap_or_default();
                    if last.get(&n) != Some(&rv) {
                        l.lock().unwrap().push((start.elapsed(), n.clone(), phase));
                        last.insert(n, rv);
                    }
                }
            }
        });
        tokio::time::timeout(T, ready)
            .await
            .expect("the claims watch listed the namespace")
            .expect("the claims watch listed the namespace");
        PhaseLog { log, stop, task }
    }

    pub async fn finish(self) -> Vec<(Duration, String, String)> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.log.lock().unwrap().clone()
    }
}

/// How long `claim` was Lost, from a phase log. The watch must have seen it Bound first, then
/// the migration's own updates of it (the step annotation), and, if it saw it Lost, Bound again
/// after; no watch error in between (a re-list could hide a short Lost). `None`: the watch,
/// which saw every update, never saw it Lost (the binder synced the claim only once the csi PV
/// existed).
pub fn lost_for(
    log: &[(Duration, String, String)],
    claim: &str,
) -> Result<Option<Duration>, String> {
    if let Some(e) = log.iter().find(|(_, n, _)| n.is_empty()) {
        return Err(format!("the watch failed: {e:?}"));
    }
    let mine: Vec<_> = log.iter().filter(|(_, n, _)| n == claim).collect();
    if mine.first().map(|(_, _, p)| p.as_str()) != Some("Bound") {
        return Err(format!("not seen Bound first: {mine:?}"));
    }
    if mine.len() < 2 {
        return Err(format!("the watch saw no update of the claim: {mine:?}"));
    }
    let Some(lost) = mine.iter().position(|(_, _, p)| p == "Lost") else {
        return Ok(None);
    };
    let back = mine[lost..]
        .iter()
        .find(|(_, _, p)| p == "Bound")
        .ok_or_else(|| format!("not Bound again after Lost: {mine:?}"))?;
    Ok(Some(back.0 - mine[lost].0))
}

pub async fn assert_migrated(
    s: &Setup,
    before: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    pool: &str,
    image: &str,
) {
    let name = before.metadata.name.clone().unwrap();
    let claim_name = claim.metadata.name.clone().unwrap();
    let bound = wait_bound(&s.admin, &s.ns, &claim_name, T).await;
    assert_eq!(
        bound.metadata.uid, claim.metadata.uid,
        "the same claim, not a new one"
    );
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(name.as_str())
    );
    let ann = bound.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !ann.contains_key(ANN_BACKUP) && !ann.contains_key(ANN_STEP),
        "claim annotations removed: {ann:?}"
    );
    assert!(
        backup_of(&s.admin, &name).await.is_none(),
        "backup ConfigMap removed"
    );

    let after = s.pvs().get(&name).await.unwrap();
    assert_ne!(
        after.metadata.uid, before.metadata.uid,
        "the PV object was replaced"
    );
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Bound")
    );
    let (b, a) = (before.spec.clone().unwrap(), after.spec.clone().unwrap());
    assert_eq!(a.capacity, b.capacity);
    assert_eq!(a.access_modes, b.access_modes);
    assert_eq!(
        a.persistent_volume_reclaim_policy,
        b.persistent_volume_reclaim_policy
    );
    assert_eq!(a.storage_class_name, b.storage_class_name);
    assert_eq!(a.volume_mode, b.volume_mode);
    let (bc, ac) = (b.claim_ref.unwrap(), a.claim_ref.unwrap());
    assert_eq!(
        (ac.namespace, ac.name, ac.uid),
        (bc.namespace, bc.name, bc.uid)
    );
    assert!(a.rbd.is_none());
    let csi = a.csi.expect("spec.csi");
    assert_eq!(csi.driver, s.driver);
    assert_eq!(csi.volume_handle, image);
    assert_eq!(csi.fs_type.as_deref(), Some("ext4"));
    let attrs = csi.volume_attributes.unwrap();
    assert_eq!(attrs["clusterID"], CLUSTER_ID);
    assert_eq!(attrs["pool"], pool);
    assert_eq!(attrs["staticVolume"], "true");
    assert_eq!(attrs["imageFeatures"], "layering");
    let nss = csi.node_stage_secret_ref.unwrap();
    assert_eq!(
        (nss.namespace.as_deref(), nss.name.as_deref()),
        (Some(s.ns.as_str()), Some("csi-rbd-node"))
    );

    let ann = after.metadata.annotations.clone().unwrap();
    let old_ann = before.metadata.annotations.clone().unwrap();
    for (k, v) in &old_ann {
        assert_eq!(ann.get(k), Some(v), "annotation {k} kept");
    }
    assert_eq!(ann[ANN_MONITORS], s.bed.monitors);
    assert_eq!(ann[ANN_POOL], pool);
    assert_eq!(ann[ANN_IMAGE], image);
    assert_eq!(ann[ANN_ADMIN_ID], "admin");
    assert_eq!(ann[ANN_ADMIN_SECRET], format!("kube-system/{}-admin", s.ns));
    assert!(
        after
            .metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .contains(&FINALIZER.to_string())
    );
}

/// What must not change on a PV that is not migrated: same object, same volume source,
/// same claim, same finalizers, same policy, not being deleted.
pub fn assert_untouched(before: &PersistentVolume, now: &PersistentVolume) {
    let name = before.metadata.name.as_deref().unwrap();
    assert_eq!(now.metadata.uid, before.metadata.uid, "{name} replaced");
    assert!(
        now.metadata.deletion_timestamp.is_none(),
        "{name} being deleted"
    );
    assert_eq!(
        now.metadata.finalizers, before.metadata.finalizers,
        "{name}'s finalizers"
    );
    assert!(
        now.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "kubernetes.io/pv-protection"),
        "{name} keeps pv-protection"
    );
    let (b, n) = (before.spec.clone().unwrap(), now.spec.clone().unwrap());
    assert_eq!(n.rbd, b.rbd, "{name}'s volume source");
    assert!(n.csi.is_none());
    assert_eq!(n.claim_ref, b.claim_ref, "{name}'s claim");
    assert_eq!(
        n.persistent_volume_reclaim_policy,
        b.persistent_volume_reclaim_policy
    );
}
