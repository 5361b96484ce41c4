//! The csi node-stage Secret.
//!
//! ceph-csi's node plugin reads the Ceph id and key from the PV's `nodeStageSecretRef`, under
//! `userID` and `userKey`. The walkthrough's user Secret (type kubernetes.io/rbd) holds only
//! `key`, and StorageClass parameters cannot be changed. So, in order: the class's
//! `csiNodeStageSecretName`; else the user Secret itself when it is in ceph-csi's format; else
//! its companion `<userSecretName>-csi` in the same namespace, which an operator can create
//! from the user Secret without touching the class. When none works, the error carries the
//! exact command that creates (or completes) the Secret from the user Secret.

use std::collections::BTreeSet;

use crate::params::SecretRef;

/// A Secret's non-empty field names (never its values); `None` when it does not exist.
pub type SecretFields = BTreeSet<String>;

/// ceph-csi's two fields.
pub const CSI_SECRET_FIELDS: [&str; 2] = ["userID", "userKey"];

/// Whether a Secret with these fields is in ceph-csi's format.
pub fn in_csi_format(fields: &SecretFields) -> bool {
    CSI_SECRET_FIELDS.iter().all(|f| fields.contains(*f))
}

/// The Secret looked for next to the user Secret when the class names no node-stage Secret.
pub fn companion_secret(user: &SecretRef) -> SecretRef {
    SecretRef {
        namespace: user.namespace.clone(),
        name: format!("{}-csi", user.name),
    }
}

/// Which Secret a csi PV's `nodeStageSecretRef` names, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStage {
    /// The class's `csiNodeStageSecretName`/`Namespace`.
    Class(SecretRef),
    /// The user Secret, which is in ceph-csi's format.
    UserSecret(SecretRef),
    /// `<userSecretName>-csi` next to the user Secret.
    Companion(SecretRef),
}

impl NodeStage {
    pub fn secret(&self) -> &SecretRef {
        match self {
            NodeStage::Class(s) | NodeStage::UserSecret(s) | NodeStage::Companion(s) => s,
        }
    }
}

/// No node-stage Secret is usable. The Display is the whole story for a `ProvisioningFailed`
/// event: what is missing and the command that fixes it (which reads the key from the user
/// Secret inside the pipeline: the key is never printed, nor passed as an argument).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "ceph-csi node-stage secret: {what}; ceph-csi needs a Secret with userID and userKey. {fix}. Provisioning retries by itself"
)]
pub struct NodeStageError {
    /// What was found (and not found).
    pub what: String,
    /// The command, or, when one cannot be written safely, what to do by hand.
    pub fix: String,
    /// The command alone (for tests and tools); `None` when none could be written safely.
    pub command: Option<String>,
}

/// What provisioning found while looking for a node-stage Secret.
pub struct NodeStageFacts<'a> {
    pub class_name: &'a str,
    /// The class's `csiNodeStageSecretName`/`Namespace`, if any.
    pub class_secret: Option<&'a SecretRef>,
    pub user_secret: &'a SecretRef,
    /// Fields of the user Secret (it exists: a missing one is reported before this).
    pub user_fields: &'a SecretFields,
    /// Fields of the Secret the PV would name (the class's, else the companion); `None`:
    /// it does not exist.
    pub target_fields: Option<&'a SecretFields>,
    /// The class's `userId`: the Ceph id the node maps with.
    pub user_id: &'a str,
}

/// Picks the node-stage Secret from what was found, or says exactly what to do.
pub fn choose_node_stage(f: &NodeStageFacts<'_>) -> Result<NodeStage, NodeStageError> {
    let complete = |fields: Option<&SecretFields>| fields.is_some_and(in_csi_format);
    if let Some(s) = f.class_secret {
        if complete(f.target_fields) {
            return Ok(NodeStage::Class(s.clone()));
        }
    } else if in_csi_format(f.user_fields) {
        return Ok(NodeStage::UserSecret(f.user_secret.clone()));
    } else if complete(f.target_fields) {
        return Ok(NodeStage::Companion(companion_secret(f.user_secret)));
    }
    Err(node_stage_error(f))
}

fn node_stage_error(f: &NodeStageFacts<'_>) -> NodeStageError {
    let target = f
        .class_secret
        .cloned()
        .unwrap_or_else(|| companion_secret(f.user_secret));
    let holds = |fields: &SecretFields| {
        if fields.is_empty() {
            "no fields".to_string()
        } else if fields.len() == 1 && fields.contains("key") {
            "only key (the in-tree plugin's format)".to_string()
        } else {
            format!(
                "only {}",
                fields.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    };
    let target_state = match f.target_fields {
        None => "does not exist".to_string(),
        Some(t) => format!(
            "exists but has no {}",
            CSI_SECRET_FIELDS
                .iter()
                .filter(|x| !t.contains(**x))
                .copied()
                .collect::<Vec<_>>()
                .join(" and no ")
        ),
    };
    let what = match f.class_secret {
        Some(s) => format!(
            "StorageClass {} names {s} (csiNodeStageSecretName), which {target_state}",
            f.class_name
        ),
        None => format!(
            "StorageClass {} names none (csiNodeStageSecretName), the user secret {} holds {}, and its companion {target} {target_state}",
            f.class_name,
            f.user_secret,
            holds(f.user_fields)
        ),
    };
    let key_field = ["key", "userKey"]
        .into_iter()
        .find(|k| f.user_fields.contains(*k));
    let command = key_field.and_then(|k| {
        copy_command(
            f.user_secret,
            k,
            &target,
            f.target_fields.is_some(),
            f.user_id,
        )
    });
    let fix = match (&command, key_field) {
        (Some(c), _) => format!(
            "{} it from the user secret (the key is copied inside the pipeline, never shown): `{c}`",
            if f.target_fields.is_some() {
                "Complete"
            } else {
                "Create"
            }
        ),
        (None, None) => format!(
            "The user secret {} holds the key under neither key nor userKey, so no command can copy it: create {target} with userID={} and userKey=<the key of client.{}>",
            f.user_secret, f.user_id, f.user_id
        ),
        (None, Some(_)) => format!(
            "Create {target} by hand with userID={} and userKey=<the key of client.{}> (no command is shown: a name or id here is not safe to paste into a shell)",
            f.user_id, f.user_id
        ),
    };
    NodeStageError { what, fix, command }
}

/// A shell pipeline that writes `userID` and `userKey` (copied from `key_field` of the user
/// Secret, still base64, never decoded or printed) into `target`: `kubectl create` when it
/// does not exist, a merge patch (keeping its other fields) when it does. `None` when a name
/// or id holds characters that are not safe to paste into a shell (a hostile class must not
/// be able to make an operator run something else).
pub fn copy_command(
    user: &SecretRef,
    key_field: &str,
    target: &SecretRef,
    target_exists: bool,
    user_id: &str,
) -> Option<String> {
    let dns = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let id_ok = !user_id.is_empty()
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    let field_ok = key_field.bytes().all(|b| b.is_ascii_alphanumeric());
    if ![&user.namespace, &user.name, &target.namespace, &target.name]
        .iter()
        .all(|s| dns(s))
        || !id_ok
        || !field_ok
    {
        return None;
    }
    let fields = format!(
        r#""stringData":{{"userID":"{user_id}"}},"data":{{"userKey":"{{{{.data.{key_field}}}}}"}}"#
    );
    let read = |template: String| {
        format!(
            "kubectl -n {} get secret {} -o go-template='{template}'",
            user.namespace, user.name
        )
    };
    Some(if target_exists {
        format!(
            "{} | kubectl -n {} patch secret {} --type merge --patch-file /dev/stdin",
            read(format!("{{{fields}}}")),
            target.namespace,
            target.name
        )
    } else {
        format!(
            "{} | kubectl create -f -",
            read(format!(
                r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"{}","namespace":"{}"}},"type":"Opaque",{fields}}}"#,
                target.name, target.namespace
            ))
        )
    })
}
