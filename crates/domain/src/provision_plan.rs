//! Provisioning decided before anything is written: what a claim and its class ask for,
//! whether a PV already under our name answers it, and the image and PV to make. The
//! controller reads the objects judged here and carries out what is decided, so each
//! decision can be checked without an API server or a Ceph cluster.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::clone::{self, CloneError};
use crate::owner::{Place, PvState, Stamp};
use crate::params::{self, ClassParams, Flavor, ParamErrors};
use crate::reclaim::{self, NotTheVolume};
use crate::volume::{
    self, ClaimError, ClaimRequest, ClusterId, CsiVolume, NodeStage, PvInput, VolumeSourceKind,
};

/// Why a claim cannot be provisioned with its class as they are. The caller names the
/// claim or class in its error, so each variant carries only the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    Claim(ClaimError),
    Params(ParamErrors),
    Clone(CloneError),
}

/// What a claim and its class ask for, checked: the first stage of a plan, before any
/// object but the two has been read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub claim: ClaimRequest,
    pub class_name: String,
    pub params: ClassParams,
    pub flavor: Flavor,
    /// The claim to clone from, or the VolumeSnapshot to restore, still to be looked up.
    pub clone_of: Option<clone::DataSource>,
    pub pv_name: String,
    pub image: String,
}

/// Checks a claim against its class. The order of the checks is the order in which an
/// operator is told about problems, one per attempt.
pub fn draft(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    default_flavor: Flavor,
) -> Result<Draft, Invalid> {
    let claim = volume::claim_request(pvc).map_err(Invalid::Claim)?;
    let params =
        params::parse(&class.parameters.clone().unwrap_or_default()).map_err(Invalid::Params)?;
    let flavor = params.flavor.unwrap_or(default_flavor);
    match flavor {
        Flavor::Csi => params::check_csi(&params),
        Flavor::Rbd => params::check_in_tree(&params),
    }
    .map_err(Invalid::Params)?;
    volume::check_access_modes(&claim, flavor).map_err(Invalid::Claim)?;
    let class_name = class.metadata.name.clone().unwrap_or_default();
    if claim.size > params.max_size {
        return Err(Invalid::Claim(ClaimError::AboveMax {
            requested: volume::human_size(claim.size),
            class: class_name,
            max: volume::human_size(params.max_size),
        }));
    }
    let clone_of = clone::source_name(pvc).map_err(Invalid::Clone)?;
    Ok(Draft {
        pv_name: volume::pv_name(&claim.uid),
        image: volume::image_name(&claim.uid),
        class_name,
        claim,
        params,
        flavor,
        clone_of,
    })
}

impl Draft {
    /// "namespace/name", as logs and errors name the claim.
    pub fn claim_label(&self) -> String {
        crate::meta::qualified(Some(&self.claim.namespace), &self.claim.name)
    }

    /// Whether a PV found under our name is this claim's, written by an earlier attempt (then
    /// there is nothing left to do). Anyone else's must not be taken for success.
    pub fn answered_by(
        &self,
        existing: &PersistentVolume,
        provisioner: &str,
    ) -> Result<(), NotTheVolume> {
        reclaim::is_volume_of(
            existing,
            provisioner,
            &self.claim.uid,
            (&self.params.pool, &self.image),
        )
    }

    /// The second stage: the clone source looked up and, for csi volumes, the Secret the
    /// PV will name for node staging.
    pub fn plan(
        self,
        clone_source: Option<clone::CloneSource>,
        node_stage: Option<NodeStage>,
    ) -> Plan {
        Plan {
            draft: self,
            clone_source,
            node_stage,
        }
    }
}

/// Everything provisioning needs, with nothing yet written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub draft: Draft,
    pub clone_source: Option<clone::CloneSource>,
    /// `Some` exactly for csi volumes.
    pub node_stage: Option<NodeStage>,
}

impl Plan {
    /// Whether the csi PV's `clusterID` must be read from Ceph: the class names none, and
    /// ceph-csi's config map is commonly keyed by the fsid.
    pub fn needs_fsid(&self) -> bool {
        self.node_stage.is_some() && self.draft.params.cluster_id.is_none()
    }

    /// What a csi PV needs beyond the class, given the fsid when [`Plan::needs_fsid`].
    pub fn csi(&self, fsid: Option<String>) -> Option<CsiVolume> {
        let stage = self.node_stage.as_ref()?;
        let cluster_id = match &self.draft.params.cluster_id {
            Some(id) => ClusterId::Class(id.clone()),
            None => ClusterId::Fsid(fsid.unwrap_or_default()),
        };
        Some(CsiVolume {
            cluster_id,
            node_stage_secret: stage.secret().clone(),
        })
    }

    /// What is written on the image, so that it can be proven this claim's later.
    pub fn stamp(&self, created: i64, place: Place) -> Stamp {
        let c = &self.draft.claim;
        Stamp {
            pv: self.draft.pv_name.clone(),
            claim_namespace: c.namespace.clone(),
            claim_name: c.name.clone(),
            claim_uid: c.uid.clone(),
            created,
            place: Some(place),
            pv_state: PvState::None,
        }
    }

    /// The PV to write once the image exists.
    pub fn pv(
        &self,
        class: &StorageClass,
        csi: Option<&CsiVolume>,
        provisioner: &str,
        place: Option<&Place>,
    ) -> PersistentVolume {
        volume::build_pv(&PvInput {
            place,
            claim: &self.draft.claim,
            class,
            params: &self.draft.params,
            source: csi.map_or(VolumeSourceKind::Rbd, VolumeSourceKind::Csi),
            image: &self.draft.image,
            provisioner,
        })
    }

    /// The message of the `ProvisioningSucceeded` event and log line.
    pub fn succeeded(&self, csi: Option<&CsiVolume>) -> String {
        let d = &self.draft;
        format!(
            "Successfully provisioned volume {}: image {}/{}{}, {} MiB, {}",
            d.pv_name,
            d.params.pool,
            d.image,
            self.clone_source
                .as_ref()
                .map(|s| format!(" (clone of {}/{})", s.pool, s.image))
                .unwrap_or_default(),
            d.claim.size >> 20,
            match csi {
                None => "in-tree rbd volume source".to_string(),
                Some(c) => format!(
                    "ceph-csi static volume, clusterID {}{}, node-stage secret {}",
                    c.cluster_id.value(),
                    match c.cluster_id {
                        ClusterId::Fsid(_) =>
                            " (the Ceph cluster's fsid: the class has no clusterID)",
                        ClusterId::Class(_) => "",
                    },
                    c.node_stage_secret
                ),
            }
        )
    }
}

/// Whether the claim, read again once its image exists, is gone: deleted, being deleted, or
/// replaced by another claim of the same name. Its image must then not get a PV.
pub fn claim_withdrawn(current: Option<&PersistentVolumeClaim>, uid: &str) -> bool {
    match current {
        None => true,
        Some(c) => {
            c.metadata.uid.as_deref() != Some(uid) || c.metadata.deletion_timestamp.is_some()
        }
    }
}

#[cfg(test)]
mod tests;
