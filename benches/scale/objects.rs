//! What the harness itself does on the bed: the references (librbd alone, the API server
//! alone), claims created, deleted and released (their protection finalizers removed, as
//! kube-controller-manager would), PVs made and removed, annotations.

use super::*;

use serde_json::Value;

/// Makes one thing per name with `make`, 16 in flight, and times it; then removes them all
/// with `remove`, 16 in flight, whether they were made or not. How long making took, or the
/// first error making one.
async fn timed_then_removed<M, MF, R, RF>(names: &[String], make: M, remove: R) -> Result<Duration>
where
    M: Fn(String) -> MF,
    MF: std::future::Future<Output = Result<()>>,
    R: Fn(String) -> RF,
    RF: std::future::Future<Output = ()>,
{
    let t = Instant::now();
    let results: Vec<Result<()>> = stream::iter(names.iter().cloned())
        .map(make)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let took = t.elapsed();
    stream::iter(names.iter().cloned())
        .for_each_concurrent(IN_FLIGHT, remove)
        .await;
    results.into_iter().collect::<Result<()>>().map(|()| took)
}

/// A 1 GiB PV `name` of `class`, Retain, naming an image of that name that does not exist;
/// pre-bound to claim `(namespace, name)` when given.
fn retained_pv(name: &str, class: &str, claim: Option<(&str, &str)>) -> Result<PersistentVolume> {
    let mut pv = json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "rbd": {"monitors": ["127.0.0.1:6789"], "pool": "kube", "image": name, "user": "kube"},
        }
    });
    if let Some((ns, claim)) = claim {
        pv["spec"]["claimRef"] = json!({"namespace": ns, "name": claim});
    }
    Ok(serde_json::from_value(pv)?)
}

/// librbd alone: N images of `size` bytes created, 16 in flight; then removed.
pub async fn librbd_alone(cx: &Ctx, n: usize, size: u64) -> Result<Duration> {
    let names: Vec<String> = (0..n).map(|i| format!("{}-ref-{i}", cx.ns)).collect();
    let make = |name| {
        let ceph = cx.ceph.clone();
        async move {
            let spec = ImageSpec {
                pool: "kube".into(),
                name,
                size,
                data_pool: None,
                features: RBD_FEATURE_LAYERING,
            };
            ceph.create_image(&spec)
                .await
                .map(|_| ())
                .context("librbd reference: create image")
        }
    };
    let remove = |name: String| {
        let ceph = cx.ceph.clone();
        async move {
            let _ = ceph.remove_image("kube", &name).await;
        }
    };
    timed_then_removed(&names, make, remove).await
}

/// The API server alone: N PV objects (a class no one serves) created, 16 in flight; then
/// deleted.
pub async fn api_alone(cx: &Ctx, n: usize) -> Result<Duration> {
    let pvs = cx.pvs();
    let names: Vec<String> = (0..n).map(|i| format!("{}-refpv-{i}", cx.ns)).collect();
    let make = |name: String| {
        let pvs = pvs.clone();
        let class = cx.control.clone();
        async move {
            let pv = retained_pv(&name, &class, None)?;
            pvs.create(&PostParams::default(), &pv)
                .await
                .map(|_| ())
                .context("API reference: create PV")
        }
    };
    let remove = |name: String| {
        let pvs = pvs.clone();
        async move {
            let _ = pvs.delete(&name, &DeleteParams::default()).await;
        }
    };
    timed_then_removed(&names, make, remove).await
}

/// Creates a claim of our class, with the hand-over annotation already on it when `handed`
/// is set.
pub async fn create_claim(cx: &Ctx, name: &str, handed: bool, size: &str) -> Result<()> {
    let mut meta = json!({"name": name, "namespace": cx.ns});
    if handed {
        meta["annotations"] = json!({
            "volume.beta.kubernetes.io/storage-provisioner": cx.prov_name,
            "volume.kubernetes.io/storage-provisioner": cx.prov_name,
        });
    }
    let spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": cx.ours,
        "resources": {"requests": {"storage": size}},
    });
    post_claim(cx, name, meta, spec).await
}

/// Creates claim `name` with `meta`data and `spec`.
async fn post_claim(cx: &Ctx, name: &str, meta: Value, spec: Value) -> Result<()> {
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": meta, "spec": spec}))?;
    cx.pvcs()
        .create(&PostParams::default(), &pvc)
        .await
        .with_context(|| format!("create claim {name}"))?;
    Ok(())
}

/// Creates claims of `size` of our class (50 creates in flight); returns when the API server
/// accepted the last one.
pub async fn create_claims(
    cx: &Ctx,
    names: &[String],
    handed: bool,
    size: &str,
) -> Result<Duration> {
    let t = Instant::now();
    all_ok(
        stream::iter(names.iter()).map(|name| create_claim(cx, name, handed, size)),
        CREATE_IN_FLIGHT,
    )
    .await?;
    Ok(t.elapsed())
}

/// [`create_claims`] handed over, then waits until each has its PV (`per` claim, at least
/// `floor`).
pub async fn claims_with_pvs(
    cx: &Ctx,
    names: &[String],
    size: &str,
    what: &str,
    (per, floor): (Duration, Duration),
) -> Result<()> {
    create_claims(cx, names, true, size).await?;
    cx.until_all(
        what,
        scaled(names.len(), per, floor),
        |g| &g.pv_created,
        names,
    )
    .await?;
    Ok(())
}

/// Deletes a claim, then removes its `kubernetes.io/pvc-protection` finalizer, as
/// kube-controller-manager's pvc-protection controller would (no pod exists in the bench's
/// namespace), so the claim is gone at once instead of at that controller's pace. Other
/// finalizers stay; the patch carries the resourceVersion it was computed from.
pub async fn delete_and_release(cx: &Ctx, name: &str) -> Result<()> {
    delete_releasing(&cx.pvcs(), name, PVC_PROTECTION, "claim").await
}

/// Deletes `what` `name` (already gone is fine), then removes `finalizer` from it with
/// [`drop_protection`].
pub async fn delete_releasing<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
    what: &str,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(either::Either::Left(obj)) => drop_protection(api, name, finalizer, Some(obj)).await,
        Ok(either::Either::Right(_)) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("delete {what} {name}")),
    }
}

/// Removes `finalizer` from the object `name` once it is being deleted; other finalizers (the
/// provisioner's) stay. Each patch carries the resourceVersion it was computed from; a
/// conflict reads the object again. `current`: the object as just returned, if at hand.
pub async fn drop_protection<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
    mut current: Option<K>,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..10 {
        let obj = match current.take() {
            Some(o) => o,
            None => match api
                .get_opt(name)
                .await
                .with_context(|| format!("read {name}"))?
            {
                Some(o) => o,
                None => return Ok(()),
            },
        };
        let finalizers = obj.meta().finalizers.clone().unwrap_or_default();
        if obj.meta().deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<String> = finalizers.into_iter().filter(|f| f != finalizer).collect();
        let patch = json!({"metadata": {
            "finalizers": rest,
            "resourceVersion": obj.meta().resource_version,
        }});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e).with_context(|| format!("remove {finalizer} from {name}")),
        }
    }
    bail!("{name}: {finalizer} could not be removed (conflicts)")
}

/// Runs `work` while, beside it, every PV of ours the provisioner has deleted (marked for
/// deletion) loses its `kubernetes.io/pv-protection` finalizer, as kube-controller-manager's
/// pv-protection controller would drop it for a volume no pod uses (none exists in the bench's
/// namespace), so PVs leave at the provisioner's pace rather than that controller's.
pub async fn with_pv_release<T>(cx: &Ctx, work: impl std::future::Future<Output = T>) -> T {
    let releaser = async {
        let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            let todo: Vec<(String, String)> = {
                let g = cx.seen.lock().unwrap();
                g.pv_deleting
                    .keys()
                    .filter(|c| !g.pv_gone.contains_key(*c) && !done.contains(*c))
                    .filter_map(|c| Some((c.clone(), g.pv_name.get(c)?.clone())))
                    .collect()
            };
            let released: Vec<String> = stream::iter(todo)
                .map(|(claim, pv)| async move {
                    drop_protection(&cx.pvs(), &pv, PV_PROTECTION, None)
                        .await
                        .ok()
                        .map(|_| claim)
                })
                .buffer_unordered(DELETE_IN_FLIGHT)
                .filter_map(future::ready)
                .collect()
                .await;
            done.extend(released);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = work => r,
        () = releaser => unreachable!("the releaser never ends"),
    }
}

/// [`delete_and_release`] for each claim, 32 in flight; returns when the last one returned.
pub async fn delete_and_release_all(cx: &Ctx, names: &[String]) -> Result<Duration> {
    let t = Instant::now();
    all_ok(
        stream::iter(names.iter()).map(|name| delete_and_release(cx, name)),
        DELETE_IN_FLIGHT,
    )
    .await?;
    Ok(t.elapsed())
}

/// PVs (of the peer's class, Retain, naming images that do not exist) each pre-bound to a
/// claim bound to it; 50 creates in flight.
pub async fn create_pairs(cx: &Ctx, names: &[String]) -> Result<Duration> {
    let t = Instant::now();
    all_ok(
        stream::iter(names.iter()).map(|name| async move {
            let pv_name = format!("{}-{name}", cx.ns);
            let pv = retained_pv(&pv_name, &cx.peer, Some((&cx.ns, name)))?;
            cx.pvs()
                .create(&PostParams::default(), &pv)
                .await
                .with_context(|| format!("create PV {pv_name}"))?;
            small_claim(cx, name, &cx.peer, &pv_name).await
        }),
        CREATE_IN_FLIGHT,
    )
    .await?;
    Ok(t.elapsed())
}

/// A 1 GiB claim of `class` pre-bound to the PV `volume`.
pub async fn small_claim(cx: &Ctx, name: &str, class: &str, volume: &str) -> Result<()> {
    let meta = json!({"name": name, "namespace": cx.ns});
    let spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": class,
        "volumeName": volume,
        "resources": {"requests": {"storage": "1Gi"}},
    });
    post_claim(cx, name, meta, spec).await
}

/// The large annotation's key.
pub const BALLAST: &str = "bench.example.com/ballast";

/// Puts an annotation of `kib` KiB (printable, not repetitive) on each claim, 16 in flight;
/// with 0, takes it off again (so that deleting a claim writes no large revisions to etcd).
pub async fn annotate(cx: &Ctx, names: &[String], kib: usize) -> Result<Duration> {
    let t = Instant::now();
    all_ok(
        stream::iter(names.iter().enumerate()).map(|(i, name)| async move {
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let value: String = (0..kib * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect();
            let value = (kib > 0).then_some(value);
            let patch = json!({"metadata": {"annotations": {BALLAST: value}}});
            cx.pvcs()
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("annotate claim {name}"))?;
            Ok(())
        }),
        IN_FLIGHT,
    )
    .await?;
    Ok(t.elapsed())
}

/// Deletes each PV (released by then), then drops its `kubernetes.io/pv-protection`.
pub async fn delete_volumes(cx: &Ctx, names: &[String]) -> Result<()> {
    all_ok(
        stream::iter(names.iter()).map(|name| async move {
            delete_releasing(&cx.pvs(), name, PV_PROTECTION, "PV").await
        }),
        DELETE_IN_FLIGHT,
    )
    .await?;
    Ok(())
}
