//! The Ceph side of a class: monitors reachable, the admin key able to create and remove an
//! image in the pool, the user key able to read it.

use std::sync::Arc;
use std::time::Duration;

use ceph::{CephKey, Cluster, Credentials, ImageSpec, RBD_FEATURE_LAYERING, Timeouts};
use domain::params::ClassParams;

use super::{Row, Status, fail, row};

/// A monitor as `host:port` for a TCP probe; 6789 when no port is given.
pub(super) fn monitor_addr(m: &str) -> String {
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

/// Each monitor accepts a TCP connection.
pub(super) async fn monitor_rows(monitors: &[String]) -> Vec<Row> {
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
/// The connected cluster is handed back for the checks that ask it more.
pub(super) async fn admin_rows(
    p: &ClassParams,
    key: CephKey,
    timeouts: Timeouts,
) -> (Vec<Row>, Option<Arc<Cluster>>) {
    let creds = Credentials {
        monitors: p.monitors.clone(),
        user: p.admin_id.clone(),
        key,
    };
    let cluster = match Cluster::connect(&creds, timeouts).await {
        Ok(c) => c,
        Err(e) => {
            let r = fail(
                "admin key",
                format!("client.{} cannot connect: {e}", p.admin_id),
                format!(
                    "compare the Secret with ceph auth get-key client.{}, and the monitors with ceph mon dump",
                    p.admin_id
                ),
            );
            return (vec![r], None);
        }
    };
    let mut rows = vec![row(
        "admin key",
        Status::Ok,
        format!("client.{} authenticates", p.admin_id),
    )];
    match cluster.list_images(&p.pool).await {
        Ok(images) => rows.push(pool_row(&cluster, &p.pool, images.len()).await),
        Err(e) if e.is_pool_missing() => {
            rows.push(fail(
                "pool",
                format!("pool {} does not exist", p.pool),
                format!(
                    "ceph osd pool create {0} && rbd pool init {0} (or set pool to an existing RBD pool)",
                    p.pool
                ),
            ));
            return (rows, Some(cluster));
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
    (rows, Some(cluster))
}

/// The pool is initialised for RBD: `rbd pool init` enables the `rbd` application on it.
/// Without it Ceph reports POOL_APP_NOT_ENABLED, and a pool tagged for something else (CephFS,
/// RGW) is not one to put volumes in.
async fn pool_row(cluster: &Arc<Cluster>, pool: &str, images: usize) -> Row {
    match cluster.pool_applications(pool).await {
        Ok(apps) if apps.iter().any(|a| a == "rbd") => row(
            "pool",
            Status::Ok,
            format!("{pool} exists, initialised for RBD ({images} images)"),
        ),
        Ok(apps) if apps.is_empty() => fail(
            "pool",
            format!("{pool} exists but is not initialised for RBD (no application enabled)"),
            format!("rbd pool init {pool}"),
        ),
        Ok(apps) => fail(
            "pool",
            format!("{pool} is enabled for {}, not for RBD", apps.join(", ")),
            format!(
                "use a pool made for RBD (ceph osd pool create NAME && rbd pool init NAME); if {pool} really is meant for RBD too: ceph osd pool application enable {pool} rbd"
            ),
        ),
        Err(e) => row(
            "pool",
            Status::Warn,
            format!("{pool} exists ({images} images); its applications could not be read: {e}"),
        ),
    }
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
pub(super) async fn user_row(p: &ClassParams, key: CephKey, timeouts: Timeouts) -> Row {
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
