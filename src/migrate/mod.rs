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
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::error::{Error, SecretRole, is_status};
use domain::migration::{
    self, ANN_BACKUP, ANN_STEP, BackupError, CsiSettings, Identity, Mismatch, Plan, SettingsError,
    Step,
};
use domain::params::{self, SecretRef};
use domain::reclaim::spec_image;

mod report;
mod steps;

use report::{Outcome, Report};

use steps::{failpoint, finish, save_backup};

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

    /// Name of the ceph-csi driver the new PVs are written for, as kubectl get csidrivers
    /// shows it (default: the class's `csiDriver`, else rbd.csi.ceph.com; Rook's is
    /// rook-ceph.rbd.csi.ceph.com). It must be installed: nothing is changed otherwise.
    #[arg(long)]
    pub csi_driver: Option<String>,

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

    /// Output: lines as each volume is done, or json (one document at the end) for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = crate::output::Output::Table)]
    pub output: crate::output::Output,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Settings(#[from] SettingsError),

    #[error("ceph-csi node-stage Secret {secret} not found; create it in ceph-csi's format: kubectl -n {ns} create secret generic {name} --from-literal=userID=<ceph user without \"client.\"> --from-file=userKey=<(ceph auth get-key client.<user>)", ns = secret.namespace, name = secret.name)]
    SecretNotFound { secret: SecretRef },

    #[error(
        "ceph-csi node-stage Secret {secret}: your kubeconfig may not read it; run migrate-to-csi as a cluster administrator"
    )]
    SecretForbidden { secret: SecretRef },

    #[error(
        "CSIDriver {driver} does not exist in this cluster, so PVs of that driver could not be mounted; nothing was changed. {fix}"
    )]
    DriverMissing { driver: String, fix: String },

    #[error(
        "cannot tell whether CSIDriver {driver} exists: your kubeconfig may not read CSIDriver objects (storage.k8s.io); run migrate-to-csi as a cluster administrator"
    )]
    DriverForbidden { driver: String },

    #[error(
        "StorageClass {0} not found: pass --cluster-id and --node-stage-secret to migrate its volumes anyway (their image will then not be deletable without the admin Secret)"
    )]
    ClassNotFound(String),

    /// Boxed: the provisioner's error is large, and these travel through every step.
    #[error(transparent)]
    Provisioner(Box<Error>),

    #[error("timed out after {after:?} waiting for {awaited}")]
    Timeout { after: Duration, awaited: Awaited },

    #[error("{0}")]
    Conflict(Conflict),

    /// The live objects no longer agree with the migration: nothing more is changed.
    #[error("{0}")]
    Refused(MigrationStopped),

    #[error(
        "{refused} volume(s) refused and {failed} failed, see above; fix what they say and rerun (a rerun resumes interrupted migrations)"
    )]
    Unfinished { refused: usize, failed: usize },
}

/// What a step waited for in vain.
#[derive(Debug, thiserror::Error)]
pub enum Awaited {
    #[error("PersistentVolume {pv} to go")]
    PvGone { pv: String },
    #[error("claim {claim} to be Bound to the csi PersistentVolume {pv} (it exists)")]
    Rebound { claim: String, pv: String },
}

/// Another writer got to an object first.
#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    #[error(
        "ConfigMap {backup} already exists and is not the backup of this PersistentVolume; look at it, delete it if it is stale, and rerun"
    )]
    BackupTaken { backup: String },
    #[error("PersistentVolume {pv} is still the rbd volume; rerun")]
    StillRbd { pv: String },
    #[error(
        "a PersistentVolume {pv} appeared that is not the csi volume of its image; the backup stays in ConfigMap {backup}"
    )]
    PvAppeared { pv: String, backup: String },
}

/// Why a volume's migration does not go on.
#[derive(Debug, thiserror::Error)]
pub enum MigrationStopped {
    #[error("{0}")]
    Backup(BackupError),
    #[error(
        "stopped: {why}. Nothing more was changed; the old PV is saved in ConfigMap {backup}: compare it with the claim and the PV, repair by hand, then delete that ConfigMap"
    )]
    Stopped { why: Mismatch, backup: String },
    #[error("{0}. The old PV may be set to Retain already; its backup is kept and a rerun goes on")]
    InUse(InUse),
    #[error(
        "stopped: claim {claim} was recreated (uid {uid}) while its volume was being migrated; the old PV is saved in ConfigMap {backup}"
    )]
    ClaimRecreated {
        claim: String,
        uid: String,
        backup: String,
    },
}

/// Pods that have not finished use the claim.
#[derive(Debug, thiserror::Error)]
#[error(
    "claim {claim} is used by pod(s) {}; stop them (e.g. scale their Deployment or StatefulSet to 0), then rerun",
    pods.join(", ")
)]
pub struct InUse {
    claim: String,
    pods: Vec<String>,
}

impl From<Error> for MigrateError {
    fn from(e: Error) -> Self {
        MigrateError::Provisioner(Box::new(e))
    }
}

/// One PV of the class, and/or the backup of one (whose PV may be gone).
#[derive(Default)]
struct Item {
    current: Option<PersistentVolume>,
    backup: Option<Result<PersistentVolume, BackupError>>,
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
            cause: source,
        })?;
    let settings = migration::csi_settings(
        &class_name,
        class_params.as_ref(),
        args.cluster_id.as_deref(),
        args.node_stage_secret.as_deref(),
        args.csi_driver.as_deref(),
    )?;
    check_driver(&client, &settings, &class_name).await?;
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

    let mut report = Report::new(args.output, items.len());
    if items.is_empty() {
        report.note(&format!("StorageClass {class_name}: no PersistentVolumes"));
    }
    for (name, item) in &items {
        let outcome = handle(&ctx, name, item, &claim_by_key).await;
        report.volume(name, &item.label(name), outcome);
    }
    for c in &claims.items {
        if let Some(note) = migration::stale_claim_note(c, &class_name) {
            report.note(&format!(
                "claim {}/{}: {note}",
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    if report.changed > 0
        && let Some(note) = migration::class_note(&class_name, class_params.as_ref())
    {
        report.note(&format!("note: {note}"));
    }
    let (refused, failed) = report.finish();
    if refused + failed > 0 {
        return Err(MigrateError::Unfinished { refused, failed });
    }
    Ok(())
}

/// The target driver must be registered before any PV is rewritten for it: a csi PV of a driver
/// that is not there cannot be mounted, and moving back is another migration.
async fn check_driver(
    client: &Client,
    settings: &CsiSettings,
    class: &str,
) -> Result<(), MigrateError> {
    let driver = &settings.driver;
    match Api::<CSIDriver>::all(client.clone()).get_opt(driver).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(MigrateError::DriverMissing {
            driver: driver.clone(),
            fix: migration::missing_driver_fix(settings, class),
        }),
        Err(e) if is_status(&e, 403) => Err(MigrateError::DriverForbidden {
            driver: driver.clone(),
        }),
        Err(e) => Err(Error::kube("read CSIDriver", driver)(e).into()),
    }
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
                Err(why) => return Outcome::Refused(fix(&why.to_string())),
            };
            let step = match id.locate(item.current.as_ref(), &ctx.settings.driver) {
                Ok(s) => s,
                Err(why) => return Outcome::Refused(fix(&why.to_string())),
            };
            let claim = claims.get(&(id.claim_namespace.clone(), id.claim.clone()));
            if let Err(why) = id.check_claim(claim.copied()) {
                return Outcome::Refused(fix(&why.to_string()));
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
                Plan::Refuse(why) => return Outcome::Refused(why.to_string()),
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
        Err(MigrateError::Refused(why)) => Outcome::Refused(why.to_string()),
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

fn in_use_refusal(claim: &PersistentVolumeClaim, users: Vec<String>) -> InUse {
    InUse {
        claim: format!(
            "{}/{}",
            claim.metadata.namespace.as_deref().unwrap_or_default(),
            claim.metadata.name.as_deref().unwrap_or_default()
        ),
        pods: users,
    }
}

/// `Some(refusal)` while a pod that has not finished uses the claim.
async fn in_use(ctx: &Ctx, claim: &PersistentVolumeClaim) -> Option<Outcome> {
    match users(ctx, claim).await {
        Err(e) => Some(Outcome::Failed(e)),
        Ok(u) if u.is_empty() => None,
        Ok(u) => Some(Outcome::Refused(in_use_refusal(claim, u).to_string())),
    }
}
