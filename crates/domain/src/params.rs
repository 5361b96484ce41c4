//! StorageClass parameters of the original `ceph.com/rbd` provisioner, parsed into a typed,
//! validated struct. Pure: no I/O, no Kubernetes client.

use std::collections::BTreeMap;
use std::fmt;

/// The pool when a class (or an old provisioner's PV) names none, as the original provisioner did.
pub const DEFAULT_POOL: &str = "rbd";

/// A Secret named by a StorageClass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which kind of PersistentVolume source the provisioner writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// In-tree `spec.rbd`: mounted by kubelet's rbd plugin, which exists up to Kubernetes 1.30.
    Rbd,
    /// Static ceph-csi volume (`spec.csi`, driver `rbd.csi.ceph.com`), for Kubernetes 1.31 and later.
    Csi,
}

/// Validated parameters of one StorageClass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassParams {
    /// `host[:port]` entries, in the order given.
    pub monitors: Vec<String>,
    pub admin_id: String,
    pub admin_secret: SecretRef,
    pub pool: String,
    pub user_id: String,
    pub user_secret_name: String,
    /// `None` means: the claim's namespace.
    pub user_secret_namespace: Option<String>,
    pub fs_type: String,
    pub data_pool: Option<String>,
    /// `None` means: chosen by the API server's version.
    pub flavor: Option<Flavor>,
    /// ceph-csi's cluster ID (csi flavour only). `None`: the Ceph cluster's fsid, read when
    /// provisioning (ceph-csi's `ceph-csi-config` is commonly keyed by it).
    pub cluster_id: Option<String>,
    /// Secret in ceph-csi's format (`userID`, `userKey`) for `nodeStageSecretRef` (csi flavour
    /// only). `None`: the user Secret when it is in that format, else its companion
    /// `<userSecretName>-csi` next to it (see `volume::companion_secret`).
    pub csi_secret: Option<SecretRef>,
    /// Name of the ceph-csi driver that mounts csi PVs (`csiDriver`; Rook installs
    /// `rook-ceph.rbd.csi.ceph.com`).
    pub csi_driver: String,
    /// The largest claim this class provisions, in bytes (`maxSize`).
    pub max_size: u64,
    /// The longest chain of clones of clones (`maxCloneDepth`): a clone deeper than this is
    /// flattened once made.
    pub max_clone_depth: u32,
    /// The longest chain a clone or restore may start (`hardMaxCloneDepth`): a deeper one is
    /// refused, since flattening it later would be too late for the kernels that map it.
    pub hard_max_clone_depth: u32,
    /// The most RBD snapshots one image may have (`maxSnapshotsPerImage`); a VolumeSnapshot
    /// beyond it is refused.
    pub max_snapshots: u32,
    /// How ceph-csi's node plugin maps csi volumes (`mounter`, `mapOptions`, `unmapOptions`).
    pub node_map: NodeMap,
}

/// ceph-csi's node-side mapping settings, carried as given into csi PVs' `volumeAttributes`
/// (in-tree volumes cannot carry them: kubelet's rbd plugin always maps with the kernel).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMap {
    /// `rbd` (the kernel client) or `rbd-nbd` (userspace, for features the kernel lacks).
    pub mounter: Option<String>,
    /// Options for `rbd map` / `rbd-nbd map`, e.g. `krbd:lock_on_read;nbd:try-netlink`.
    pub map_options: Option<String>,
    pub unmap_options: Option<String>,
}

impl NodeMap {
    /// The `volumeAttributes` entries, under ceph-csi's keys.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        [
            ("mounter", &self.mounter),
            ("mapOptions", &self.map_options),
            ("unmapOptions", &self.unmap_options),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.clone()?)))
        .collect()
    }

    fn given(&self) -> Vec<&'static str> {
        self.attributes().into_iter().map(|(k, _)| k).collect()
    }
}

/// The mappers ceph-csi's node plugin knows.
pub const MOUNTERS: &[&str] = &["rbd", "rbd-nbd"];

/// `maxSize` when a class gives none: far above the volumes people use (hundreds of TiB,
/// thin), far below the exabytes whose deletion would keep a purge busy for years (a
/// layering-only image has no object map, so removing it probes every object its size allows).
pub const DEFAULT_MAX_SIZE: u64 = 1 << 50;
/// `maxCloneDepth` when a class gives none: ceph-csi's soft limit; every kernel client maps
/// chains up to 16.
pub const DEFAULT_MAX_CLONE_DEPTH: u32 = 4;
/// The deepest chain a class may allow: the kernel client's own limit.
const MAX_CLONE_DEPTH_LIMIT: u32 = 16;
/// `hardMaxCloneDepth` when a class gives none: ceph-csi's hard limit.
pub const DEFAULT_HARD_MAX_CLONE_DEPTH: u32 = 8;
/// `maxSnapshotsPerImage` when a class gives none: ceph-csi's limit.
pub const DEFAULT_MAX_SNAPSHOTS: u32 = 450;
/// The kernel client maps images of at most 510 snapshots.
const MAX_SNAPSHOTS_LIMIT: u32 = 510;

impl ClassParams {
    /// Namespace of the user Secret for a claim in `claim_namespace`.
    pub fn user_secret(&self, claim_namespace: &str) -> SecretRef {
        SecretRef {
            namespace: self
                .user_secret_namespace
                .clone()
                .unwrap_or_else(|| claim_namespace.to_string()),
            name: self.user_secret_name.clone(),
        }
    }
}

/// One thing wrong with a StorageClass's parameters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unknown parameter {key:?} (known: {known})", known = KNOWN.join(", "))]
    Unknown { key: String },
    #[error("parameter {key:?} is given twice (keys are case-insensitive)")]
    Duplicate { key: String },
    #[error("parameter {key:?} is required")]
    Missing { key: &'static str },
    #[error("parameter {key:?} must not be empty")]
    Empty { key: &'static str },
    #[error(
        "monitor {value:?} is not host[:port] ({reason}); write e.g. \"10.0.0.1:6789,10.0.0.2:6789\""
    )]
    Monitor { value: String, reason: &'static str },
    #[error(
        "imageFormat \"1\" is not supported: format 1 images are deprecated and cannot be cloned, \
         resized safely or created by current librbd; use imageFormat: \"2\""
    )]
    ImageFormat1,
    #[error("imageFormat {value:?} is not valid; the only supported value is \"2\"")]
    ImageFormat { value: String },
    #[error(
        "imageFeatures {value:?} is not supported: only \"layering\" is, because node kernels often \
         cannot map images with other features (\"RBD image feature set mismatch\"); \
         set imageFeatures: layering"
    )]
    ImageFeatures { value: String },
    #[error("{key} {value:?} is not a valid name: {reason}")]
    Name {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "volumeFlavor {value:?} is not valid; use \"rbd\" (in-tree spec.rbd, Kubernetes < 1.31) or \"csi\" (ceph-csi static volume)"
    )]
    Flavor { value: String },
    #[error("parameter {key:?} applies only to volumeFlavor: csi")]
    CsiOnly { key: &'static str },
    #[error(
        "parameter {key:?} applies only to csi volumes, and this class makes in-tree ones (volumeFlavor by the server version): kubelet's rbd plugin always maps with the kernel; set volumeFlavor: csi, or remove {key}"
    )]
    InTreeCannotCarry { key: &'static str },
    #[error(
        "mounter {value:?} is not valid; ceph-csi knows \"rbd\" (the kernel client) and \"rbd-nbd\""
    )]
    Mounter { value: String },
    #[error("maxSize {value:?} is not valid: {reason}; write a size such as \"100Ti\"")]
    MaxSize { value: String, reason: String },
    #[error("maxCloneDepth {value:?} is not valid: give a whole number from 1 to 16")]
    MaxCloneDepth { value: String },
    #[error(
        "hardMaxCloneDepth {value:?} is not valid: give a whole number from maxCloneDepth ({soft}) to 16"
    )]
    HardMaxCloneDepth { value: String, soft: u32 },
    #[error("maxSnapshotsPerImage {value:?} is not valid: give a whole number from 1 to 510")]
    MaxSnapshots { value: String },
}

/// All problems found in one StorageClass, so an operator can fix them in one pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ParamErrors(pub Vec<ParamError>);

/// Recognised keys, in their documented spelling.
pub const KNOWN: &[&str] = &[
    "monitors",
    "adminId",
    "adminSecretName",
    "adminSecretNamespace",
    "pool",
    "userId",
    "userSecretName",
    "userSecretNamespace",
    "fsType",
    "imageFormat",
    "imageFeatures",
    "dataPool",
    "volumeFlavor",
    "clusterID",
    "csiNodeStageSecretName",
    "csiNodeStageSecretNamespace",
    "csiDriver",
    "maxSize",
    "maxCloneDepth",
    "hardMaxCloneDepth",
    "maxSnapshotsPerImage",
    "mounter",
    "mapOptions",
    "unmapOptions",
];

/// ceph-csi's default driver name, used when a class has no `csiDriver`.
pub const DEFAULT_CSI_DRIVER: &str = "rbd.csi.ceph.com";

/// Parses StorageClass parameters. Keys match case-insensitively; values are trimmed.
pub fn parse(raw: &BTreeMap<String, String>) -> Result<ClassParams, ParamErrors> {
    let mut errors = Vec::new();
    let mut found: BTreeMap<&'static str, String> = BTreeMap::new();
    for (key, value) in raw {
        match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(key.trim())) {
            None => errors.push(ParamError::Unknown { key: key.clone() }),
            Some(k) => {
                if found.insert(k, value.trim().to_string()).is_some() {
                    errors.push(ParamError::Duplicate { key: key.clone() });
                }
            }
        }
    }

    // A key present with an empty value is an error; an absent key takes its default.
    let mut opt = |key: &'static str, errors: &mut Vec<ParamError>| -> Option<String> {
        let v = found.remove(key)?;
        if v.is_empty() {
            errors.push(ParamError::Empty { key });
            None
        } else {
            Some(v)
        }
    };
    let monitors_raw = opt("monitors", &mut errors);
    let admin_id = opt("adminId", &mut errors);
    let admin_secret_name = opt("adminSecretName", &mut errors);
    let admin_secret_namespace = opt("adminSecretNamespace", &mut errors);
    let pool = opt("pool", &mut errors);
    let user_id = opt("userId", &mut errors);
    let user_secret_name = opt("userSecretName", &mut errors);
    let user_secret_namespace = opt("userSecretNamespace", &mut errors);
    let fs_type = opt("fsType", &mut errors);
    let image_format = opt("imageFormat", &mut errors);
    let image_features = opt("imageFeatures", &mut errors);
    let data_pool = opt("dataPool", &mut errors);
    let flavor_raw = opt("volumeFlavor", &mut errors);
    let cluster_id = opt("clusterID", &mut errors);
    let csi_secret_name = opt("csiNodeStageSecretName", &mut errors);
    let csi_secret_namespace = opt("csiNodeStageSecretNamespace", &mut errors);
    let csi_driver = opt("csiDriver", &mut errors);
    let max_size_raw = opt("maxSize", &mut errors);
    let max_clone_depth_raw = opt("maxCloneDepth", &mut errors);
    let hard_max_clone_depth_raw = opt("hardMaxCloneDepth", &mut errors);
    let max_snapshots_raw = opt("maxSnapshotsPerImage", &mut errors);
    let node_map = NodeMap {
        mounter: opt("mounter", &mut errors),
        map_options: opt("mapOptions", &mut errors),
        unmap_options: opt("unmapOptions", &mut errors),
    };
    if let Some(m) = &node_map.mounter
        && !MOUNTERS.contains(&m.as_str())
    {
        errors.push(ParamError::Mounter { value: m.clone() });
    }
    let max_size = match &max_size_raw {
        None => DEFAULT_MAX_SIZE,
        Some(v) => match crate::quantity::to_bytes(v) {
            Ok(b) if b >= 1 << 20 => u64::try_from(b).unwrap_or(u64::MAX),
            Ok(_) => {
                errors.push(ParamError::MaxSize {
                    value: v.clone(),
                    reason: "it must be at least 1Mi".into(),
                });
                DEFAULT_MAX_SIZE
            }
            Err(e) => {
                errors.push(ParamError::MaxSize {
                    value: v.clone(),
                    reason: e.to_string(),
                });
                DEFAULT_MAX_SIZE
            }
        },
    };
    let max_clone_depth = match &max_clone_depth_raw {
        None => DEFAULT_MAX_CLONE_DEPTH,
        Some(v) => match v.parse::<u32>() {
            Ok(d) if (1..=MAX_CLONE_DEPTH_LIMIT).contains(&d) => d,
            _ => {
                errors.push(ParamError::MaxCloneDepth { value: v.clone() });
                DEFAULT_MAX_CLONE_DEPTH
            }
        },
    };
    let hard_max_clone_depth = match &hard_max_clone_depth_raw {
        None => DEFAULT_HARD_MAX_CLONE_DEPTH.max(max_clone_depth),
        Some(v) => match v.parse::<u32>() {
            Ok(d) if (max_clone_depth..=MAX_CLONE_DEPTH_LIMIT).contains(&d) => d,
            _ => {
                errors.push(ParamError::HardMaxCloneDepth {
                    value: v.clone(),
                    soft: max_clone_depth,
                });
                DEFAULT_HARD_MAX_CLONE_DEPTH
            }
        },
    };
    let max_snapshots = match &max_snapshots_raw {
        None => DEFAULT_MAX_SNAPSHOTS,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_SNAPSHOTS_LIMIT).contains(&n) => n,
            _ => {
                errors.push(ParamError::MaxSnapshots { value: v.clone() });
                DEFAULT_MAX_SNAPSHOTS
            }
        },
    };
    if let Some(d) = &csi_driver
        && !valid_driver_name(d)
    {
        errors.push(ParamError::Name {
            key: "csiDriver",
            value: d.clone(),
            reason: "a CSI driver name is a DNS name of at most 63 characters (lowercase letters, digits, '-', '.'), as listed by kubectl get csidrivers",
        });
    }

    // Absent, not merely empty or invalid (those were reported when read).
    let absent = |key: &str| !raw.keys().any(|k| k.trim().eq_ignore_ascii_case(key));
    let monitors = match monitors_raw {
        None => {
            if absent("monitors") {
                errors.push(ParamError::Missing { key: "monitors" });
            }
            Vec::new()
        }
        Some(m) => parse_monitors(&m, &mut errors),
    };
    for (value, key) in [
        (&admin_secret_name, "adminSecretName"),
        (&user_secret_name, "userSecretName"),
    ] {
        if value.is_none() && absent(key) {
            errors.push(ParamError::Missing { key });
        }
    }

    match image_format.as_deref() {
        None | Some("2") => {}
        Some("1") => errors.push(ParamError::ImageFormat1),
        Some(v) => errors.push(ParamError::ImageFormat { value: v.into() }),
    }
    if let Some(f) = &image_features {
        let only_layering = f
            .split(',')
            .map(str::trim)
            .all(|x| x.eq_ignore_ascii_case("layering"));
        if !only_layering {
            errors.push(ParamError::ImageFeatures { value: f.clone() });
        }
    }

    let admin_id = admin_id.unwrap_or_else(|| "admin".into());
    let user_id = user_id.unwrap_or_else(|| admin_id.clone());
    let pool = pool.unwrap_or_else(|| DEFAULT_POOL.into());
    for (key, value) in [("adminId", &admin_id), ("userId", &user_id)] {
        if value.starts_with("client.") {
            errors.push(ParamError::Name {
                key,
                value: value.clone(),
                reason: "give the Ceph user id without the \"client.\" prefix",
            });
        }
    }
    for (key, value) in [("pool", Some(&pool)), ("dataPool", data_pool.as_ref())] {
        if let Some(v) = value
            && let Some(reason) = bad_pool_name(v)
        {
            errors.push(ParamError::Name {
                key,
                value: v.clone(),
                reason,
            });
        }
    }

    let flavor = match flavor_raw
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("rbd") => Some(Flavor::Rbd),
        Some("csi") => Some(Flavor::Csi),
        Some(_) => {
            errors.push(ParamError::Flavor {
                value: flavor_raw.clone().unwrap_or_default(),
            });
            None
        }
    };
    if flavor == Some(Flavor::Rbd) {
        for (key, v) in [
            ("clusterID", &cluster_id),
            ("csiNodeStageSecretName", &csi_secret_name),
            ("csiNodeStageSecretNamespace", &csi_secret_namespace),
            ("csiDriver", &csi_driver),
        ] {
            if v.is_some() {
                errors.push(ParamError::CsiOnly { key });
            }
        }
        errors.extend(
            node_map
                .given()
                .into_iter()
                .map(|key| ParamError::CsiOnly { key }),
        );
    }

    if !errors.is_empty() {
        return Err(ParamErrors(errors));
    }
    let csi_secret = csi_secret_name.map(|name| SecretRef {
        namespace: csi_secret_namespace.unwrap_or_else(|| "default".into()),
        name,
    });
    Ok(ClassParams {
        monitors,
        admin_id,
        admin_secret: SecretRef {
            namespace: admin_secret_namespace.unwrap_or_else(|| "default".into()),
            name: admin_secret_name.unwrap_or_default(),
        },
        pool,
        user_id,
        user_secret_name: user_secret_name.unwrap_or_default(),
        user_secret_namespace,
        fs_type: fs_type.unwrap_or_else(|| "ext4".into()),
        data_pool,
        flavor,
        cluster_id,
        csi_secret,
        csi_driver: csi_driver.unwrap_or_else(|| DEFAULT_CSI_DRIVER.into()),
        max_size,
        max_clone_depth,
        hard_max_clone_depth,
        max_snapshots,
        node_map,
    })
}

/// A CSI driver name: at most 63 characters, DNS-1123 labels joined by dots.
pub fn valid_driver_name(d: &str) -> bool {
    d.len() <= 63
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Checks the csi-only requirements once the flavour is known (it may come from the server
/// version). Every csi parameter has a default now: `clusterID` is the Ceph cluster's fsid,
/// the node-stage Secret is found next to the user Secret (see `volume::NodeStage`), so a
/// class written for the in-tree plugin (the walkthrough's) keeps working after an upgrade
/// past Kubernetes 1.30; what is missing then is reported when a claim is provisioned.
pub fn check_csi(_p: &ClassParams) -> Result<(), ParamErrors> {
    Ok(())
}

/// Checks a class whose flavour came out in-tree (by the server version): the csi-only node
/// mapping settings cannot be carried, and are refused rather than silently dropped.
pub fn check_in_tree(p: &ClassParams) -> Result<(), ParamErrors> {
    let errors: Vec<ParamError> = p
        .node_map
        .given()
        .into_iter()
        .map(|key| ParamError::InTreeCannotCarry { key })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ParamErrors(errors))
    }
}

fn parse_monitors(raw: &str, errors: &mut Vec<ParamError>) -> Vec<String> {
    let mut out = Vec::new();
    for entry in raw.split(',').map(str::trim) {
        match check_monitor(entry) {
            Ok(()) => out.push(entry.to_string()),
            Err(reason) => errors.push(ParamError::Monitor {
                value: entry.to_string(),
                reason,
            }),
        }
    }
    out
}

/// Accepts `host`, `host:port`, `[v6]`, `[v6]:port`, optionally prefixed `v1:` or `v2:`.
fn check_monitor(entry: &str) -> Result<(), &'static str> {
    if entry.is_empty() {
        return Err("empty entry");
    }
    let entry = entry
        .strip_prefix("v1:")
        .or_else(|| entry.strip_prefix("v2:"))
        .unwrap_or(entry);
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("missing ']' after IPv6 address")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "bad IPv6 address")?;
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(p.strip_prefix(':').ok_or("expected ':' after ']'")?),
            ),
        }
    } else {
        match entry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(entry), None),
        }
    };
    if let Some(h) = host {
        let looks_numeric = h.chars().all(|c| c.is_ascii_digit() || c == '.');
        if looks_numeric {
            h.parse::<std::net::Ipv4Addr>()
                .map_err(|_| "bad IPv4 address")?;
        } else if h.is_empty()
            || h.len() > 253
            || !h
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err("bad host name");
        }
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err("port must be a number from 1 to 65535"),
        }
    }
    Ok(())
}

fn bad_pool_name(name: &str) -> Option<&'static str> {
    if name.contains('/') || name.contains('@') || name.chars().any(char::is_whitespace) {
        Some("pool names cannot contain '/', '@' or spaces")
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
