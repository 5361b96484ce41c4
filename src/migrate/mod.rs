//! `migrate-to-csi`: rewrites the in-tree `spec.rbd` PVs of a StorageClass (ours and the old
//! external-storage provisioner's) as static ceph-csi PVs of the same name, bound to the same
//! claim, without touching the image or the claim's spec.
//!
//! A PV's volume source is immutable, so each PV is replaced, one at a time:
//! 1. refuse while a pod uses the claim (directly or as a generic ephemeral volume);
//! 2. save the old PV in a ConfigMap named after it, in a namespace only administrators write
//!    (`--backup-namespace`): the resume point;
//! 3. set the old PV's reclaim policy to Retain, delete it, drop its finalizers, wait until gone
//!    (the claim goes `Lost` here);
//! 4. create the csi PV, pre-bound to the claim by uid;
//! 5. wait until the claim is Bound to it again (touching the claim wakes the PV binder);
//! 6. delete the backup.
//!
//! Before each change the live claim and PV are read again and must still agree with the old
//! PV (claim namespace, name and uid, its `volumeName`, the image: [`migration::Identity`]);
//! otherwise that volume stops there and is reported refused. Claims are trusted for their
//! identity only: nothing written on them is read back. A rerun finds the backups and resumes
//! from what it sees. Decisions are pure ([`migration`]); this module does the I/O.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::domain::migration::{
    self, ANN_BACKUP, ANN_STEP, CsiSettings, Identity, Plan, SettingsError, Step,
};
use crate::domain::params::{self, SecretRef};
use crate::domain::reclaim::spec_image;
use crate::error::{Error, SecretRole, is_status};

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

    /// Namespace of the backup ConfigMaps (the resume points); only administrators may write
    /// in it.
    #[arg(long, default_value = "kube-system")]
    pub backup_namespace: String,

    /// Seconds to wait, per volume, for the old PV to go and for the claim to bind again.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Settings(#[from] SettingsError),

    #[error("ceph-csi node-stage Secret {secret} not found; create it in ceph-csi's format: kubectl -n {ns} create secret generic {name} --from-literal=userID=<ceph user without \"client.\"> --from-literal=userKey=\"$(ceph auth get-key client.<user>)\"", ns = secret.namespace, name = secret.name)]
    SecretNotFound { secret: SecretRef },

    #[error(
        "ceph-csi node-stage Secret {secret}: your kubeconfig may not read it; run migrate-to-csi as a cluster administrator"
    )]
    SecretForbidden { secret: SecretRef },

    #[error(
        "StorageClass {0} not found: pass --cluster-id and --node-stage-secret to migrate its volumes anyway (their image will then not be deletable without the admin Secret)"
    )]
    ClassNotFound(String),

    /// Boxed: the provisioner's error is large, and these travel through every step.
    #[error(transparent)]
    Provisioner(Box<Error>),

    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),

    #[error("{0}")]
    Conflict(String),

    /// The live objects no longer agree with the migration: nothing more is changed.
    #[error("{0}")]
    Refused(String),

    #[error(
        "{refused} volume(s) refused and {failed} failed, see above; fix what they say and rerun (a rerun resumes interrupted migrations)"
    )]
    Unfinished { refused: usize, failed: usize },
}

impl From<Error> for MigrateError {
    fn from(e: Error) -> Self {
        MigrateError::Provisioner(Box::new(e))
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

/// One PV of the class, and/or the backup of one (whose PV may be gone).
#[derive(Default)]
struct Item {
    current: Option<PersistentVolume>,
    backup: Option<Result<PersistentVolume, String>>,
}

impl Item {
    /// `pvc-… (ns/claim, image pool/image)`
    fn label(&self, name: &str) -> String {
        let backup = self.backup.as_ref().and_then(|b| b.as_ref().ok());
        let pv = backup.or(self.current.as_ref());
        let claim = pv
            .and_then(migration::claim_key)
            .map(|(ns, n)| format!("{ns}/{n}"))
            .unwrap_or_else(|| "no claim".into());
        let image = pv
            .and_then(spec_image)
            .map(|(p, i)| format!(", image {p}/{i}"))
            .unwrap_or_default();
        format!("{name} ({claim}{image})")
    }
}

struct Ctx {
    client: Client,
    settings: CsiSettings,
    provisioner: String,
    backup_namespace: String,
    dry_run: bool,
    timeout: Duration,
}

impl Ctx {
    fn pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn claims(&self, ns: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn backups(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.backup_namespace)
    }

    /// `ns/name` of the backup of PV `pv`.
    fn backup_label(&self, pv: &str) -> String {
        format!(
            "{}/{}",
            self.backup_namespace,
            migration::backup_name(pv).unwrap_or_default()
        )
    }
}

/// Runs the command; prints one line per PV. Fails when any volume was refused or failed.
pub async fn run(
    client: Client,
    args: MigrateArgs,
    default_provisioner: &str,
) -> Result<(), MigrateError> {
    let class_name = args.storage_class.clone();
    let class = Api::<StorageClass>::all(client.clone())
        .get_opt(&class_name)
        .await
        .map_err(Error::kube("read StorageClass", &class_name))?;
    if class.is_none() && (args.cluster_id.is_none() || args.node_stage_secret.is_none()) {
        return Err(MigrateError::ClassNotFound(class_name));
    }
    // The same parser, defaults and checks as the controllers.
    let class_params = class
        .as_ref()
        .map(|c| params::parse(&c.parameters.clone().unwrap_or_default()))
        .transpose()
        .map_err(|source| Error::Params {
            class: class_name.clone(),
            source,
        })?;
    let settings = migration::csi_settings(
        &class_name,
        class_params.as_ref(),
        args.cluster_id.as_deref(),
        args.node_stage_secret.as_deref(),
    )?;
    check_node_stage_secret(&client, &settings.node_stage_secret).await?;

    let ctx = Ctx {
        client,
        settings,
        provisioner: args
            .provisioner_name
            .clone()
            .unwrap_or_else(|| default_provisioner.to_string()),
        backup_namespace: args.backup_namespace.clone(),
        dry_run: args.dry_run,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let pvs = ctx
        .pvs()
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "PersistentVolumes"))?;
    let claims = Api::<PersistentVolumeClaim>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "PersistentVolumeClaims"))?;
    let backups = ctx
        .backups()
        .list(&ListParams::default().labels(migration::BACKUP_LABEL))
        .await
        .map_err(Error::kube(
            "list backup ConfigMaps in namespace",
            &ctx.backup_namespace,
        ))?;
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
    let pv_by_name: BTreeMap<&str, &PersistentVolume> = pvs
        .items
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p)))
        .collect();

    let in_class = |pv: &PersistentVolume| {
        pv.spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            == Some(class_name.as_str())
    };
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    // Interrupted migrations: their PV may be gone, or already csi.
    for cm in &backups.items {
        let Some(pv_name) = migration::backed_up_pv(cm) else {
            continue;
        };
        let backup = migration::backup_of(cm);
        if backup.as_ref().is_ok_and(|b| !in_class(b)) {
            continue;
        }
        let item = items.entry(pv_name.to_string()).or_default();
        item.current = pv_by_name.get(pv_name).map(|p| (*p).clone());
        item.backup = Some(backup);
    }
    for pv in pvs.items.iter().filter(|p| in_class(p)) {
        let name = pv.metadata.name.clone().unwrap_or_default();
        items.entry(name).or_default().current = Some(pv.clone());
    }

    let (mut refused, mut failed, mut changed) = (0, 0, 0);
    if items.is_empty() {
        println!("StorageClass {class_name}: no PersistentVolumes");
    }
    for (name, item) in &items {
        let outcome = handle(&ctx, name, item, &claim_by_key).await;
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
    for c in &claims.items {
        if let Some(note) = migration::stale_claim_note(c, &class_name) {
            println!(
                "claim {}/{}: {note}",
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default()
            );
        }
    }
    if changed > 0
        && let Some(note) = migration::class_note(&class_name, class_params.as_ref())
    {
        println!("note: {note}");
    }
    if refused + failed > 0 {
        return Err(MigrateError::Unfinished { refused, failed });
    }
    Ok(())
}

async fn check_node_stage_secret(client: &Client, secret: &SecretRef) -> Result<(), MigrateError> {
    crate::k8s::check_secret(
        client,
        SecretRole::CsiNodeStage,
        secret,
        "",
        "",
        &[
            (
                "userID",
                "ceph-csi needs userID (the Ceph user without \"client.\") and userKey (its key)",
            ),
            (
                "userKey",
                "ceph-csi needs userID (the Ceph user without \"client.\") and userKey (its key)",
            ),
        ],
    )
    .await
    .map_err(|e| match e {
        Error::SecretNotFound { .. } => MigrateError::SecretNotFound {
            secret: secret.clone(),
        },
        Error::SecretForbidden { .. } => MigrateError::SecretForbidden {
            secret: secret.clone(),
        },
        other => other.into(),
    })
}

async fn handle(
    ctx: &Ctx,
    name: &str,
    item: &Item,
    claims: &BTreeMap<(String, String), &PersistentVolumeClaim>,
) -> Outcome {
    let fix = |what: &str| {
        format!(
            "{what}; compare its backup (kubectl -n {} get configmap {} -o yaml) with the PV and the claim, repair by hand, then delete that ConfigMap",
            ctx.backup_namespace,
            migration::backup_name(name).unwrap_or_default()
        )
    };
    match &item.backup {
        Some(Err(why)) => Outcome::Refused(fix(&format!("its backup is unusable ({why})"))),
        Some(Ok(backup)) => {
            let id = match Identity::of(backup) {
                Ok(id) => id,
                Err(why) => return Outcome::Refused(fix(&why)),
            };
            let step = match id.locate(item.current.as_ref()) {
                Ok(s) => s,
                Err(why) => return Outcome::Refused(fix(&why)),
            };
            let claim = claims.get(&(id.claim_namespace.clone(), id.claim.clone()));
            if let Err(why) = id.check_claim(claim.copied()) {
                return Outcome::Refused(fix(&why));
            }
            let claim = claim.expect("checked");
            if step == Step::DeleteOld
                && let Some(why) = in_use(ctx, claim).await
            {
                return why;
            }
            // From the backup: the live PV is the same object (checked by uid, image and
            // claim), but the interrupted run may already have set it to Retain.
            let new = match migration::csi_pv(backup, &ctx.settings) {
                Ok(n) => n,
                Err(why) => {
                    return Outcome::Refused(fix(&format!("cannot build its csi PV: {why}")));
                }
            };
            if ctx.dry_run {
                return Outcome::WouldResume(step);
            }
            outcome(finish(ctx, &id, &new, step).await, true)
        }
        None => {
            let Some(pv) = &item.current else {
                return Outcome::Skipped("nothing to migrate".into());
            };
            let claim = migration::claim_key(pv).and_then(|k| claims.get(&k).copied());
            let (origin, id) = match migration::plan(pv, claim, &ctx.provisioner) {
                Plan::Skip(why) => return Outcome::Skipped(why),
                Plan::Refuse(why) => return Outcome::Refused(why),
                Plan::Migrate(origin, id) => (origin, id),
            };
            let Some(claim) = claim else {
                return Outcome::Skipped("no claim".into());
            };
            let new = match migration::csi_pv(pv, &ctx.settings) {
                Ok(n) => n,
                Err(why) => return Outcome::Refused(format!("cannot build its csi PV: {why}")),
            };
            if let Some(why) = in_use(ctx, claim).await {
                return why;
            }
            if ctx.dry_run {
                return Outcome::WouldMigrate(format!(
                    "{origin}; {}",
                    migration::describe(&new, &ctx.settings)
                ));
            }
            if let Err(e) = save_backup(ctx, pv).await {
                return Outcome::Failed(e);
            }
            failpoint("backup", &id.pv);
            outcome(finish(ctx, &id, &new, Step::DeleteOld).await, false)
        }
    }
}

fn outcome(result: Result<(), MigrateError>, resumed: bool) -> Outcome {
    match result {
        Ok(()) => Outcome::Migrated { resumed },
        Err(MigrateError::Refused(why)) => Outcome::Refused(why),
        Err(e) => Outcome::Failed(e),
    }
}

/// The pods of the claim's namespace that use it, if any.
async fn users(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Result<Vec<String>, MigrateError> {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list pods in namespace", &ns))?;
    Ok(migration::pods_using(&pods.items, claim))
}

fn in_use_refusal(claim: &PersistentVolumeClaim, users: &[String]) -> String {
    format!(
        "claim {}/{} is used by pod(s) {}; stop them (e.g. scale their Deployment or StatefulSet to 0), then rerun",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default(),
        users.join(", ")
    )
}

/// `Some(refusal)` while a pod that has not finished uses the claim.
async fn in_use(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Option<Outcome> {
    match users(ctx, claim).await {
        Err(e) => Some(Outcome::Failed(e)),
        Ok(u) if u.is_empty() => None,
        Ok(u) => Some(Outcome::Refused(in_use_refusal(claim, &u))),
    }
}

/// Step 2: the old PV, in a ConfigMap named after it that only administrators can write.
async fn save_backup(ctx: &Ctx, pv: &PersistentVolume) -> Result<(), MigrateError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let cm =
        migration::backup_config_map(pv, &ctx.backup_namespace).map_err(MigrateError::Refused)?;
    let label = ctx.backup_label(&name);
    match ctx.backups().create(&PostParams::default(), &cm).await {
        Ok(_) => {}
        // Another run got here first: fine if it saved this very PV object.
        Err(e) if is_status(&e, 409) => {
            let existing = ctx
                .backups()
                .get(&migration::backup_name(&name).unwrap_or_default())
                .await
                .map_err(Error::kube("read ConfigMap", &label))?;
            let same = migration::backup_of(&existing)
                .is_ok_and(|b| b.metadata.uid.is_some() && b.metadata.uid == pv.metadata.uid);
            if !same {
                return Err(MigrateError::Conflict(format!(
                    "ConfigMap {label} already exists and is not the backup of this PersistentVolume; look at it, delete it if it is stale, and rerun"
                )));
            }
        }
        Err(e) => return Err(Error::kube("create backup ConfigMap", &label)(e).into()),
    }
    tracing::debug!(pv = name, backup = %label, "backup saved");
    Ok(())
}

/// Reads the claim and the PV again: they must still agree with the migration. Returns where
/// it stands, and the live claim.
async fn recheck(ctx: &Ctx, id: &Identity) -> Result<(Step, PersistentVolumeClaim), MigrateError> {
    let claim = ctx
        .claims(&id.claim_namespace)
        .get_opt(&id.claim)
        .await
        .map_err(Error::kube("read claim", id.claim_label()))?;
    let live = ctx
        .pvs()
        .get_opt(&id.pv)
        .await
        .map_err(Error::kube("read PersistentVolume", &id.pv))?;
    let stop = |why: String| {
        MigrateError::Refused(format!(
            "stopped: {why}. Nothing more was changed; the old PV is saved in ConfigMap {}: compare it with the claim and the PV, repair by hand, then delete that ConfigMap",
            ctx.backup_label(&id.pv)
        ))
    };
    let step = id.locate(live.as_ref()).map_err(stop)?;
    id.check_claim(claim.as_ref()).map_err(stop)?;
    Ok((step, claim.expect("checked")))
}

/// Refuses when a pod uses the claim (before the PV is deleted, and before its
/// `kubernetes.io/pv-protection` finalizer goes).
async fn refuse_in_use(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Result<(), MigrateError> {
    let u = users(ctx, claim).await?;
    if u.is_empty() {
        return Ok(());
    }
    Err(MigrateError::Refused(format!(
        "{}. The old PV may be set to Retain already; its backup is kept and a rerun goes on",
        in_use_refusal(claim, &u)
    )))
}

/// Steps 3–6, from `from` on.
async fn finish(
    ctx: &Ctx,
    id: &Identity,
    new: &PersistentVolume,
    from: Step,
) -> Result<(), MigrateError> {
    let mut step = from;
    if step == Step::DeleteOld {
        step = delete_old(ctx, id).await?;
    }
    if step == Step::CreateNew {
        create_new(ctx, id, new).await?;
    }
    await_bound(ctx, id).await?;
    recheck(ctx, id).await?;
    let patch = json!({"metadata": {
        "uid": id.claim_uid,
        "annotations": {ANN_BACKUP: null, ANN_STEP: null},
    }});
    ctx.claims(&id.claim_namespace)
        .patch(&id.claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(
            "remove the migration annotations from claim",
            id.claim_label(),
        ))?;
    let label = ctx.backup_label(&id.pv);
    match ctx
        .backups()
        .delete(
            &migration::backup_name(&id.pv).unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(Error::kube("delete the backup ConfigMap", &label)(e).into()),
    }
    Ok(())
}

/// Step 3: Retain first (nothing may delete the image), then delete, then drop the finalizers
/// (in this order: a Bound PV whose finalizers are dropped before the deletion gets
/// `kubernetes.io/pv-protection` back at once and then stays Terminating while its claim lives).
/// Each change is preceded by a recheck, and conditioned on the old PV object's uid. Returns
/// the step reached.
async fn delete_old(ctx: &Ctx, id: &Identity) -> Result<Step, MigrateError> {
    let pvs = ctx.pvs();
    let name = &id.pv;
    let uid = id.pv_uid.clone();
    let gone = |e: &kube::Error| is_status(e, 404) || is_status(e, 409);

    let (step, claim) = recheck(ctx, id).await?;
    if step != Step::DeleteOld {
        return Ok(step);
    }
    refuse_in_use(ctx, &claim).await?;
    let retain =
        json!({"metadata": {"uid": uid}, "spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    match pvs
        .patch(name, &PatchParams::default(), &Patch::Merge(&retain))
        .await
    {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => {
            return Err(
                Error::kube("set reclaim policy Retain on PersistentVolume", name)(e).into(),
            );
        }
    }
    failpoint("retain", name);

    let (step, claim) = recheck(ctx, id).await?;
    if step != Step::DeleteOld {
        return Ok(step);
    }
    refuse_in_use(ctx, &claim).await?;
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pvs.delete(name, &dp).await {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => return Err(Error::kube("delete PersistentVolume", name)(e).into()),
    }
    failpoint("delete", name);

    let (step, claim) = recheck(ctx, id).await?;
    if step != Step::DeleteOld {
        return Ok(step);
    }
    // Dropping the finalizers includes kubernetes.io/pv-protection: never while in use.
    refuse_in_use(ctx, &claim).await?;
    let drop_finalizers = json!({"metadata": {"uid": uid, "finalizers": null}});
    match pvs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&drop_finalizers),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => {
            return Err(Error::kube("remove the finalizers of PersistentVolume", name)(e).into());
        }
    }
    let started = Instant::now();
    loop {
        let cur = pvs
            .get_opt(name)
            .await
            .map_err(Error::kube("read PersistentVolume", name))?;
        if cur.is_none_or(|p| p.metadata.uid != uid) {
            tracing::debug!(pv = %name, "old PV gone");
            return Ok(Step::CreateNew);
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

/// Step 4: the csi PV, once the old one is gone and the claim is still the one it belongs to.
async fn create_new(ctx: &Ctx, id: &Identity, new: &PersistentVolume) -> Result<(), MigrateError> {
    let name = &id.pv;
    match recheck(ctx, id).await?.0 {
        Step::CreateNew => {}
        Step::AwaitBound => return Ok(()),
        Step::DeleteOld => {
            return Err(MigrateError::Conflict(format!(
                "PersistentVolume {name} is still the rbd volume; rerun"
            )));
        }
    }
    match ctx.pvs().create(&PostParams::default(), new).await {
        Ok(_) => {}
        // Created meanwhile: only the csi volume of this image and claim will do.
        Err(e) if is_status(&e, 409) => {
            if recheck(ctx, id).await?.0 != Step::AwaitBound {
                return Err(MigrateError::Conflict(format!(
                    "a PersistentVolume {name} appeared that is not the csi volume of its image; the backup stays in ConfigMap {}",
                    ctx.backup_label(name)
                )));
            }
        }
        Err(e) => return Err(Error::kube("create PersistentVolume", name)(e).into()),
    }
    tracing::debug!(pv = %name, "csi PV created");
    failpoint("create", name);
    Ok(())
}

/// Step 5: the PV binder rebinds the Lost claim when it next syncs it, by itself at its
/// periodic resync (`--pvclaimbinder-sync-period`, 15 s by default); an update of the claim
/// (the step annotation) makes that happen within milliseconds.
async fn await_bound(ctx: &Ctx, id: &Identity) -> Result<(), MigrateError> {
    let claims = ctx.claims(&id.claim_namespace);
    let pvs = ctx.pvs();
    let (claim_name, pv) = (id.claim.as_str(), id.pv.as_str());
    let started = Instant::now();
    let mut nudged: Option<Instant> = None;
    let mut nudged_after_pv_bound = false;
    let mut attempt = 0u32;
    loop {
        let c = claims
            .get(claim_name)
            .await
            .map_err(Error::kube("read claim", id.claim_label()))?;
        if c.metadata.uid.as_deref() != Some(id.claim_uid.as_str()) {
            return Err(MigrateError::Refused(format!(
                "stopped: claim {} was recreated (uid {}) while its volume was being migrated; the old PV is saved in ConfigMap {}",
                id.claim_label(),
                c.metadata.uid.as_deref().unwrap_or("none"),
                ctx.backup_label(pv)
            )));
        }
        let claim_bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv);
        // The claim alone is not enough: right after the swap it may still show the old
        // binding, before the binder has even seen the old PV go. Once the binder has marked
        // the new PV Bound it knows both, and keeps the claim Bound.
        let pv_bound = pvs
            .get_opt(pv)
            .await
            .map_err(Error::kube("read PersistentVolume", pv))?
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
            let patch = json!({"metadata": {
                "uid": id.claim_uid,
                "annotations": {ANN_STEP: format!("csi-pv-created, waiting for bind ({attempt})")},
            }});
            claims
                .patch(claim_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube("annotate claim", id.claim_label()))?;
            nudged = Some(Instant::now());
            nudged_after_pv_bound |= pv_bound;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Test-only hook: `RBD_PROVISIONER_MIGRATE_FAILPOINT=exit-after-<step>:<pv>` ends the process
/// at once (as a crash would: no cleanup, exit code 86) right after `step` (`backup`, `retain`,
/// `delete` or `create`) of PV `pv`, so that the integration tests interrupt the real step
/// order. Unset in production; it names one PV so that a run stops where the test wants.
fn failpoint(step: &str, pv: &str) {
    if std::env::var("RBD_PROVISIONER_MIGRATE_FAILPOINT")
        .is_ok_and(|v| v == format!("exit-after-{step}:{pv}"))
    {
        eprintln!("failpoint exit-after-{step}:{pv}: exiting");
        std::process::exit(86);
    }
}
