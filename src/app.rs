//! Command line, logging, client setup: the edge where `anyhow` is allowed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::Instrument as _;

use crate::controller::{self, Settings};
use crate::leader::{Elector, Timing};
use crate::metrics::Metrics;
use ceph::Timeouts;
use domain::params::Flavor;
use domain::server_version::ServerVersion;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Kubernetes external provisioner for Ceph RBD volumes, through librbd",
    // A flag given twice takes the last value, as in most tools (and wrappers can append).
    args_override_self = true
)]
pub struct Cli {
    /// Kubeconfig to use instead of the in-cluster ServiceAccount ($KUBECONFIG is honoured
    /// too, as by every Kubernetes tool).
    #[arg(long, env = "KUBECONFIG_PATH", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Kubernetes API calls per second, on average (client-go's token bucket); 0: no limit.
    #[arg(long, env = "KUBE_API_QPS", default_value_t = 0.0, global = true)]
    pub kube_api_qps: f64,

    /// Kubernetes API calls allowed at once above --kube-api-qps.
    #[arg(long, env = "KUBE_API_BURST", default_value_t = 10, global = true)]
    pub kube_api_burst: u32,

    /// Log format: text, or json (one object per line, for log pipelines).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More detail in the logs: -v debug for the provisioner, -vv debug for everything,
    /// -vvv trace. RUST_LOG, when set, decides instead.
    #[arg(short = 'v', action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The `provisioner` value of the StorageClasses to serve.
    #[arg(
        long,
        env = "PROVISIONER_NAME",
        default_value = "ceph.com/rbd",
        global = true
    )]
    pub provisioner_name: String,

    /// Claims (and volumes) handled at the same time (alias: --worker-threads).
    #[arg(long, alias = "worker-threads", env = "WORKERS", default_value_t = 16)]
    pub workers: u16,

    /// Address for /metrics, /healthz and /readyz; empty disables (alias: --http-endpoint).
    #[arg(
        long,
        alias = "http-endpoint",
        env = "METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: String,

    /// Provision a claim as soon as it exists when no existing volume could serve it, instead
    /// of waiting for kube-controller-manager to hand it over (--early-provisioning=false to wait).
    #[arg(long, env = "EARLY_PROVISIONING", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub early_provisioning: bool,

    /// First retry delay after a failed claim or volume; doubles up to --retry-interval-max.
    #[arg(long, env = "RETRY_INTERVAL_START", value_name = "DURATION", default_value = "1s", value_parser = crate::leader::parse_duration)]
    pub retry_interval_start: Duration,

    /// Longest retry delay.
    #[arg(long, env = "RETRY_INTERVAL_MAX", value_name = "DURATION", default_value = "5m", value_parser = crate::leader::parse_duration)]
    pub retry_interval_max: Duration,

    /// How long a Ceph connection may take (monitors unreachable, wrong key) before failing.
    #[arg(
        long,
        env = "CEPH_CONNECT_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = crate::leader::parse_duration_or_seconds
    )]
    pub ceph_connect_timeout: Duration,

    /// How long a single Ceph request may take.
    #[arg(
        long,
        env = "CEPH_OP_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = crate::leader::parse_duration_or_seconds
    )]
    pub ceph_op_timeout: Duration,

    /// Time between housekeeping passes (purge what we trashed, collect orphaned images,
    /// close idle Ceph clients); 0 turns them off.
    #[arg(
        long,
        env = "MAINTENANCE_INTERVAL",
        value_name = "DURATION",
        default_value = "5m",
        value_parser = crate::leader::parse_duration_or_seconds
    )]
    pub maintenance_interval: Duration,

    /// How long a Ceph client may stay unused before it is closed (and its key forgotten).
    #[arg(
        long,
        env = "CEPH_CLIENT_IDLE",
        value_name = "DURATION",
        default_value = "10m",
        value_parser = crate::leader::parse_duration_or_seconds
    )]
    pub ceph_client_idle: Duration,

    /// Age after which a Ceph client, even one in use, is replaced by a freshly
    /// authenticated one (a rotated key or revoked caps count then); 0 keeps clients.
    #[arg(
        long,
        env = "CEPH_CLIENT_MAX_AGE",
        value_name = "DURATION",
        default_value = "5m",
        value_parser = crate::leader::parse_duration_or_seconds
    )]
    pub ceph_client_max_age: Duration,

    /// How long an image of ours that never had a PV must exist (claim gone) before it is collected.
    #[arg(
        long,
        env = "ORPHAN_GRACE",
        value_name = "DURATION",
        default_value = "10m",
        value_parser = crate::leader::parse_duration_or_seconds
    )]
    pub orphan_grace: Duration,

    /// PV flavour for classes without `volumeFlavor`: auto picks `rbd` below Kubernetes 1.31, `csi` from 1.31.
    #[arg(long, env = "VOLUME_FLAVOR", value_enum, default_value_t = FlavorArg::Auto)]
    pub volume_flavor: FlavorArg,

    /// Elect a leader among replicas through a Lease, so that only one acts (alias: --leader-election).
    #[arg(long, alias = "leader-election", env = "LEADER_ELECT", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub leader_election_namespace: String,

    /// A standby takes over after seeing the Lease unchanged this long (Go duration: 15s, 2m).
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", value_name = "DURATION", default_value = "15s", value_parser = crate::leader::parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// The leader stops (exits) when it could not renew the Lease for this long; shorter than the lease duration.
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", value_name = "DURATION", default_value = "10s", value_parser = crate::leader::parse_duration)]
    pub leader_election_renew_deadline: Duration,

    /// Pause between attempts to acquire or renew the Lease.
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", value_name = "DURATION", default_value = "2s", value_parser = crate::leader::parse_duration)]
    pub leader_election_retry_period: Duration,

    /// ceph-csi's ConfigMap of clusterIDs and their monitors, read when a volume's class no longer reaches its cluster: NAME (in the Lease's namespace) or NAMESPACE/NAME; empty: not read.
    #[arg(
        long,
        env = "CEPH_CSI_CONFIG",
        default_value = "ceph-csi-config",
        global = true
    )]
    pub ceph_csi_config: String,

    /// Our ServiceAccount as namespace:name, named in RBAC hints.
    #[arg(
        long,
        env = "SERVICE_ACCOUNT",
        default_value = "kube-system:rbd-provisioner",
        global = true
    )]
    pub service_account: String,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FlavorArg {
    Auto,
    Rbd,
    Csi,
}

impl FlavorArg {
    /// The flavour chosen on the command line; `None` for auto (the server's version decides).
    pub fn chosen(self) -> Option<Flavor> {
        match self {
            FlavorArg::Auto => None,
            FlavorArg::Rbd => Some(Flavor::Rbd),
            FlavorArg::Csi => Some(Flavor::Csi),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the provisioner (the default).
    Run,
    /// Read-only report of what may have leaked: images of ours no PV names, PVs of ours
    /// whose image is missing, trash entries.
    Audit(crate::audit::AuditArgs),
    /// Rewrite the spec.rbd PVs of a StorageClass as static ceph-csi PVs (for Kubernetes >= 1.31).
    MigrateToCsi(crate::migrate::MigrateArgs),
    /// Preflight a StorageClass (in the cluster, or a manifest before it is applied): a
    /// table of checks, each failure with the command that fixes it; non-zero exit on failure.
    Doctor(crate::doctor::DoctorArgs),
    /// Give kept images (ours, stamped, no PV names them) their PVs back: a table of the pool's
    /// kept images and whether each is adoptable; --apply writes the PVs (Retain, pre-bound).
    Adopt(crate::adopt::AdoptArgs),
}

/// The log filter for `-v` counts, unless RUST_LOG says otherwise.
fn log_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "info,kube=warn,tower=warn,hyper=warn",
        1 => "info,rbd_provisioner=debug,kube=warn,tower=warn,hyper=warn",
        2 => "debug",
        _ => "trace",
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| log_filter(cli.verbose).into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    // The provisioner runs in-cluster; an operator's command uses their kubeconfig.
    let in_cluster = matches!(cli.command.as_ref().unwrap_or(&Command::Run), Command::Run);
    let mut config = config(cli.kubeconfig.as_ref(), in_cluster).await?;
    let me = identity();
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_str(&user_agent(in_cluster.then_some(me.as_str())))?,
    ));
    let client = client(config.clone(), Some((cli.kube_api_qps, cli.kube_api_burst)))?;
    match cli.command.as_ref().unwrap_or(&Command::Run) {
        Command::Run => {
            // The Lease has a client of its own: renewals never wait behind the rate limit.
            let lease_client = self::client(config, None)?;
            run_provisioner(cli, client, lease_client, me).await
        }
        Command::Audit(args) => {
            crate::audit::run(client, args.clone(), &cli.provisioner_name).await
        }
        Command::MigrateToCsi(args) => {
            Ok(crate::migrate::run(client, args.clone(), &cli.provisioner_name).await?)
        }
        Command::Adopt(args) => {
            let globals = crate::adopt::Globals {
                provisioner: &cli.provisioner_name,
                service_account: &cli.service_account,
                flavor: cli.volume_flavor.chosen(),
            };
            crate::adopt::run(client, args.clone(), globals).await
        }
        Command::Doctor(args) => {
            crate::doctor::run(
                client,
                args.clone(),
                &cli.provisioner_name,
                &cli.service_account,
                cli.volume_flavor.chosen(),
                ceph_csi_config(&cli.ceph_csi_config, &cli.leader_election_namespace)?.as_ref(),
            )
            .await
        }
    }
}

async fn config(kubeconfig: Option<&PathBuf>, in_cluster: bool) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None if in_cluster && std::env::var_os("KUBECONFIG").is_none() => {
            kube::Config::incluster().context(
                "not running in a cluster (no ServiceAccount mounted): pass --kubeconfig or set KUBECONFIG",
            )?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig found ($KUBECONFIG, ~/.kube/config): pass --kubeconfig")?,
    })
}

/// A client, its calls limited to `limit` (qps, burst) when qps is positive.
fn client(config: kube::Config, limit: Option<(f64, u32)>) -> anyhow::Result<kube::Client> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    if let Some((qps, burst)) = limit.filter(|(qps, _)| *qps > 0.0 && qps.is_finite()) {
        tracing::info!(qps, burst, "Kubernetes API calls limited");
        let limit = crate::ratelimit::RateLimitLayer::new(qps, burst);
        Ok(builder.with_layer(&limit).build())
    } else {
        Ok(builder.build())
    }
}

/// The flavour for classes that do not choose: in-tree `spec.rbd` was removed in Kubernetes 1.31.
async fn run_provisioner(
    cli: Cli,
    client: kube::Client,
    lease_client: kube::Client,
    me: String,
) -> anyhow::Result<()> {
    let v = client
        .apiserver_version()
        .await
        .context("asking the API server for its version")?;
    let server = ServerVersion::parse(&v.major, &v.minor);
    let default_flavor = server.default_flavor(cli.volume_flavor.chosen());
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
    let timing = Timing {
        lease_duration: cli.leader_election_lease_duration,
        renew_deadline: cli.leader_election_renew_deadline,
        retry_period: cli.leader_election_retry_period,
    };
    if cli.leader_elect {
        timing.validate()?;
    }
    let settings = Settings {
        provisioner: cli.provisioner_name,
        service_account: cli.service_account,
        default_flavor,
        workers: cli.workers.max(1),
        ceph_timeouts: Timeouts {
            connect: cli.ceph_connect_timeout.max(Duration::from_secs(1)),
            op: cli.ceph_op_timeout.max(Duration::from_secs(1)),
        },
        maintenance_interval: cli.maintenance_interval,
        orphan_grace: cli.orphan_grace,
        ceph_idle: cli.ceph_client_idle,
        ceph_max_age: cli.ceph_client_max_age,
        early_provisioning: cli.early_provisioning,
        retry_start: cli.retry_interval_start.max(Duration::from_millis(10)),
        retry_max: cli.retry_interval_max.max(cli.retry_interval_start),
        replica: me.clone(),
        ceph_csi_config: ceph_csi_config(&cli.ceph_csi_config, &cli.leader_election_namespace)?,
        client_profiles: true,
        streaming_lists: server.streams_lists(),
    };
    let elector = cli.leader_elect.then(|| {
        Elector::new(
            lease_client,
            &cli.leader_election_namespace,
            &settings.provisioner,
            me.clone(),
            timing,
        )
    });
    let deadline = match &elector {
        Some(e) => tokio::select! {
            d = e.acquire() => Some(d),
            _ = terminated() => return Ok(()),
        },
        None => None,
    };
    let keep = async {
        match (&elector, deadline) {
            // keep() never returns: losing the lease ends the process.
            (Some(e), Some(d)) => match e.keep(d).await {},
            _ => std::future::pending::<()>().await,
        }
    };
    metrics.health.became_leader();
    metrics.set_leader(true);
    // Every line of the controllers names this replica, so logs show who acted.
    let replica = tracing::info_span!("replica", identity = %me);
    tokio::select! {
        r = controller::run(client, settings, metrics.clone()).instrument(replica) => {
            metrics.health.controllers_stopped();
            metrics.set_leader(false);
            let Some(e) = &elector else { return Ok(r?) };
            if let Err(err) = &r {
                tracing::error!(error = %err, "controllers failed");
            }
            tracing::info!(identity = %me, "stopped acting; releasing the lease");
            e.release().await;
            // End now: background work (trash purges on blocking threads) must not outlive
            // the lease, and dropping the runtime would wait for it.
            crate::process::exit_process(if r.is_ok() { 0 } else { 1 })
        }
        _ = keep => unreachable!("keep() only ends by ending the process"),
    }
}

/// The API server names a write's field manager (`metadata.managedFields[].manager`) after the
/// User-Agent up to its first `/`: with the replica's identity there, every PV and Lease write
/// says which replica made it, which an operator (and the leader tests) can hold against the
/// Lease's holder at that moment.
fn user_agent(replica: Option<&str>) -> String {
    let version = env!("CARGO_PKG_VERSION");
    // A header value must be visible ASCII; pod and host names are, but nothing checks them.
    let replica = replica.map(|id| {
        id.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
    });
    match replica {
        Some(id) => format!("rbd-provisioner@{id}/{version}"),
        None => format!("rbd-provisioner/{version}"),
    }
}

/// This replica's identity in the Lease: its pod (else host) name and a random suffix.
fn identity() -> String {
    let pod = std::env::var("POD_NAME").ok();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    domain::lease::replica_identity(pod.as_deref(), &host, crate::leader::random_u64())
}

async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `--ceph-csi-config` as (namespace, name): a bare name is in `own_namespace`; empty: none.
pub fn ceph_csi_config(
    flag: &str,
    own_namespace: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let flag = flag.trim();
    if flag.is_empty() {
        return Ok(None);
    }
    let (ns, name) = flag.split_once('/').unwrap_or((own_namespace, flag));
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        anyhow::bail!(
            "--ceph-csi-config {flag:?}: give NAME, NAMESPACE/NAME, or \"\" to not read it"
        );
    }
    Ok(Some((ns.to_string(), name.to_string())))
}

#[cfg(test)]
mod tests;
