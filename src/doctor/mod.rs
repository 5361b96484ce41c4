//! `doctor`: preflight checks of one StorageClass, printed as a table with the command that
//! fixes each failure. Read-only, except for one probe image that is created and removed
//! again to prove the admin key may do both.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

use crate::ceph::{CephKey, Cluster, Credentials, ImageSpec, RBD_FEATURE_LAYERING, Timeouts};
use crate::domain::params::{ClassParams, Flavor, SecretRef};
use crate::error::SecretRole;

#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct DoctorArgs {
    /// The StorageClass to check, as applied in the cluster.
    #[arg(long)]
    pub storage_class: Option<String>,
    /// A StorageClass manifest (YAML or JSON) to check before it is applied.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Namespace whose user Secret to check when the class has no userSecretNamespace
    /// (the user Secret then lives in each claim's namespace).
    #[arg(long, default_value = "default")]
    pub claim_namespace: String,
}

/// How one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not run because a check it depends on failed.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to run to fix it (failures and warnings).
    pub fix: Option<String>,
}

fn row(check: &'static str, status: Status, detail: impl Into<String>) -> Row {
    Row {
        check,
        status,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Row {
    Row {
        check,
        status: Status::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// The report as printed: one line per check, a `fix:` line under each that has one.
pub fn render(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<6} {:<w$}  DETAIL\n", "STATUS", "CHECK");
    for r in rows {
        out.push_str(&format!(
            "{:<6} {:<w$}  {}\n",
            r.status.label(),
            r.check,
            r.detail
        ));
        if let Some(f) = &r.fix {
            out.push_str(&format!("{:<6} {:<w$}  fix: {}\n", "", "", f));
        }
    }
    out
}

/// Oldest kernel whose krbd maps an image with these features (`RBD_FEATURE_*` bits), per
/// Ceph's krbd documentation; `None` when krbd cannot map it at all (journaling).
pub fn krbd_minimum(features: u64) -> Option<(u32, u32)> {
    use crate::ceph::*;
    if features & RBD_FEATURE_JOURNALING != 0 {
        return None;
    }
    let mut min = (3, 10); // layering (and striping v2)
    if features & RBD_FEATURE_EXCLUSIVE_LOCK != 0 {
        min = min.max((4, 9));
    }
    if features & RBD_FEATURE_DATA_POOL != 0 {
        min = min.max((4, 11));
    }
    if features & (RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF | RBD_FEATURE_DEEP_FLATTEN) != 0 {
        min = min.max((5, 3));
    }
    Some(min)
}

/// `major.minor` of a `status.nodeInfo.kernelVersion` such as "5.15.0-91-generic".
pub fn kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Nodes whose kernel is older than `min` (or unreadable), as "name (version)".
pub fn old_kernels(nodes: &[(String, String)], min: (u32, u32)) -> Vec<String> {
    nodes
        .iter()
        .filter(|(_, v)| kernel_version(v).is_none_or(|k| k < min))
        .map(|(n, v)| format!("{n} ({v})"))
        .collect()
}

/// The `user` of a SubjectAccessReview for a "namespace:name" ServiceAccount.
fn sa_user(service_account: &str) -> String {
    let (ns, name) = service_account
        .split_once(':')
        .unwrap_or(("kube-system", service_account));
    format!("system:serviceaccount:{ns}:{name}")
}

/// A monitor as `host:port` for a TCP probe; 6789 when no port is given.
fn monitor_addr(m: &str) -> String {
    let m = m.trim_start_matches("v1:").trim_start_matches("v2:");
    if m.parse::<std::net::SocketAddr>().is_ok() {
        return m.to_string();
    }
    if m.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{m}]:6789");
    }
    match m.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() && !m.starts_with('[') || m.contains("]:") => {
            m.to_string()
        }
        _ => format!("{m}:6789"),
    }
}

/// Reads the class: from the cluster, or from a manifest (YAML or JSON).
async fn load_class(client: &Client, args: &DoctorArgs) -> anyhow::Result<StorageClass> {
    if let Some(path) = &args.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let class: StorageClass = serde_json::from_str(&text)
            .or_else(|_| serde_saphyr::from_str(&text))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a StorageClass manifest (YAML or JSON): {e}",
                    path.display()
                )
            })?;
        return Ok(class);
    }
    let name = args.storage_class.as_deref().unwrap_or_default();
    Api::<StorageClass>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read StorageClass {name}: {}; check the name with kubectl get storageclass",
                crate::error::kube_cause(&e)
            )
        })
}

/// Runs every check and prints the table; an error (non-zero exit) when any check failed.
pub async fn run(
    client: Client,
    args: DoctorArgs,
    provisioner: &str,
    service_account: &str,
    flavor_arg: crate::app::FlavorArg,
) -> anyhow::Result<()> {
    let class = load_class(&client, &args).await?;
    let rows = check(
        &client,
        &class,
        &args,
        provisioner,
        service_account,
        flavor_arg,
    )
    .await;
    print!("{}", render(&rows));
    let failed = rows.iter().filter(|r| r.status == Status::Fail).count();
    if failed > 0 {
        anyhow::bail!(
            "doctor: {failed} check(s) of StorageClass {} failed; run the fix lines above, then doctor again",
            class.metadata.name.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

/// The checks, in the order an operator would fix them.
pub async fn check(
    client: &Client,
    class: &StorageClass,
    args: &DoctorArgs,
    provisioner: &str,
    service_account: &str,
    flavor_arg: crate::app::FlavorArg,
) -> Vec<Row> {
    let name = class.metadata.name.clone().unwrap_or_default();
    let mut rows = Vec::new();

    if class.provisioner == provisioner {
        rows.push(row("provisioner", Status::Ok, provisioner.to_string()));
    } else {
        rows.push(fail(
            "provisioner",
            format!(
                "class names provisioner {:?}, this provisioner serves {provisioner:?}",
                class.provisioner
            ),
            format!(
                "set provisioner: {provisioner} in StorageClass {name} (or --provisioner-name)"
            ),
        ));
    }

    let raw: BTreeMap<String, String> = class.parameters.clone().unwrap_or_default();
    let p = match crate::domain::params::parse(&raw) {
        Ok(p) => p,
        Err(e) => {
            rows.push(fail(
                "parameters",
                e.to_string(),
                format!("edit the parameters of StorageClass {name} (kubectl get storageclass {name} -o yaml), then recreate it"),
            ));
            return rows;
        }
    };

    let (major, minor) = match client.apiserver_version().await {
        Ok(v) => (
            v.major.parse().unwrap_or(0),
            v.minor
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap_or(0),
        ),
        Err(_) => (0, 0),
    };
    let flavor = p
        .flavor
        .unwrap_or_else(|| crate::app::default_flavor(flavor_arg, major, minor));
    if flavor == Flavor::Csi
        && let Err(e) = crate::domain::params::check_csi(&p)
    {
        rows.push(fail(
            "parameters",
            e.to_string(),
            format!("add the missing csi parameters to StorageClass {name}"),
        ));
        return rows;
    }
    rows.push(row(
        "parameters",
        Status::Ok,
        format!(
            "pool {}, admin {}, user {}, {} monitor(s)",
            p.pool,
            p.admin_id,
            p.user_id,
            p.monitors.len()
        ),
    ));
    rows.push(flavor_row(client, &p, flavor, (major, minor)).await);

    let user_secret = p.user_secret(&args.claim_namespace);
    let mut secrets = vec![
        (
            SecretRole::Admin,
            p.admin_secret.clone(),
            p.admin_id.clone(),
        ),
        (SecretRole::User, user_secret.clone(), p.user_id.clone()),
    ];
    if flavor == Flavor::Csi
        && let Some(s) = &p.csi_secret
    {
        secrets.push((SecretRole::CsiNodeStage, s.clone(), p.user_id.clone()));
    }
    for (role, secret, _) in &secrets {
        rows.push(rbac_row(client, *role, secret, service_account).await);
    }

    let admin_key = secret_row(
        client,
        &mut rows,
        "admin secret",
        SecretRole::Admin,
        &p.admin_secret,
        &p.admin_id,
        service_account,
    )
    .await;
    let user_key = secret_row(
        client,
        &mut rows,
        "user secret",
        SecretRole::User,
        &user_secret,
        &p.user_id,
        service_account,
    )
    .await;
    // kubelet's in-tree plugin uses the user Secret's only value: it must be `key` alone.
    if flavor == Flavor::Rbd && user_key.is_some() {
        let single_key = &[(
            "key",
            "kubelet's in-tree rbd plugin reads the user's key from \"key\" only",
        )];
        if let Err(e) = crate::k8s::check_secret(
            client,
            SecretRole::User,
            &user_secret,
            &p.user_id,
            service_account,
            single_key,
        )
        .await
        {
            rows.push(fail(
                "user secret",
                e.to_string(),
                format!(
                    "kubectl -n {} create secret generic {} --type=kubernetes.io/rbd --from-file=key=<(ceph auth get-key client.{})",
                    user_secret.namespace, user_secret.name, p.user_id
                ),
            ));
        }
    }
    if flavor == Flavor::Csi
        && let Some(s) = &p.csi_secret
    {
        rows.push(
            match crate::k8s::check_secret(
                client,
                SecretRole::CsiNodeStage,
                s,
                &p.user_id,
                service_account,
                &[("userID", "put the Ceph user id under userID"), ("userKey", "put the user's Ceph key under userKey")],
            )
            .await
            {
                Ok(()) => row("csi node-stage secret", Status::Ok, format!("{s} has userID and userKey")),
                Err(e) => fail(
                    "csi node-stage secret",
                    e.to_string(),
                    format!(
                        "kubectl -n {} create secret generic {} --from-literal=userID={} --from-file=userKey=<(ceph auth get-key client.{})",
                        s.namespace, s.name, p.user_id, p.user_id
                    ),
                ),
            },
        );
    }

    rows.extend(monitor_rows(&p.monitors).await);

    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        op: Duration::from_secs(30),
    };
    match admin_key {
        Some(key) => rows.extend(admin_rows(&p, key, timeouts).await),
        None => rows.push(row(
            "admin key",
            Status::Skip,
            "no admin key to try (see the admin secret line)",
        )),
    }
    match user_key {
        Some(key) => rows.push(user_row(&p, key, timeouts).await),
        None => rows.push(row(
            "user key",
            Status::Skip,
            "no user key to try (see the user secret line)",
        )),
    }
    rows.push(kernel_row(client, &p).await);
    rows
}

/// The PV flavour against the server: in-tree rbd is gone from 1.31; csi needs the driver.
async fn flavor_row(client: &Client, p: &ClassParams, flavor: Flavor, server: (u32, u32)) -> Row {
    let check = "volume flavour";
    match flavor {
        Flavor::Rbd if server >= (1, 31) => fail(
            check,
            format!(
                "spec.rbd PVs, but Kubernetes {}.{} has no in-tree rbd plugin (removed in 1.31)",
                server.0, server.1
            ),
            "set volumeFlavor: csi (with clusterID and csiNodeStageSecretName) and install ceph-csi",
        ),
        Flavor::Rbd => row(
            check,
            Status::Ok,
            format!("in-tree spec.rbd on Kubernetes {}.{}", server.0, server.1),
        ),
        Flavor::Csi => {
            match Api::<CSIDriver>::all(client.clone()).get_opt(&p.csi_driver).await {
                Ok(Some(_)) => row(
                    check,
                    Status::Ok,
                    format!("ceph-csi static PVs, driver {} installed", p.csi_driver),
                ),
                Ok(None) => Row {
                    check,
                    status: Status::Warn,
                    detail: format!(
                        "ceph-csi static PVs, but no CSIDriver {} is registered: pods cannot mount them",
                        p.csi_driver
                    ),
                    fix: Some(
                        "install ceph-csi's rbd plugin, or set csiDriver to the name kubectl get csidrivers shows (Rook: rook-ceph.rbd.csi.ceph.com)".into(),
                    ),
                },
                Err(e) => row(
                    check,
                    Status::Warn,
                    format!(
                        "cannot list CSIDrivers: {}",
                        crate::error::kube_cause(&e)
                    ),
                ),
            }
        }
    }
}

/// Whether the provisioner's ServiceAccount may read the Secret (asked of the API server).
async fn rbac_row(client: &Client, role: SecretRole, s: &SecretRef, service_account: &str) -> Row {
    let check = match role {
        SecretRole::Admin => "admin secret RBAC",
        SecretRole::User => "user secret RBAC",
        SecretRole::CsiNodeStage => "csi secret RBAC",
    };
    let user = sa_user(service_account);
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(s.namespace.clone()),
                verb: Some("get".into()),
                resource: Some("secrets".into()),
                name: Some(s.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    // The csi secret is read by kubelet, not by us; only warn when we cannot see it.
    let status_if_denied = if role == SecretRole::CsiNodeStage {
        Status::Warn
    } else {
        Status::Fail
    };
    match Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {
            row(check, Status::Ok, format!("{user} may get {s}"))
        }
        Ok(_) => Row {
            check,
            status: status_if_denied,
            detail: format!("{user} may not get {s}"),
            fix: Some(format!(
                "add namespace {} to the Secret-reading RoleBindings (the secret-namespaces overlay in manifests/, see README \"Deploying into a cluster\")",
                s.namespace
            )),
        },
        Err(e) => row(
            check,
            Status::Warn,
            format!(
                "cannot ask the API server (SubjectAccessReview): {}",
                crate::error::kube_cause(&e)
            ),
        ),
    }
}

/// Reads the key of a Secret (with our own credentials) and records the outcome.
async fn secret_row(
    client: &Client,
    rows: &mut Vec<Row>,
    check: &'static str,
    role: SecretRole,
    s: &SecretRef,
    ceph_user: &str,
    service_account: &str,
) -> Option<CephKey> {
    match crate::k8s::ceph_key(client, role, s, ceph_user, service_account).await {
        Ok(k) => {
            rows.push(row(check, Status::Ok, format!("{s} holds a key")));
            Some(k)
        }
        Err(e) => {
            rows.push(fail(
                check,
                e.to_string(),
                format!(
                    "kubectl -n {} create secret generic {} --type=kubernetes.io/rbd --from-file=key=<(ceph auth get-key client.{ceph_user})",
                    s.namespace, s.name
                ),
            ));
            None
        }
    }
}

/// Each monitor accepts a TCP connection.
async fn monitor_rows(monitors: &[String]) -> Vec<Row> {
    let mut rows = Vec::new();
    for m in monitors {
        let addr = monitor_addr(m);
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(addr.as_str()),
        )
        .await;
        rows.push(match r {
            Ok(Ok(_)) => row("monitor", Status::Ok, format!("{addr} answers")),
            Ok(Err(e)) => fail(
                "monitor",
                format!("{addr}: {e}"),
                "check the monitors parameter against ceph mon dump, and that nodes reach them (firewall)",
            ),
            Err(_) => fail(
                "monitor",
                format!("{addr}: no answer within 3s"),
                "check the monitors parameter against ceph mon dump, and that nodes reach them (firewall)",
            ),
        });
    }
    rows
}

/// The admin key authenticates, the pool exists, and a probe image can be created and removed.
async fn admin_rows(p: &ClassParams, key: CephKey, timeouts: Timeouts) -> Vec<Row> {
    let creds = Credentials {
        monitors: p.monitors.clone(),
        user: p.admin_id.clone(),
        key,
    };
    let cluster = match Cluster::connect(&creds, timeouts).await {
        Ok(c) => c,
        Err(e) => {
            return vec![fail(
                "admin key",
                format!("client.{} cannot connect: {e}", p.admin_id),
                format!(
                    "compare the Secret with ceph auth get-key client.{}, and the monitors with ceph mon dump",
                    p.admin_id
                ),
            )];
        }
    };
    let mut rows = vec![row(
        "admin key",
        Status::Ok,
        format!("client.{} authenticates", p.admin_id),
    )];
    match cluster.list_images(&p.pool).await {
        Ok(images) => rows.push(row(
            "pool",
            Status::Ok,
            format!(
                "{} exists ({} images); its rbd application tag is not checked here (ceph osd pool application get {})",
                p.pool,
                images.len(),
                p.pool
            ),
        )),
        Err(e) if e.is_pool_missing() => {
            rows.push(fail(
                "pool",
                format!("pool {} does not exist", p.pool),
                format!(
                    "ceph osd pool create {0} && rbd pool init {0} (or set pool to an existing RBD pool)",
                    p.pool
                ),
            ));
            return rows;
        }
        Err(e) => rows.push(fail(
            "pool",
            format!("cannot list images of {}: {e}", p.pool),
            format!(
                "ceph auth caps client.{} mon 'profile rbd' osd 'profile rbd pool={}'",
                p.admin_id, p.pool
            ),
        )),
    }
    rows.push(probe(&cluster, p).await);
    rows
}

/// Creates and removes `rbd-provisioner-doctor-probe-<random>`; always removes it.
async fn probe(cluster: &Arc<Cluster>, p: &ClassParams) -> Row {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!(
        "rbd-provisioner-doctor-probe-{:08x}{:04x}",
        nanos,
        std::process::id() & 0xffff
    );
    let spec = ImageSpec {
        pool: p.pool.clone(),
        name: name.clone(),
        size: 4 << 20,
        data_pool: p.data_pool.clone(),
        features: RBD_FEATURE_LAYERING,
    };
    let fix = format!(
        "ceph auth caps client.{} mon 'profile rbd' osd 'profile rbd pool={}{}'",
        p.admin_id,
        p.pool,
        p.data_pool
            .as_ref()
            .map(|d| format!(", profile rbd pool={d}"))
            .unwrap_or_default()
    );
    let created = cluster.create_image(&spec).await;
    // Remove whatever the create left, even after a failure reported late.
    let removed = cluster.remove_image(&p.pool, &name).await;
    match (created, removed) {
        (Ok(_), Ok(_)) => row(
            "probe image",
            Status::Ok,
            format!("created and removed {}/{name}", p.pool),
        ),
        (Err(e), _) => fail(
            "probe image",
            format!(
                "client.{} cannot create an image in {}: {e}",
                p.admin_id, p.pool
            ),
            fix,
        ),
        (Ok(_), Err(e)) => fail(
            "probe image",
            format!("created {}/{name} but cannot remove it: {e}", p.pool),
            format!("{fix}; then rbd rm {}/{name}", p.pool),
        ),
    }
}

/// The user key authenticates and may read the pool. This proves the mon and osd read caps a
/// node's map needs; that the osd caps also allow the writes of a mounted volume is not
/// provable without writing to an image.
async fn user_row(p: &ClassParams, key: CephKey, timeouts: Timeouts) -> Row {
    let creds = Credentials {
        monitors: p.monitors.clone(),
        user: p.user_id.clone(),
        key,
    };
    let fix = format!(
        "ceph auth caps client.{} mon 'profile rbd' osd 'profile rbd pool={}'",
        p.user_id, p.pool
    );
    let cluster = match Cluster::connect(&creds, timeouts).await {
        Ok(c) => c,
        Err(e) => {
            return fail(
                "user key",
                format!("client.{} cannot connect: {e}", p.user_id),
                format!(
                    "compare the user Secret with ceph auth get-key client.{}",
                    p.user_id
                ),
            );
        }
    };
    match cluster.list_images(&p.pool).await {
        Ok(_) => row(
            "user key",
            Status::Ok,
            format!(
                "client.{} authenticates and reads pool {} (map needs osd write caps too: {})",
                p.user_id,
                p.pool,
                fix.trim_start_matches("ceph auth caps ")
            ),
        ),
        Err(e) if e.is_pool_missing() => row(
            "user key",
            Status::Skip,
            format!(
                "client.{} authenticates; pool {} is missing (see the pool line)",
                p.user_id, p.pool
            ),
        ),
        Err(e) => fail(
            "user key",
            format!("client.{} cannot read pool {}: {e}", p.user_id, p.pool),
            fix,
        ),
    }
}

/// Every Node's kernel can map the class's images with krbd.
async fn kernel_row(client: &Client, p: &ClassParams) -> Row {
    let check = "node kernels";
    let features = RBD_FEATURE_LAYERING
        | if p.data_pool.is_some() {
            crate::ceph::RBD_FEATURE_DATA_POOL
        } else {
            0
        };
    let min = krbd_minimum(features).unwrap_or((u32::MAX, 0));
    let nodes = match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            return row(
                check,
                Status::Warn,
                format!("cannot list Nodes: {}", crate::error::kube_cause(&e)),
            );
        }
    };
    if nodes.is_empty() {
        return row(check, Status::Warn, "no Nodes registered: cannot check");
    }
    let kernels: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                n.status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .map(|i| i.kernel_version.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let old = old_kernels(&kernels, min);
    if old.is_empty() {
        row(
            check,
            Status::Ok,
            format!(
                "{} node(s) at kernel >= {}.{} (krbd maps layering{})",
                kernels.len(),
                min.0,
                min.1,
                if p.data_pool.is_some() {
                    ", data-pool"
                } else {
                    ""
                }
            ),
        )
    } else {
        fail(
            check,
            format!(
                "krbd of these nodes cannot map the images (needs kernel {}.{}, else \"feature set mismatch\"): {}",
                min.0,
                min.1,
                old.join(", ")
            ),
            "upgrade those nodes' kernels, or keep pods needing these volumes off them (node affinity)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ceph::*;

    #[test]
    fn krbd_feature_kernels() {
        assert_eq!(krbd_minimum(RBD_FEATURE_LAYERING), Some((3, 10)));
        assert_eq!(
            krbd_minimum(RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK),
            Some((4, 9))
        );
        assert_eq!(krbd_minimum(RBD_FEATURE_DATA_POOL), Some((4, 11)));
        assert_eq!(
            krbd_minimum(RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP),
            Some((5, 3))
        );
        assert_eq!(krbd_minimum(RBD_FEATURE_JOURNALING), None);
    }

    #[test]
    fn kernels_of_nodes() {
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("3.10.0-1160.el7.x86_64"), Some((3, 10)));
        assert_eq!(kernel_version("garbage"), None);
        let nodes = vec![
            ("a".to_string(), "5.4.0".to_string()),
            ("b".to_string(), "4.9.1".to_string()),
            ("c".to_string(), String::new()),
        ];
        assert_eq!(old_kernels(&nodes, (3, 10)), vec!["c ()"]);
        assert_eq!(old_kernels(&nodes, (4, 11)), vec!["b (4.9.1)", "c ()"]);
    }

    #[test]
    fn monitor_addresses() {
        assert_eq!(monitor_addr("10.0.0.1"), "10.0.0.1:6789");
        assert_eq!(monitor_addr("10.0.0.1:3300"), "10.0.0.1:3300");
        assert_eq!(monitor_addr("mon-a"), "mon-a:6789");
        assert_eq!(monitor_addr("mon-a:6789"), "mon-a:6789");
        assert_eq!(monitor_addr("::1"), "[::1]:6789");
        assert_eq!(monitor_addr("[::1]:3300"), "[::1]:3300");
        assert_eq!(sa_user("ns:sa"), "system:serviceaccount:ns:sa");
    }

    #[test]
    fn table_has_fix_lines() {
        let t = render(&[
            row("parameters", Status::Ok, "fine"),
            fail("pool", "pool x does not exist", "ceph osd pool create x"),
        ]);
        assert!(t.starts_with("STATUS"));
        assert!(t.contains("FAIL   pool"), "{t}");
        assert!(t.contains("fix: ceph osd pool create x"), "{t}");
    }
}
