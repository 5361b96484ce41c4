//! `migrate-to-csi`: rewrites the in-tree `spec.rbd` PVs of a StorageClass (ours and the old
//! external-storage provisioner's) as static ceph-csi PVs of the same name, bound to the same
//! claim, without touching the image or the claim's spec.
//!
//! A PV's volume source is immutable, so each PV is replaced, one at a time:
//! 1. refuse while a pod uses the claim;
//! 2. save the old PV as JSON in an annotation on the claim (the resume point);
//! 3. set the old PV's reclaim policy to Retain, delete it, drop its finalizers, wait until gone
//!    (the claim goes `Lost` here);
//! 4. create the csi PV, pre-bound to the claim by uid;
//! 5. wait until the claim is Bound to it again (touching the claim wakes the PV binder);
//! 6. remove the backup annotation.
//!
//! A rerun finds claims that still carry a backup and resumes from what it sees
//! ([`plan::plan`]). Decisions are pure ([`plan`]); this module does the I/O.

pub mod plan;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::error::is_status;
use crate::params::SecretRef;
use plan::{ANN_BACKUP, ANN_STEP, CsiSettings, Plan, Step};

/// `rbd-provisioner migrate-to-csi`.
#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// The StorageClass whose `spec.rbd` PVs are rewritten as ceph-csi PVs.
    #[arg(long)]
    pub storage_class: String,

    /// Print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// ceph-csi's clusterID for this Ceph cluster (default: the class's `clusterID`).
    #[arg(long)]
    pub cluster_id: Option<String>,

    /// NAMESPACE/NAME of a Secret in ceph-csi's format (`userID`, `userKey`) for
    /// nodeStageSecretRef (default: the class's `csiNodeStageSecretNamespace`/`csiNodeStageSecretName`).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub node_stage_secret: Option<String>,

    /// Our provisioner name, to recognise our PVs (default: --provisioner-name before the
    /// subcommand, i.e. ceph.com/rbd unless set).
    #[arg(long)]
    pub provisioner_name: Option<String>,

    /// Seconds to wait, per volume, for the old PV to go and for the claim to bind again.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "no ceph-csi cluster ID: pass --cluster-id (the clusterID of this Ceph cluster in ceph-csi's config) or set parameter clusterID on StorageClass {class}"
    )]
    NoClusterId { class: String },

    #[error(
        "no ceph-csi node-stage Secret: pass --node-stage-secret NAMESPACE/NAME or set parameters csiNodeStageSecretName (and csiNodeStageSecretNamespace) on StorageClass {class}"
    )]
    NoNodeStageSecret { class: String },

    #[error("--node-stage-secret {0:?} is not NAMESPACE/NAME")]
    SecretArg(String),

    #[error("ceph-csi node-stage Secret {secret} not found; create it in ceph-csi's format: kubectl -n {ns} create secret generic {name} --from-literal=userID=<ceph user without \"client.\"> --from-literal=userKey=\"$(ceph auth get-key client.<user>)\"", ns = secret.namespace, name = secret.name)]
    SecretNotFound { secret: SecretRef },

    #[error(
        "ceph-csi node-stage Secret {secret} has no {field}; ceph-csi needs userID (the Ceph user without \"client.\") and userKey (its key)"
    )]
    SecretField {
        secret: SecretRef,
        field: &'static str,
    },

    #[error(
        "ceph-csi node-stage Secret {secret}: userID must name the Ceph user without the \"client.\" prefix"
    )]
    SecretUserPrefix { secret: SecretRef },

    #[error(
        "StorageClass {0} not found: pass --cluster-id and --node-stage-secret to migrate its volumes anyway (their image will then not be deletable without the admin Secret)"
    )]
    ClassNotFound(String),

    #[error("{verb} {object}: {source}")]
    Kube {
        verb: &'static str,
        object: String,
        source: kube::Error,
    },

    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),

    #[error("{0}")]
    Conflict(String),

    #[error(
        "{refused} volume(s) refused and {failed} failed, see above; fix what they say and rerun (a rerun resumes interrupted migrations)"
    )]
    Unfinished { refused: usize, failed: usize },
}

fn kube_err(
    verb: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(kube::Error) -> MigrateError {
    let object = object.into();
    move |source| MigrateError::Kube {
        verb,
        object,
        source,
    }
}

/// What happened to one volume.
#[derive(Debug)]
enum Outcome {
    Migrated { resumed: bool },
    WouldMigrate(String),
    WouldResume(Step),
    Skipped(String),
    Refused(String),
    Failed(MigrateError),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Migrated { resumed: false } => write!(f, "migrated"),
            Outcome::Migrated { resumed: true } => {
                write!(f, "migrated (resumed an interrupted migration)")
            }
            Outcome::WouldMigrate(what) => write!(f, "would migrate: {what}"),
            Outcome::WouldResume(step) => {
                write!(f, "would resume an interrupted migration ({step})")
            }
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Failed(e) => write!(f, "failed: {e}; rerun to resume"),
        }
    }
}

/// One PV of the class, or a claim whose backup names a PV that may be gone.
#[derive(Default)]
struct Item {
    current: Option<PersistentVolume>,
    claim: Option<PersistentVolumeClaim>,
}

impl Item {
    /// `pvc-… (ns/claim, image pool/image)`
    fn label(&self, name: &str) -> String {
        let backup = self
            .claim
            .as_ref()
            .and_then(plan::backup_of)
            .and_then(Result::ok);
        let pv = self.current.as_ref().or(backup.as_ref());
        let claim = pv
            .and_then(plan::claim_key)
            .or_else(|| backup.as_ref().and_then(plan::claim_key))
            .map(|(ns, n)| format!("{ns}/{n}"))
            .or_else(|| {
                let m = &self.claim.as_ref()?.metadata;
                Some(format!(
                    "{}/{}",
                    m.namespace.as_deref()?,
                    m.name.as_deref()?
                ))
            })
            .unwrap_or_else(|| "no claim".into());
        let image = pv
            .and_then(plan::image_of)
            .or_else(|| backup.as_ref().and_then(plan::image_of))
            .map(|(p, i)| format!(", image {p}/{i}"))
            .unwrap_or_default();
        format!("{name} ({claim}{image})")
    }
}

struct Ctx {
    client: Client,
    settings: CsiSettings,
    provisioner: String,
    dry_run: bool,
    timeout: Duration,
}

/// Runs the command; prints one line per PV. Fails when any volume was refused or failed.
pub async fn run(
    client: Client,
    args: MigrateArgs,
    default_provisioner: &str,
) -> Result<(), MigrateError> {
    let class_name = args.storage_class.clone();
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class = classes
        .get_opt(&class_name)
        .await
        .map_err(kube_err("read StorageClass", &class_name))?;
    if class.is_none() && (args.cluster_id.is_none() || args.node_stage_secret.is_none()) {
        return Err(MigrateError::ClassNotFound(class_name));
    }
    let settings = plan::csi_settings(
        &class_name,
        class.as_ref(),
        args.cluster_id.as_deref(),
        args.node_stage_secret.as_deref(),
    )?;
    check_node_stage_secret(&client, &settings.node_stage_secret).await?;

    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("list", "PersistentVolumes"))?;
    let claims = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("list", "PersistentVolumeClaims"))?;
    let claim_by_key: BTreeMap<(String, String), &PersistentVolumeClaim> = claims
        .items
        .iter()
        .map(|c| {
            (
                (
                    c.metadata.namespace.clone().unwrap_or_default(),
                    c.metadata.name.clone().unwrap_or_default(),
                ),
                c,
            )
        })
        .collect();

    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let in_class = |pv: &PersistentVolume| {
        pv.spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            == Some(class_name.as_str())
    };
    // Interrupted migrations first: their PV may be gone.
    for c in &claims.items {
        match plan::backup_of(c) {
            Some(Ok(b)) if !in_class(&b) => continue,
            None => continue,
            Some(Ok(b)) => {
                let name = b.metadata.name.clone().unwrap_or_default();
                items.entry(name).or_default().claim = Some(c.clone());
            }
            // Unreadable: report it under the claim's name so that someone looks at it.
            Some(Err(_)) => {
                let name = format!(
                    "claim {}/{}",
                    c.metadata.namespace.as_deref().unwrap_or(""),
                    c.metadata.name.as_deref().unwrap_or("")
                );
                items.entry(name).or_default().claim = Some(c.clone());
            }
        }
    }
    for pv in pvs.items.into_iter().filter(in_class) {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let item = items.entry(name).or_default();
        if item.claim.is_none() {
            item.claim = plan::claim_key(&pv)
                .and_then(|k| claim_by_key.get(&k))
                .map(|c| (*c).clone());
        }
        item.current = Some(pv);
    }

    let ctx = Ctx {
        client,
        settings,
        provisioner: args
            .provisioner_name
            .clone()
            .unwrap_or_else(|| default_provisioner.to_string()),
        dry_run: args.dry_run,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let (mut refused, mut failed, mut changed) = (0, 0, 0);
    if items.is_empty() {
        println!("StorageClass {class_name}: no PersistentVolumes");
    }
    for (name, item) in &items {
        let outcome = handle(&ctx, name, item).await;
        match &outcome {
            Outcome::Refused(_) => refused += 1,
            Outcome::Failed(_) => failed += 1,
            Outcome::Migrated { .. } | Outcome::WouldMigrate(_) | Outcome::WouldResume(_) => {
                changed += 1
            }
            Outcome::Skipped(_) => {}
        }
        println!("{}: {outcome}", item.label(name));
    }
    if changed > 0
        && let Some(note) = plan::class_note(&class_name, class.as_ref())
    {
        println!("note: {note}");
    }
    if refused + failed > 0 {
        return Err(MigrateError::Unfinished { refused, failed });
    }
    Ok(())
}

async fn check_node_stage_secret(client: &Client, secret: &SecretRef) -> Result<(), MigrateError> {
    let s = Api::<Secret>::namespaced(client.clone(), &secret.namespace)
        .get_opt(&secret.name)
        .await
        .map_err(kube_err("read Secret", secret.to_string()))?
        .ok_or_else(|| MigrateError::SecretNotFound {
            secret: secret.clone(),
        })?;
    let field = |key: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
            .or_else(|| {
                s.string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|v| v.trim().to_string())
            })
            .filter(|v| !v.is_empty())
    };
    for key in ["userID", "userKey"] {
        if field(key).is_none() {
            return Err(MigrateError::SecretField {
                secret: secret.clone(),
                field: key,
            });
        }
    }
    if field("userID").is_some_and(|u| u.starts_with("client.")) {
        return Err(MigrateError::SecretUserPrefix {
            secret: secret.clone(),
        });
    }
    Ok(())
}

async fn handle(ctx: &Ctx, name: &str, item: &Item) -> Outcome {
    match plan::plan(item.current.as_ref(), item.claim.as_ref(), &ctx.provisioner) {
        Plan::Skip(why) => Outcome::Skipped(why),
        Plan::Refuse(why) => Outcome::Refused(why),
        Plan::Migrate(origin) => {
            let (Some(old), Some(claim)) = (&item.current, &item.claim) else {
                return Outcome::Skipped("nothing to migrate".into());
            };
            let new = match plan::csi_pv(old, &ctx.settings) {
                Ok(n) => n,
                Err(why) => return Outcome::Refused(format!("cannot build its csi PV: {why}")),
            };
            if let Some(why) = in_use(ctx, claim).await {
                return why;
            }
            if ctx.dry_run {
                return Outcome::WouldMigrate(format!(
                    "{origin}; {}",
                    plan::describe(&new, &ctx.settings)
                ));
            }
            match migrate(ctx, name, claim, Some(old), &new, Step::DeleteOld, true).await {
                Ok(()) => Outcome::Migrated { resumed: false },
                Err(e) => Outcome::Failed(e),
            }
        }
        Plan::Resume { step, backup } => {
            let Some(claim) = &item.claim else {
                return Outcome::Skipped("nothing to resume".into());
            };
            let new = match plan::csi_pv(&backup, &ctx.settings) {
                Ok(n) => n,
                Err(why) => {
                    return Outcome::Refused(format!(
                        "cannot build its csi PV from the backup: {why}"
                    ));
                }
            };
            if step == Step::DeleteOld
                && let Some(why) = in_use(ctx, claim).await
            {
                return why;
            }
            if ctx.dry_run {
                return Outcome::WouldResume(step);
            }
            match migrate(ctx, name, claim, item.current.as_ref(), &new, step, false).await {
                Ok(()) => Outcome::Migrated { resumed: true },
                Err(e) => Outcome::Failed(e),
            }
        }
    }
}

/// `Some(refusal)` while a pod that has not finished names the claim.
async fn in_use(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Option<Outcome> {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let pods = match Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await
    {
        Ok(p) => p.items,
        Err(e) => return Some(Outcome::Failed(kube_err("list pods in", ns)(e))),
    };
    let users = plan::pods_using(&pods, &name);
    (!users.is_empty()).then(|| {
        Outcome::Refused(format!(
            "claim {ns}/{name} is used by pod(s) {}; stop them (e.g. scale their Deployment or StatefulSet to 0), then rerun",
            users.join(", ")
        ))
    })
}

/// Steps 2–6, from `from` on. `save_backup` is step 2 (a fresh migration).
async fn migrate(
    ctx: &Ctx,
    name: &str,
    claim: &PersistentVolumeClaim,
    old: Option<&PersistentVolume>,
    new: &PersistentVolume,
    from: Step,
    save_backup: bool,
) -> Result<(), MigrateError> {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let object = format!("claim {ns}/{claim_name}");
    let mut step = from;

    if save_backup {
        let old =
            old.ok_or_else(|| MigrateError::Conflict(format!("PersistentVolume {name} vanished")))?;
        let patch = json!({"metadata": {
            "uid": claim.metadata.uid,
            "annotations": {ANN_BACKUP: plan::backup_json(old), ANN_STEP: "backup-saved"},
        }});
        claims
            .patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err("save the backup annotation on", &object))?;
        tracing::debug!(pv = name, claim = %object, "backup saved");
    }

    if step == Step::DeleteOld {
        if let Some(old) = old {
            delete_old(ctx, &pvs, old).await?;
        }
        step = Step::CreateNew;
    }

    if step == Step::CreateNew {
        match pvs.create(&PostParams::default(), new).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {
                let existing = pvs
                    .get(name)
                    .await
                    .map_err(kube_err("read PersistentVolume", name))?;
                let handle = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.csi.as_ref())
                    .map(|c| c.volume_handle.as_str());
                let want = new
                    .spec
                    .as_ref()
                    .and_then(|s| s.csi.as_ref())
                    .map(|c| c.volume_handle.as_str());
                if handle != want {
                    return Err(MigrateError::Conflict(format!(
                        "a PersistentVolume {name} appeared that is not the csi volume of its image; the backup stays on {object}"
                    )));
                }
            }
            Err(e) => return Err(kube_err("create PersistentVolume", name)(e)),
        }
        tracing::debug!(pv = name, "csi PV created");
    }

    await_bound(ctx, &claims, &pvs, &claim_name, name).await?;
    let patch = json!({"metadata": {"annotations": {ANN_BACKUP: null, ANN_STEP: null}}});
    claims
        .patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("remove the backup annotation from", &object))?;
    Ok(())
}

/// Step 3: Retain first (nothing may delete the image), then delete, then drop the finalizers
/// (in this order: a Bound PV whose finalizers are dropped before the deletion gets
/// `kubernetes.io/pv-protection` back at once and then stays Terminating while its claim lives).
async fn delete_old(
    ctx: &Ctx,
    pvs: &Api<PersistentVolume>,
    old: &PersistentVolume,
) -> Result<(), MigrateError> {
    let name = old.metadata.name.clone().unwrap_or_default();
    let uid = old.metadata.uid.clone();
    let gone = |e: &kube::Error| is_status(e, 404) || is_status(e, 409);
    let retain =
        json!({"metadata": {"uid": uid}, "spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    match pvs
        .patch(&name, &PatchParams::default(), &Patch::Merge(&retain))
        .await
    {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => {
            return Err(kube_err(
                "set reclaim policy Retain on PersistentVolume",
                &name,
            )(e));
        }
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pvs.delete(&name, &dp).await {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => return Err(kube_err("delete PersistentVolume", &name)(e)),
    }
    let drop_finalizers = json!({"metadata": {"uid": uid, "finalizers": null}});
    match pvs
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&drop_finalizers),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => return Err(kube_err("remove the finalizers of PersistentVolume", &name)(e)),
    }
    let started = Instant::now();
    loop {
        let cur = pvs
            .get_opt(&name)
            .await
            .map_err(kube_err("read PersistentVolume", &name))?;
        if cur.is_none_or(|p| p.metadata.uid != uid) {
            tracing::debug!(pv = %name, "old PV gone");
            return Ok(());
        }
        if started.elapsed() > ctx.timeout {
            return Err(MigrateError::Timeout(
                ctx.timeout,
                format!("PersistentVolume {name} to go"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Step 5: the PV binder rebinds the Lost claim when it next syncs it, by itself at its
/// periodic resync (`--pvclaimbinder-sync-period`, 15 s by default); an update of the claim
/// (the step annotation) makes that happen within milliseconds.
async fn await_bound(
    ctx: &Ctx,
    claims: &Api<PersistentVolumeClaim>,
    pvs: &Api<PersistentVolume>,
    claim_name: &str,
    pv: &str,
) -> Result<(), MigrateError> {
    let started = Instant::now();
    let mut nudged: Option<Instant> = None;
    let mut nudged_after_pv_bound = false;
    let mut attempt = 0u32;
    loop {
        let c = claims
            .get(claim_name)
            .await
            .map_err(kube_err("read claim", claim_name))?;
        let claim_bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv);
        // The claim alone is not enough: right after the swap it may still show the old
        // binding, before the binder has even seen the old PV go. Once the binder has marked
        // the new PV Bound it knows both, and keeps the claim Bound.
        let pv_bound = pvs
            .get_opt(pv)
            .await
            .map_err(kube_err("read PersistentVolume", pv))?
            .and_then(|p| p.status?.phase)
            .as_deref()
            == Some("Bound");
        if claim_bound && pv_bound {
            tracing::debug!(pv, claim = claim_name, elapsed = ?started.elapsed(), "claim Bound again");
            return Ok(());
        }
        if started.elapsed() > ctx.timeout {
            return Err(MigrateError::Timeout(
                ctx.timeout,
                format!(
                    "claim {claim_name} to be Bound to the csi PersistentVolume {pv} (it exists)"
                ),
            ));
        }
        // A claim update that reaches the binder before it has the new PV in its cache
        // changes nothing: touch the claim again once the PV is Bound, and every second.
        let due = nudged.is_none_or(|t| t.elapsed() > Duration::from_secs(1))
            || (pv_bound && !nudged_after_pv_bound);
        if due {
            attempt += 1;
            let patch = json!({"metadata": {"annotations": {ANN_STEP: format!("csi-pv-created, waiting for bind ({attempt})")}}});
            claims
                .patch(claim_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err("annotate claim", claim_name))?;
            nudged = Some(Instant::now());
            nudged_after_pv_bound |= pv_bound;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
