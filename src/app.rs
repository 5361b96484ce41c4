//! Command line, logging, client setup: the edge where `anyhow` is allowed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::ceph::Timeouts;
use crate::controller::{self, Settings};
use crate::leader::Elector;
use crate::metrics::Metrics;
use crate::params::Flavor;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Kubernetes external provisioner for Ceph RBD volumes, through librbd"
)]
pub struct Cli {
    /// Kubeconfig to use instead of the in-cluster ServiceAccount.
    #[arg(long, env = "KUBECONFIG_PATH", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// The `provisioner` value of the StorageClasses to serve.
    #[arg(long, env = "PROVISIONER_NAME", default_value = "ceph.com/rbd")]
    pub provisioner_name: String,

    /// Claims provisioned at the same time.
    #[arg(long, env = "WORKERS", default_value_t = 16)]
    pub workers: u16,

    /// Address for /metrics and /healthz; empty disables.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,

    /// Seconds a Ceph connection may take (monitors unreachable, wrong key) before failing.
    #[arg(long, env = "CEPH_CONNECT_TIMEOUT", default_value_t = 10)]
    pub ceph_connect_timeout: u64,

    /// Seconds a single Ceph request may take.
    #[arg(long, env = "CEPH_OP_TIMEOUT", default_value_t = 30)]
    pub ceph_op_timeout: u64,

    /// PV flavour for classes without `volumeFlavor`: auto picks `rbd` below Kubernetes 1.31, `csi` from 1.31.
    #[arg(long, env = "VOLUME_FLAVOR", value_enum, default_value_t = FlavorArg::Auto)]
    pub volume_flavor: FlavorArg,

    /// Elect a leader among replicas through a Lease, so that only one acts.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub leader_election_namespace: String,

    /// Our ServiceAccount as namespace:name, named in RBAC hints.
    #[arg(
        long,
        env = "SERVICE_ACCOUNT",
        default_value = "kube-system:rbd-provisioner"
    )]
    pub service_account: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FlavorArg {
    Auto,
    Rbd,
    Csi,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the provisioner (the default).
    Run,
    /// Rewrite the spec.rbd PVs of a StorageClass as static ceph-csi PVs (for Kubernetes >= 1.31).
    MigrateToCsi(crate::migrate::MigrateArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,tower=warn,hyper=warn".into()),
        )
        .init();
    // The provisioner runs in-cluster; an operator's command uses their kubeconfig.
    let in_cluster = matches!(cli.command.as_ref().unwrap_or(&Command::Run), Command::Run);
    let client = client(cli.kubeconfig.as_ref(), in_cluster).await?;
    match cli.command.as_ref().unwrap_or(&Command::Run) {
        Command::Run => run_provisioner(cli, client).await,
        Command::MigrateToCsi(args) => {
            Ok(crate::migrate::run(client, args.clone(), &cli.provisioner_name).await?)
        }
    }
}

async fn client(kubeconfig: Option<&PathBuf>, in_cluster: bool) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None if in_cluster => kube::Config::incluster()
            .context("not running in a cluster (no ServiceAccount mounted): pass --kubeconfig")?,
        None => kube::Config::infer()
            .await
            .context("no kubeconfig found ($KUBECONFIG, ~/.kube/config): pass --kubeconfig")?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The flavour for classes that do not choose: in-tree `spec.rbd` was removed in Kubernetes 1.31.
pub fn default_flavor(arg: FlavorArg, major: u32, minor: u32) -> Flavor {
    match arg {
        FlavorArg::Rbd => Flavor::Rbd,
        FlavorArg::Csi => Flavor::Csi,
        FlavorArg::Auto if (major, minor) >= (1, 31) => Flavor::Csi,
        FlavorArg::Auto => Flavor::Rbd,
    }
}

/// "1", "20+" → 20
fn version_number(s: &str) -> u32 {
    s.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0)
}

async fn run_provisioner(cli: Cli, client: kube::Client) -> anyhow::Result<()> {
    let v = client
        .apiserver_version()
        .await
        .context("asking the API server for its version")?;
    let (major, minor) = (version_number(&v.major), version_number(&v.minor));
    let default_flavor = default_flavor(cli.volume_flavor, major, minor);
    tracing::info!(
        provisioner = %cli.provisioner_name,
        server = %v.git_version,
        ?default_flavor,
        "starting; classes without volumeFlavor get {} PVs",
        match default_flavor { Flavor::Rbd => "in-tree spec.rbd", Flavor::Csi => "ceph-csi static" }
    );
    let metrics = Arc::new(Metrics::default());
    if !cli.metrics_addr.is_empty() {
        let addr: SocketAddr = cli
            .metrics_addr
            .parse()
            .with_context(|| format!("--metrics-addr {:?}", cli.metrics_addr))?;
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(addr, m).await {
                tracing::error!(%addr, error = %e, "metrics endpoint stopped");
            }
        });
    }
    let settings = Settings {
        provisioner: cli.provisioner_name,
        service_account: cli.service_account,
        default_flavor,
        workers: cli.workers.max(1),
        ceph_timeouts: Timeouts {
            connect: Duration::from_secs(cli.ceph_connect_timeout.max(1)),
            op: Duration::from_secs(cli.ceph_op_timeout.max(1)),
        },
    };
    let elector = cli.leader_elect.then(|| {
        Elector::new(
            client.clone(),
            &cli.leader_election_namespace,
            &settings.provisioner,
            identity(),
        )
    });
    if let Some(e) = &elector {
        tokio::select! {
            _ = e.acquire() => {}
            _ = terminated() => return Ok(()),
        }
    }
    let keep = async {
        match &elector {
            Some(e) => e.keep().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = controller::run(client, settings, metrics) => {
            if let Some(e) = &elector {
                e.release().await;
            }
            Ok(())
        }
        _ = keep => anyhow::bail!("lost leadership; exiting so that a fresh start competes again"),
    }
}

/// This replica's identity in the Lease: the pod name, else host and process id.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_follows_server_version() {
        assert_eq!(default_flavor(FlavorArg::Auto, 1, 20), Flavor::Rbd);
        assert_eq!(default_flavor(FlavorArg::Auto, 1, 30), Flavor::Rbd);
        assert_eq!(default_flavor(FlavorArg::Auto, 1, 31), Flavor::Csi);
        assert_eq!(default_flavor(FlavorArg::Auto, 2, 0), Flavor::Csi);
        assert_eq!(default_flavor(FlavorArg::Rbd, 1, 33), Flavor::Rbd);
        assert_eq!(default_flavor(FlavorArg::Csi, 1, 20), Flavor::Csi);
    }

    #[test]
    fn versions_with_plus() {
        assert_eq!(version_number("20+"), 20);
        assert_eq!(version_number("1"), 1);
        assert_eq!(version_number(""), 0);
    }
}
