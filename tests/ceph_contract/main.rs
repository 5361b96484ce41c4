//! The contract of `ceph::RbdCluster`: every scenario here runs twice, against the scripted
//! cluster of the testbed (`testbed::fake_ceph`) and against the bed's Ceph through librbd
//! (hack/bed-up.sh), and both runs must observe the same results, step by step: values,
//! `Created`/`Removed` outcomes, and errors down to their variant, operation, errno and hint.
//! The scenarios also assert what librbd is expected to answer, so that a change of either
//! side shows.
//!
//! What differs by nature between two clusters is normalised before the comparison: image and
//! trash ids, the fsid and pool ids become placeholders numbered in order of appearance,
//! watchers are counted, times are compared as differences, and listings keep only the
//! scenario's own names. Every scenario uses names of its own (scenario name + pid) and
//! removes what it made on the bed, also when it fails. What the API cannot make is made on
//! the bed with the CLIs: a half-made image (`rados rm` of its header), a pool at its quota
//! (a pool of the scenario's own, `ceph osd pool set-quota`, removed at the end).

use testbed as common;
use testbed::layering_spec;

use std::collections::BTreeMap;
use std::sync::Arc;

use ceph::{
    CephError, Child, CloneSpec, Cluster, Created, ImageInfo, ImageSpec, Inspection, ParentSpec,
    PoolQuota, RBD_FEATURE_DATA_POOL, RBD_FEATURE_DEEP_FLATTEN, RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_FAST_DIFF, RBD_FEATURE_JOURNALING, RBD_FEATURE_LAYERING, RBD_FEATURE_OBJECT_MAP,
    RbdCluster, Removed, SnapInfo, TrashEntry, Watcher,
};
use testbed::fake_ceph::FakeCeph;

const POOL: &str = "kube";
const POOL2: &str = "kube2";
const NO_POOL: &str = "rbdp-contract-no-such-pool";
const MIB: u64 = 1 << 20;
/// The image-meta keys the scenarios read.
const KEYS: &[&str] = &["rbdp-contract/a", "rbdp-contract/b", "rbdp-contract/c"];
/// The omap object the records scenario writes (its keys are the scenario's own).
const OID: &str = "rbdp-contract-records";

mod observe;
mod run;
mod scenarios;

use observe::*;
use run::*;

/// A test that runs `$scenario` on the fake, then on the bed, and compares the transcripts.
macro_rules! contract {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() {
            // The trailing dot keeps one scenario's prefix from being another's
            // (`trash` and `trash_deferment` run at once in the same pool).
            let prefix = format!("ct{}-{}.", std::process::id(), stringify!($scenario));
            let mut fake = Run::fake(&prefix);
            fake.learn_pools().await;
            scenarios::$scenario(&mut fake).await;
            let mut real = Run::real(&prefix).await;
            real.learn_pools().await;
            scenarios::$scenario(&mut real).await;
            let (f, r) = (fake.transcript(), real.transcript());
            if f != r {
                for (a, b) in f.lines().zip(r.lines()) {
                    if a != b {
                        eprintln!("fake: {a}\nreal: {b}\n");
                    }
                }
            }
            assert_eq!(f, r, "the fake and librbd observed different results");
            eprintln!("{} steps alike:\n{r}", real.lines.len());
        }
    )*};
}

contract!(
    pools,
    images,
    features_and_data_pools,
    image_meta,
    records,
    watchers,
    snapshots,
    clones,
    children,
    flatten,
    trash,
    trash_deferment,
    half_made_image,
    quota_reached,
);
