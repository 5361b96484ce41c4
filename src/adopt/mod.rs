//! `rbd-provisioner adopt`: gives kept images (ours, stamped, no PV names them: a Retain PV
//! deleted on purpose, an etcd restore, a rebuilt cluster) their PV back. Dry-run by default:
//! a table of the pool's kept images and whether each is adoptable or why not. With `--apply`,
//! for each adoptable image: the PV first (Retain, the shape our provisioner builds, pre-bound
//! to the claim, marked as adopt's for this image's id), created so that it fails if the name
//! exists; then the image re-stamped with the new PV's name and uid. A rerun after a crash
//! between the two finds its own PV by that mark and finishes the re-stamp. The decisions are
//! pure (`domain::adopt`); this module reads and writes.

mod apply;
mod render;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::error::Error;
use crate::output::{Output, Progress};
use ceph::Cluster;
use domain::adopt::{self, Candidate, Facts, Verdict};
use domain::owner::{self, Instance, Place, Stamp};
use domain::params::{self, ClassParams, Flavor};
use domain::volume::{self, VolumeMode};

pub use render::{Row, table};

/// `rbd-provisioner adopt`.
#[derive(clap::Args, Debug, Clone)]
pub struct AdoptArgs {
    /// The pool whose kept images are looked at.
    #[arg(long)]
    pub pool: String,

    /// The StorageClass of this provisioner whose credentials, monitors and shape the PVs get
    /// (default: the only class of this provisioner naming the pool).
    #[arg(long)]
    pub storage_class: Option<String>,

    /// Only images whose claim is in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,

    /// Only this image.
    #[arg(long)]
    pub image: Option<String>,

    /// NAMESPACE/NAME of the claim the image's PV is pre-bound to, instead of the stamped one
    /// (with --image).
    #[arg(long, value_name = "NAMESPACE/NAME", requires = "image")]
    pub claim: Option<String>,

    /// Volume mode of the PVs when their claim does not exist yet.
    #[arg(long, value_enum, default_value_t = ModeArg::Filesystem)]
    pub volume_mode: ModeArg,

    /// The kube-system uid of a Kubernetes cluster this one replaces: its stamps count as ours.
    #[arg(long, value_name = "UID")]
    pub from_cluster: Vec<String>,

    /// Write the PVs and re-stamp the images (without it nothing is changed).
    #[arg(long)]
    pub apply: bool,

    /// Output: table, or json for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Filesystem,
    Block,
}

/// Why `adopt` cannot start, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "no StorageClass of provisioner {provisioner} names pool {pool}; pass --storage-class with a class of ours for that pool (create one if needed: its credentials and monitors are used)"
    )]
    NoClass { provisioner: String, pool: String },
    #[error(
        "StorageClasses {classes} of provisioner {provisioner} all name pool {pool}; choose one with --storage-class"
    )]
    SeveralClasses {
        provisioner: String,
        pool: String,
        classes: String,
    },
    #[error(
        "StorageClass {class} is not one of provisioner {provisioner} naming pool {pool}; pass a class of ours for that pool"
    )]
    WrongClass {
        class: String,
        provisioner: String,
        pool: String,
    },
    #[error("--claim {0:?} is not NAMESPACE/NAME")]
    BadClaim(String),
    #[error("image {image} is not in pool {pool} nor in its trash")]
    NoImage { image: String, pool: String },
    #[error(transparent)]
    Provisioner(#[from] Box<Error>),
    #[error("could not connect to the Ceph cluster of class {class}: {cause}")]
    Connect {
        class: String,
        cause: ceph::CephError,
    },
    #[error(
        "{0} image(s) could not be adopted, see the table; fix what it says and rerun (a rerun finishes half-done adoptions)"
    )]
    Unfinished(usize),
}

impl From<Error> for AdoptError {
    fn from(e: Error) -> Self {
        AdoptError::Provisioner(Box::new(e))
    }
}

type Result<T, E = AdoptError> = std::result::Result<T, E>;

/// What the whole run shares.
pub(crate) struct Ctx {
    pub client: Client,
    pub cluster: std::sync::Arc<Cluster>,
    pub me: Instance,
    pub live: Place,
    pub pool: String,
    pub class: StorageClass,
    pub class_name: String,
    pub params: ClassParams,
    pub flavor: Flavor,
    pub mode: VolumeMode,
    pub service_account: String,
}

/// The global flags `adopt` reads.
pub struct Globals<'a> {
    pub provisioner: &'a str,
    /// Named in RBAC hints.
    pub service_account: &'a str,
    /// The flavour `--volume-flavor` chose for classes without one (`None`: by the server).
    pub flavor: Option<Flavor>,
}

pub async fn run(client: Client, args: AdoptArgs, g: Globals<'_>) -> anyhow::Result<()> {
    let rows = adopt(client, &args, g.provisioner, g.service_account, g.flavor).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => print!("{}", table(&rows, args.apply)),
    }
    let failed = rows.iter().filter(|r| r.failed()).count();
    if failed > 0 {
        return Err(AdoptError::Unfinished(failed).into());
    }
    Ok(())
}

/// Decides every kept image of the pool (and with `--apply` adopts the adoptable ones).
pub async fn adopt(
    client: Client,
    args: &AdoptArgs,
    provisioner: &str,
    service_account: &str,
    chosen_flavor: Option<Flavor>,
) -> Result<Vec<Row>> {
    let chosen = args
        .claim
        .as_deref()
        .map(|c| {
            c.split_once('/')
                .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
                .ok_or_else(|| AdoptError::BadClaim(c.to_string()))
        })
        .transpose()?;
    let (class, params) = class_for(&client, args, provisioner).await?;
    let class_name = class.metadata.name.clone().unwrap_or_default();
    let v = client
        .apiserver_version()
        .await
        .map_err(Error::kube("read the version of", "the API server"))?;
    let default_flavor = domain::server_version::ServerVersion::parse(&v.major, &v.minor)
        .default_flavor(chosen_flavor);
    let me = Instance {
        provisioner: provisioner.to_string(),
        cluster: crate::controller::cluster_uid(&client).await?,
    };
    let cluster = crate::audit::connect_admin(&client, &params)
        .await?
        .map_err(|cause| AdoptError::Connect {
            class: class_name.clone(),
            cause,
        })?;
    let pool = args.pool.clone();
    let object = format!("pool {pool}");
    let live = Place {
        fsid: cluster.fsid().await.map_err(Error::ceph(&object))?,
        pool_id: cluster.pool_id(&pool).await.map_err(Error::ceph(&object))?,
    };
    let ctx = Ctx {
        client: client.clone(),
        cluster,
        me,
        live,
        pool,
        flavor: params.flavor.unwrap_or(default_flavor),
        class,
        class_name,
        params,
        mode: match args.volume_mode {
            ModeArg::Filesystem => VolumeMode::Filesystem,
            ModeArg::Block => VolumeMode::Block,
        },
        service_account: service_account.to_string(),
    };
    let pvs = Api::<PersistentVolume>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "PersistentVolumes"))?
        .items;
    let images = images(&ctx, args).await?;
    let progress = Progress::new(images.len(), "images");
    let mut rows = Vec::new();
    for (image, trash_id) in images {
        progress.step(&image);
        if let Some(row) = one(&ctx, args, chosen, &pvs, &image, trash_id.as_deref()).await? {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The class whose credentials and shape are used: the one named, or the only one of ours for
/// the pool.
async fn class_for(
    client: &Client,
    args: &AdoptArgs,
    provisioner: &str,
) -> Result<(StorageClass, ClassParams)> {
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list", "StorageClasses"))?
        .items;
    let mut ours = Vec::new();
    for c in classes.into_iter().filter(|c| c.provisioner == provisioner) {
        let name = c.metadata.name.clone().unwrap_or_default();
        if args.storage_class.as_ref().is_some_and(|n| n != &name) {
            continue;
        }
        let p = params::parse(&c.parameters.clone().unwrap_or_default()).map_err(|cause| {
            Error::Params {
                class: name.clone(),
                cause,
            }
        })?;
        if p.pool == args.pool {
            ours.push((c, p));
        }
    }
    match (ours.len(), &args.storage_class) {
        (1, _) => Ok(ours.remove(0)),
        (0, Some(class)) => Err(AdoptError::WrongClass {
            class: class.clone(),
            provisioner: provisioner.into(),
            pool: args.pool.clone(),
        }),
        (0, None) => Err(AdoptError::NoClass {
            provisioner: provisioner.into(),
            pool: args.pool.clone(),
        }),
        _ => Err(AdoptError::SeveralClasses {
            provisioner: provisioner.into(),
            pool: args.pool.clone(),
            classes: ours
                .iter()
                .map(|(c, _)| c.metadata.name.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The images to look at, by name, with their trash id for those in the trash: every image of
/// ours by name prefix or stamp, or only `--image`.
async fn images(ctx: &Ctx, args: &AdoptArgs) -> Result<BTreeMap<String, Option<String>>> {
    let object = format!("pool {}", ctx.pool);
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
    for e in ctx
        .cluster
        .trash_list(&ctx.pool)
        .await
        .map_err(Error::ceph(&object))?
    {
        let meta = ctx
            .cluster
            .trash_metadata(&ctx.pool, &e.id, owner::KEYS)
            .await
            .unwrap_or_default();
        if meta.get(owner::META_PROVISIONER) == Some(&ctx.me.provisioner) {
            out.insert(e.name, Some(e.id));
        }
    }
    for i in ctx
        .cluster
        .list_images(&ctx.pool)
        .await
        .map_err(Error::ceph(&object))?
    {
        out.insert(i, None);
    }
    if let Some(only) = &args.image {
        return match out.remove_entry(only) {
            Some(e) => Ok(BTreeMap::from([e])),
            None => Err(AdoptError::NoImage {
                image: only.clone(),
                pool: ctx.pool.clone(),
            }),
        };
    }
    Ok(out)
}

/// Decides (and with `--apply` adopts) one image; `None` when it is not a kept image worth a
/// row (another's, or in use by its PV).
async fn one(
    ctx: &Ctx,
    args: &AdoptArgs,
    chosen: Option<(&str, &str)>,
    pvs: &[PersistentVolume],
    image: &str,
    trash_id: Option<&str>,
) -> Result<Option<Row>> {
    let object = format!("image {}/{image}", ctx.pool);
    let named: Vec<&PersistentVolume> = pvs
        .iter()
        .filter(|pv| adopt::names_image(pv, &ctx.pool, image))
        .collect();
    let maybe_ours_adopted = named
        .iter()
        .any(|pv| domain::meta::annotation(&pv.metadata, adopt::ANN_ADOPTED_IMAGE).is_some());
    // An image in use by its PV is not kept: no row, and no Ceph call, unless asked for.
    if args.image.is_none() && !named.is_empty() && !maybe_ours_adopted {
        return Ok(None);
    }
    let mut watchers: Vec<String> = Vec::new();
    let (meta, info) = match trash_id {
        Some(id) => {
            let (m, size) = ctx
                .cluster
                .trash_image(&ctx.pool, id, owner::KEYS)
                .await
                .map_err(Error::ceph(&object))?;
            (m, (size, String::new()))
        }
        None => {
            let read = async {
                let m = ctx.cluster.metadata(&ctx.pool, image, owner::KEYS).await?;
                let i = ctx.cluster.image_info(&ctx.pool, image).await?;
                let w = ctx.cluster.watchers(&ctx.pool, image).await?;
                Ok::<_, ceph::CephError>((m, i, w))
            };
            match read.await {
                Ok((m, i, w)) => {
                    watchers = w.into_iter().map(|w| w.addr).collect();
                    (m, (i.size, i.id))
                }
                // Removed while we looked.
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(Error::ceph(&object)(e).into()),
            }
        }
    };
    let stamped = meta.contains_key(owner::META_PROVISIONER);
    if args.image.is_none() && !stamped && !image.starts_with(volume::IMAGE_PREFIX) {
        return Ok(None);
    }
    let target = adopt::target_of(&meta, chosen);
    if let Some(ns) = &args.namespace
        && target.as_ref().is_none_or(|t| &t.namespace != ns)
    {
        return Ok(None);
    }
    let pv_of_name = adopt::pv_name_for(image).and_then(|n| {
        pvs.iter()
            .find(|pv| pv.metadata.name.as_deref() == Some(n.as_str()))
            .filter(|pv| !adopt::names_image(pv, &ctx.pool, image))
    });
    let claim = match &target {
        Some(t) => crate::k8s::get_claim(&ctx.client, &t.namespace, &t.name).await?,
        None => None,
    };
    let candidate = Candidate {
        image,
        meta: &meta,
        image_id: &info.1,
        trashed: trash_id.is_some(),
        watchers: &watchers,
        named_by: &named,
        pv_of_name,
        target,
        claim: claim.as_ref(),
    };
    let facts = Facts {
        me: &ctx.me,
        from_clusters: &args.from_cluster,
        pool: &ctx.pool,
        live: &ctx.live,
        class: &ctx.class_name,
    };
    let verdict = adopt::decide(&candidate, &facts);
    if matches!(verdict, Verdict::Done { .. }) && args.image.is_none() {
        return Ok(None);
    }
    let mut row = Row::new(image, info.0, Stamp::read(&meta).as_ref(), &verdict);
    if args.apply {
        row.set_result(apply::carry_out(ctx, &verdict, &candidate, info.0).await);
    }
    Ok(Some(row))
}
