//! `rbd-provisioner audit`: what may have leaked, read-only. For every pool of our
//! StorageClasses it lists images stamped by this provisioner and cluster that no PV names
//! (with whether housekeeping removes them or keeps them for the operator, and the command
//! that would), creations interrupted before the stamp, PVs of ours whose image is missing,
//! and the pool's trash entries (ours or not). Nothing is changed; an operator decides.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::error::{Error, Result, SecretRole};
use crate::k8s;
use crate::output::{Output, Progress};
use crate::text::escape;
use ceph::{Cluster, Credentials, RbdCluster, Timeouts};
use domain::meta::qualified;
use domain::owner::{self, INTENTS_OBJECT, Instance, Intent, PvState, Stamp};
use domain::{params, reclaim, volume};

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// Only the pool of this StorageClass (default: every class of this provisioner).
    #[arg(long)]
    pub storage_class: Option<String>,

    /// Print JSON instead of tables (the same as -o json).
    #[arg(long)]
    pub json: bool,

    /// Output: table, or json for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Images stamped by us that no PersistentVolume names.
    pub orphaned_images: Vec<OrphanedImage>,
    /// Images whose creation was interrupted before their stamp (from the intent records).
    pub interrupted: Vec<Interrupted>,
    /// PersistentVolumes of ours whose image is not in its pool.
    pub missing_images: Vec<MissingImage>,
    /// Every trash entry of the pools looked at.
    pub trash: Vec<TrashItem>,
    /// Pools that could not be read, and why.
    pub unreadable: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct OrphanedImage {
    pub pool: String,
    pub image: String,
    pub pv: String,
    pub claim: String,
    pub claim_uid: String,
    pub claim_exists: bool,
    pub created: i64,
    /// What becomes of it: `kept: PV gone` (a PV was written for it, so housekeeping never
    /// removes it: the operator decides), `collected: no PV was ever written` (housekeeping
    /// removes it once its claim is gone and the grace period has passed), or `claim exists`.
    pub status: &'static str,
    /// The command that removes it, for what is kept.
    pub remove: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Interrupted {
    pub pool: String,
    pub image: String,
    pub claim: String,
    pub claim_uid: String,
    /// `created, not stamped` (housekeeping stamps it from the record) or `name only, no
    /// header` (a creation killed inside librbd; removed once its claim is gone).
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
pub struct MissingImage {
    pub pv: String,
    pub pool: String,
    pub image: String,
    pub phase: String,
    /// The image is in the pool's trash.
    pub in_trash: bool,
}

#[derive(Debug, Serialize)]
pub struct TrashItem {
    pub pool: String,
    pub image: String,
    pub id: String,
    /// Trashed by this provisioner (so the provisioner purges it by itself).
    pub ours: bool,
    pub deleted_at: i64,
}

pub async fn run(client: Client, args: AuditArgs, provisioner: &str) -> anyhow::Result<()> {
    let report = audit(&client, &args, provisioner).await?;
    if args.json || args.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

pub async fn audit(client: &Client, args: &AuditArgs, provisioner: &str) -> Result<Report> {
    let cluster_uid = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .map_err(Error::kube("read Namespace", "kube-system"))?
        .metadata
        .uid
        .unwrap_or_default();
    let me = Instance {
        provisioner: provisioner.to_string(),
        cluster: cluster_uid,
    };
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "StorageClasses"))?
        .items;
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "PersistentVolumes"))?
        .items;
    let named: BTreeSet<(String, String)> = pvs.iter().filter_map(reclaim::spec_image).collect();

    let mut report = Report::default();
    let mut seen = BTreeSet::new();
    for class in classes.iter().filter(|c| {
        c.provisioner == provisioner
            && args
                .storage_class
                .as_deref()
                .is_none_or(|n| c.metadata.name.as_deref() == Some(n))
    }) {
        let class_name = class.metadata.name.clone().unwrap_or_default();
        let p = params::parse(&class.parameters.clone().unwrap_or_default()).map_err(|source| {
            Error::Params {
                class: class_name.clone(),
                cause: source,
            }
        })?;
        if !seen.insert((p.monitors.join(","), p.pool.clone())) {
            continue;
        }
        let cluster = match connect_admin(client, &p).await? {
            Ok(c) => c,
            Err(e) => {
                report
                    .unreadable
                    .push(format!("pool {} of class {class_name}: {e}", p.pool));
                continue;
            }
        };
        if let Err(e) = pool(client, &cluster, &p.pool, &me, &pvs, &named, &mut report).await {
            report
                .unreadable
                .push(format!("pool {} of class {class_name}: {e}", p.pool));
        }
    }
    Ok(report)
}

/// A client of the class's Ceph cluster with its admin credentials, read with the caller's
/// kubeconfig. The outer error: the Secret; the inner one: Ceph.
pub(crate) async fn connect_admin(
    client: &Client,
    p: &params::ClassParams,
) -> Result<std::result::Result<std::sync::Arc<Cluster>, ceph::CephError>> {
    let key = k8s::ceph_key(
        client,
        SecretRole::Admin,
        &p.admin_secret,
        &p.admin_id,
        "the caller",
    )
    .await?;
    let creds = Credentials {
        monitors: p.monitors.clone(),
        user: p.admin_id.clone(),
        key,
    };
    Ok(Cluster::connect(&creds, Timeouts::default()).await)
}

async fn pool(
    client: &Client,
    cluster: &dyn RbdCluster,
    pool: &str,
    me: &Instance,
    pvs: &[PersistentVolume],
    named: &BTreeSet<(String, String)>,
    report: &mut Report,
) -> Result<()> {
    let object = format!("pool {pool}");
    let images: BTreeSet<String> = cluster
        .list_images(pool)
        .await
        .map_err(Error::ceph(&object))?
        .into_iter()
        .collect();
    let trash = cluster
        .trash_list(pool)
        .await
        .map_err(Error::ceph(&object))?;
    let mut trashed_names = BTreeSet::new();
    for e in &trash {
        let meta = cluster
            .trash_metadata(pool, &e.id, owner::KEYS)
            .await
            .unwrap_or_default();
        trashed_names.insert(e.name.clone());
        report.trash.push(TrashItem {
            pool: pool.into(),
            image: e.name.clone(),
            id: e.id.clone(),
            ours: owner::purgeable(&meta, me),
            deleted_at: e.deletion_time,
        });
    }
    let ours: Vec<&String> = images
        .iter()
        .filter(|i| i.starts_with(volume::IMAGE_PREFIX))
        .collect();
    let progress = Progress::new(ours.len(), &object);
    for image in ours {
        progress.step(image);
        if named.contains(&(pool.to_string(), image.clone())) {
            continue;
        }
        let meta: BTreeMap<String, String> = cluster
            .metadata(pool, image, owner::KEYS)
            .await
            .unwrap_or_default();
        let Some(stamp) = Stamp::read(&meta).filter(|_| owner::stamped_by(&meta, me)) else {
            continue;
        };
        let claim_exists = claim_exists(client, &stamp).await;
        let (status, remove) = match (stamp.pv_state, claim_exists) {
            (PvState::Written | PvState::Unknown, _) => (
                "kept: PV gone",
                Some(format!(
                    "rbd status {pool}/{image}   # no watchers? then: rbd rm {pool}/{image}"
                )),
            ),
            (PvState::None, true) => ("claim exists: provisioning adopts it", None),
            (PvState::None, false) => ("collected: no PV was ever written", None),
        };
        report.orphaned_images.push(OrphanedImage {
            pool: pool.into(),
            image: image.clone(),
            pv: stamp.pv,
            claim: qualified(Some(&stamp.claim_namespace), &stamp.claim_name),
            claim_uid: stamp.claim_uid,
            claim_exists,
            created: stamp.created,
            status,
            remove,
        });
    }
    let records = cluster
        .records(pool, INTENTS_OBJECT)
        .await
        .map_err(Error::ceph(&object))?;
    for (image, value) in records {
        let Some(intent) = Intent::read(&image, &value, me) else {
            continue;
        };
        let state = match cluster.metadata(pool, &image, owner::KEYS).await {
            Ok(m) if m.contains_key(owner::META_PROVISIONER) => continue,
            Ok(_) => "created, not stamped",
            Err(e) if e.is_not_found() && images.contains(&image) => "name only, no header",
            Err(_) => continue,
        };
        let Some(stamp) = intent.stamp() else {
            continue;
        };
        report.interrupted.push(Interrupted {
            pool: pool.into(),
            image,
            claim: qualified(Some(&stamp.claim_namespace), &stamp.claim_name),
            claim_uid: stamp.claim_uid,
            state,
        });
    }
    for pv in pvs
        .iter()
        .filter(|pv| volume::provisioned_by(pv) == Some(me.provisioner.as_str()))
    {
        let Some((p, image)) = reclaim::spec_image(pv) else {
            continue;
        };
        if p != pool || images.contains(&image) {
            continue;
        }
        report.missing_images.push(MissingImage {
            pv: pv.metadata.name.clone().unwrap_or_default(),
            pool: p,
            in_trash: trashed_names.contains(&image),
            image,
            phase: pv
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
        });
    }
    Ok(())
}

/// Whether the claim a stamp names exists with the stamped uid.
async fn claim_exists(client: &Client, stamp: &Stamp) -> bool {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &stamp.claim_namespace)
        .get_opt(&stamp.claim_name)
        .await
        .ok()
        .flatten()
        .is_some_and(|c| c.metadata.uid.as_deref() == Some(&stamp.claim_uid))
}

/// The report as plain tables, for a terminal. Names and claims come from objects anyone with
/// the right to create them chose: escaped, so no control sequence reaches the terminal.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    section(
        &mut out,
        "Images of ours that no PersistentVolume names",
        &r.orphaned_images,
        |o| {
            let claim = if o.claim_exists {
                "claim exists"
            } else {
                "claim gone"
            };
            let remove = o
                .remove
                .as_ref()
                .map(|r| format!("\n    remove: {r}"))
                .unwrap_or_default();
            format!(
                "{}/{}  pv={}  claim={} (uid {}, {claim})  created={}  {}{remove}",
                o.pool, o.image, o.pv, o.claim, o.claim_uid, o.created, o.status
            )
        },
    );
    section(
        &mut out,
        "Creations interrupted before the stamp",
        &r.interrupted,
        |i| {
            format!(
                "{}/{}  claim={} (uid {})  {}",
                i.pool, i.image, i.claim, i.claim_uid, i.state
            )
        },
    );
    section(
        &mut out,
        "PersistentVolumes of ours whose image is missing",
        &r.missing_images,
        |m| {
            let trash = if m.in_trash { "  (in the trash)" } else { "" };
            format!("{}  {}/{}  phase={}{trash}", m.pv, m.pool, m.image, m.phase)
        },
    );
    section(&mut out, "Trash entries", &r.trash, |t| {
        let whose = if t.ours {
            "trashed by us (purged automatically)"
        } else {
            "not ours (left alone)"
        };
        format!("{}/{}  id={}  {whose}", t.pool, t.image, t.id)
    });
    for u in &r.unreadable {
        out.push_str(&format!("Unreadable: {}\n", escape(u)));
    }
    out
}

/// `title: count`, then one indented line per item (its text escaped, line breaks kept).
fn section<T>(out: &mut String, title: &str, items: &[T], line: impl Fn(&T) -> String) {
    out.push_str(&format!("{title}: {}\n", items.len()));
    for item in items {
        let text = line(item);
        let lines: Vec<String> = text.split('\n').map(|l| escape(l).into_owned()).collect();
        out.push_str(&format!("  {}\n", lines.join("\n")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_escapes_what_objects_chose() {
        let r = Report {
            orphaned_images: vec![OrphanedImage {
                pool: "kube".into(),
                image: "kubernetes-dynamic-pvc-1".into(),
                pv: "pvc-1".into(),
                claim: "ns/\u{1b}[2Jdata".into(),
                claim_uid: "1".into(),
                claim_exists: false,
                created: 5,
                status: "kept: PV gone",
                remove: Some("rbd rm kube/kubernetes-dynamic-pvc-1".into()),
            }],
            unreadable: vec!["pool \u{202e}kube".into()],
            ..Report::default()
        };
        let t = table(&r);
        assert!(!t.contains('\u{1b}') && !t.contains('\u{202e}'), "{t}");
        assert!(t.contains("\\u{1b}[2Jdata"), "{t}");
        assert!(
            t.contains("\n    remove: rbd rm kube/kubernetes-dynamic-pvc-1"),
            "{t}"
        );
        assert!(t.contains("kept: PV gone"));
    }
}
