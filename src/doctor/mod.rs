//! `doctor`: preflight checks of one StorageClass, printed as a table with the command that
//! fixes each failure. Read-only, except for one probe image that is created and removed
//! again to prove the admin key may do both.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::Api;

use crate::error::SecretRole;
use crate::text::escape;
use ::ceph::Timeouts;
use domain::params::Flavor;
use domain::server_version::ServerVersion;

mod ceph_side;
mod kernel;
mod kube_side;
mod sources;

use ceph_side::{admin_rows, monitor_rows, user_row};
use kernel::kernel_row;
pub use kernel::{kernel_version, krbd_minimum, old_kernels};
use kube_side::{flavor_row, rbac_row, secret_row};

#[derive(clap::Args, Debug, Clone)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("class").required(true).multiple(false)))]
pub struct DoctorArgs {
    /// The StorageClass to check, as applied in the cluster.
    #[arg(long, group = "class")]
    pub storage_class: Option<String>,
    /// A StorageClass manifest (YAML or JSON) to check before it is applied.
    #[arg(long, short = 'f', group = "class")]
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

/// The API server could not be asked, so the check could not be made.
fn cannot_ask(check: &'static str, what: &str, e: &kube::Error) -> Row {
    let cause = crate::error::kube_cause(e);
    row(check, Status::Warn, format!("cannot {what}: {cause}"))
}

fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Row {
    Row {
        check,
        status: Status::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// The report as printed: one line per check, a `fix:` line under each that has one. Details
/// and fixes are escaped: they quote the class, its Secrets, Nodes and Ceph's answers.
pub fn render(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<6} {:<w$}  DETAIL\n", "STATUS", "CHECK");
    for r in rows {
        out.push_str(&format!(
            "{:<6} {:<w$}  {}\n",
            r.status.label(),
            r.check,
            escape(&r.detail)
        ));
        if let Some(f) = &r.fix {
            out.push_str(&format!("{:<6} {:<w$}  fix: {}\n", "", "", escape(f)));
        }
    }
    out
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
    chosen_flavor: Option<Flavor>,
    csi_config: Option<&(String, String)>,
) -> anyhow::Result<()> {
    let class = load_class(&client, &args).await?;
    let rows = check(
        &client,
        &class,
        &args,
        (provisioner, service_account),
        chosen_flavor,
        csi_config,
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
    (provisioner, service_account): (&str, &str),
    chosen_flavor: Option<Flavor>,
    csi_config: Option<&(String, String)>,
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
    let p = match domain::params::parse(&raw) {
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

    let server = match client.apiserver_version().await {
        Ok(v) => ServerVersion::parse(&v.major, &v.minor),
        Err(_) => ServerVersion::parse("", ""),
    };
    let flavor = p
        .flavor
        .unwrap_or_else(|| server.default_flavor(chosen_flavor));
    let by_flavor = match flavor {
        Flavor::Csi => domain::params::check_csi(&p),
        Flavor::Rbd => domain::params::check_in_tree(&p),
    };
    if let Err(e) = by_flavor {
        rows.push(fail(
            "parameters",
            e.to_string(),
            format!("fix the parameters of StorageClass {name} as the message says"),
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
    rows.push(flavor_row(client, &p, flavor, (server.major, server.minor)).await);

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
    if flavor == Flavor::Csi {
        // The very choice the provisioner makes: the class's Secret, the user Secret in
        // ceph-csi's format, or `<user secret>-csi`; failing that, the command that makes one.
        rows.push(
            match crate::controller::node_stage_secret(
                client,
                service_account,
                &p,
                &name,
                &args.claim_namespace,
            )
            .await
            {
                Ok(choice) => row(
                    "csi node-stage secret",
                    Status::Ok,
                    format!("{} has userID and userKey", choice.secret()),
                ),
                Err(e) => fail(
                    "csi node-stage secret",
                    e.to_string(),
                    "the message names the command that fixes it",
                ),
            },
        );
    }

    rows.extend(monitor_rows(&p.monitors).await);

    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        op: Duration::from_secs(30),
    };
    let no_key = |check, which| {
        row(
            check,
            Status::Skip,
            format!("no {which} key to try (see the {which} secret line)"),
        )
    };
    let cluster = match admin_key {
        Some(key) => {
            let (admin, cluster) = admin_rows(&p, key, timeouts).await;
            rows.extend(admin);
            cluster
        }
        None => {
            rows.push(no_key("admin key", "admin"));
            None
        }
    };
    rows.extend(source_rows(client, &name, &p, flavor, cluster.as_ref(), csi_config).await);
    match user_key {
        Some(key) => rows.push(user_row(&p, key, timeouts).await),
        None => rows.push(no_key("user key", "user")),
    }
    rows.push(kernel_row(client, &p).await);
    rows
}

/// The clusterIDs of the class and its csi PVs against ceph-csi-config and ClientProfiles,
/// and every monitor list for the class's cluster against the cluster's monitor map.
async fn source_rows(
    client: &Client,
    class: &str,
    p: &domain::params::ClassParams,
    flavor: Flavor,
    cluster: Option<&std::sync::Arc<::ceph::Cluster>>,
    csi_config: Option<&(String, String)>,
) -> Vec<Row> {
    let known = sources::read(client, csi_config).await;
    let fsid = match cluster {
        Some(c) => c.fsid().await.ok(),
        None => None,
    };
    // The clusterID the class's csi PVs get: the class's, else the fsid.
    let cluster_id = p.cluster_id.clone().or(fsid);
    let mut ids = sources::csi_pv_cluster_ids(client, class).await;
    if flavor == Flavor::Csi
        && let Some(id) = &cluster_id
    {
        ids.insert(0, (format!("StorageClass {class}"), id.clone()));
    }
    let mut rows = Vec::new();
    if !ids.is_empty() {
        rows.push(sources::cluster_id_row(&known, &ids));
    }
    let Some(cluster) = cluster else {
        rows.push(row(
            "monitor map",
            Status::Skip,
            "no admin connection to read ceph mon dump with (see the admin key line)",
        ));
        return rows;
    };
    match cluster.monitor_addresses().await {
        Ok(map) => {
            let lists = sources::lists_for_class(
                &known,
                class,
                &p.monitors,
                cluster_id.as_deref().unwrap_or_default(),
            );
            rows.extend(sources::monitor_map_rows(&map, &lists));
        }
        Err(e) => rows.push(row(
            "monitor map",
            Status::Warn,
            format!("ceph mon dump could not be read: {e}"),
        )),
    }
    rows
}

#[cfg(test)]
mod tests;
