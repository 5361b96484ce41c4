use super::*;
use crate::fixtures;
use crate::owner::PvState;
use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const IMAGE: &str = "kubernetes-dynamic-pvc-u1";

fn me() -> Instance {
    crate::fixtures::instance()
}

fn here() -> Place {
    crate::fixtures::place()
}

/// The stamp of a volume whose PV was written (and then removed).
fn kept() -> BTreeMap<String, String> {
    fixtures::stamp(PvState::Written)
        .pairs(&me())
        .into_iter()
        .collect()
}

fn with(mut m: BTreeMap<String, String>, k: &str, v: Option<&str>) -> BTreeMap<String, String> {
    match v {
        Some(v) => m.insert(k.into(), v.into()),
        None => m.remove(k),
    };
    m
}

fn claim_in(class: &str, uid: &str, volume: Option<&str>) -> PersistentVolumeClaim {
    let mut c = fixtures::claim("ns", "data", uid, Some("Pending"));
    c.spec = Some(PersistentVolumeClaimSpec {
        storage_class_name: Some(class.into()),
        volume_name: volume.map(str::to_string),
        ..Default::default()
    });
    c
}

/// The PV an earlier `adopt` wrote for [`IMAGE`] (image id `id-1`).
fn adopt_pv(uid: &str) -> PersistentVolume {
    let mut pv = fixtures::rbd_pv(
        "pvc-u1",
        ("kube", IMAGE),
        &[
            (volume::ANN_PROVISIONED_BY, "ceph.com/rbd"),
            (ANN_ADOPTED_IMAGE, "id-1"),
            (volume::ANN_FSID, "f-1"),
            (volume::ANN_POOL_ID, "3"),
        ],
        None,
    );
    pv.metadata.uid = Some(uid.into());
    pv
}

struct Case {
    name: &'static str,
    meta: BTreeMap<String, String>,
    trashed: bool,
    watchers: Vec<String>,
    named_by: Vec<PersistentVolume>,
    pv_of_name: Option<PersistentVolume>,
    chosen: Option<(&'static str, &'static str)>,
    claim: Option<PersistentVolumeClaim>,
    from: Vec<String>,
    want: Verdict,
}

fn case(name: &'static str, want: Verdict) -> Case {
    Case {
        name,
        meta: kept(),
        trashed: false,
        watchers: vec![],
        named_by: vec![],
        pv_of_name: None,
        chosen: None,
        claim: None,
        from: vec![],
        want,
    }
}

fn adopt_to(ns: &str, name: &str, chosen: bool) -> Verdict {
    Verdict::Adopt {
        pv: "pvc-u1".into(),
        target: Target {
            namespace: ns.into(),
            name: name.into(),
            chosen,
        },
    }
}

fn refuse(r: Refusal) -> Verdict {
    Verdict::Refuse(r)
}

#[test]
fn decisions() {
    let stamped = || adopt_to("ns", "data", false);
    let cases = vec![
        case("a kept image goes back to its stamped claim", stamped()),
        Case {
            claim: Some(claim_in("fast", "u1", None)),
            ..case("the stamped claim itself, recreated by restore", stamped())
        },
        Case {
            chosen: Some(("other", "db")),
            ..case("the operator's claim", adopt_to("other", "db", true))
        },
        Case {
            chosen: Some(("ns", "data")),
            claim: Some(claim_in("fast", "u9", None)),
            ..case(
                "an existing claim the operator named",
                adopt_to("ns", "data", true),
            )
        },
        Case {
            trashed: true,
            ..case("trashed", refuse(Refusal::Trashed))
        },
        Case {
            meta: BTreeMap::new(),
            ..case("unstamped", refuse(Refusal::Unstamped))
        },
        Case {
            meta: with(kept(), owner::META_PROVISIONER, Some("other/rbd")),
            ..case(
                "another provisioner",
                refuse(Refusal::OtherProvisioner("other/rbd".into())),
            )
        },
        Case {
            meta: with(kept(), owner::META_CLUSTER, Some("c-old")),
            ..case(
                "another Kubernetes cluster",
                refuse(Refusal::OtherCluster("c-old".into())),
            )
        },
        Case {
            meta: with(kept(), owner::META_CLUSTER, Some("c-old")),
            from: vec!["c-old".into()],
            ..case("a rebuilt cluster taken over", stamped())
        },
        Case {
            meta: with(kept(), owner::META_FSID, Some("f-2")),
            ..case(
                "another Ceph cluster",
                refuse(Refusal::Place(StampMismatch::Fsid {
                    stamped: "f-2".into(),
                    live: "f-1".into(),
                })),
            )
        },
        Case {
            meta: with(kept(), owner::META_POOL_ID, Some("4")),
            ..case(
                "another pool",
                refuse(Refusal::Place(StampMismatch::PoolId {
                    stamped: 4,
                    live: 3,
                })),
            )
        },
        Case {
            meta: with(kept(), owner::META_CLAIM_UID, None),
            ..case(
                "an incomplete stamp",
                refuse(Refusal::IncompleteStamp {
                    pv: String::new(),
                    expected: "pvc-u1".into(),
                }),
            )
        },
        Case {
            meta: with(kept(), owner::META_CLUSTER, None),
            ..case(
                "a stamp without its cluster",
                refuse(Refusal::IncompleteStamp {
                    pv: "pvc-u1".into(),
                    expected: "pvc-u1".into(),
                }),
            )
        },
        Case {
            meta: with(kept(), owner::META_PV, Some("pvc-u2")),
            ..case(
                "a stamp naming another PV than the image's",
                refuse(Refusal::IncompleteStamp {
                    pv: "pvc-u2".into(),
                    expected: "pvc-u1".into(),
                }),
            )
        },
        Case {
            named_by: vec![fixtures::rbd_pv("static", ("kube", IMAGE), &[], None)],
            ..case("named by a PV", refuse(Refusal::NamedByPv("static".into())))
        },
        Case {
            watchers: vec!["10.0.0.9:0/1".into()],
            ..case("watched", refuse(Refusal::Watched("10.0.0.9:0/1".into())))
        },
        Case {
            pv_of_name: Some(fixtures::rbd_pv("pvc-u1", ("kube", "x"), &[], None)),
            ..case(
                "the PV name is taken",
                refuse(Refusal::PvNameTaken("pvc-u1".into())),
            )
        },
        Case {
            claim: Some(claim_in("fast", "u1", Some("pvc-other"))),
            ..case(
                "the claim is bound to another volume",
                refuse(Refusal::ClaimBoundElsewhere {
                    claim: "ns/data".into(),
                    volume: "pvc-other".into(),
                }),
            )
        },
        Case {
            claim: Some(claim_in("fast", "u9", None)),
            ..case(
                "a tenant's claim of the stamped name",
                refuse(Refusal::ClaimNotStamped {
                    claim: "ns/data".into(),
                    uid: "u9".into(),
                }),
            )
        },
        Case {
            claim: Some(claim_in("slow", "u1", None)),
            ..case(
                "a claim of another class",
                refuse(Refusal::ClaimClass {
                    claim: "ns/data".into(),
                    asked: "slow".into(),
                    class: "fast".into(),
                }),
            )
        },
        Case {
            claim: Some({
                let mut c = claim_in("fast", "u1", None);
                c.metadata.deletion_timestamp = Some(Time(Default::default()));
                c
            }),
            ..case(
                "a claim being deleted",
                refuse(Refusal::ClaimDeleting("ns/data".into())),
            )
        },
        Case {
            named_by: vec![adopt_pv("pv-uid-1")],
            ..case(
                "an earlier run's PV, image not re-stamped",
                Verdict::Finish {
                    pv: "pvc-u1".into(),
                    target: Target {
                        namespace: "ns".into(),
                        name: "data".into(),
                        chosen: false,
                    },
                },
            )
        },
        Case {
            named_by: vec![adopt_pv("pv-uid-1")],
            meta: with(kept(), owner::META_PV_UID, Some("pv-uid-1")),
            ..case(
                "an earlier run finished",
                Verdict::Done {
                    pv: "pvc-u1".into(),
                },
            )
        },
        Case {
            named_by: vec![{
                let mut pv = adopt_pv("pv-uid-1");
                pv.metadata
                    .annotations
                    .as_mut()
                    .unwrap()
                    .insert(ANN_ADOPTED_IMAGE.into(), "id-other".into());
                pv
            }],
            ..case(
                "a PV claiming adoption of another image id",
                refuse(Refusal::NamedByPv("pvc-u1".into())),
            )
        },
        Case {
            named_by: vec![
                adopt_pv("a"),
                fixtures::rbd_pv("x", ("kube", IMAGE), &[], None),
            ],
            ..case(
                "two PVs name it",
                refuse(Refusal::NamedByPv("pvc-u1".into())),
            )
        },
    ];
    let live = here();
    let me = me();
    for c in cases {
        let named: Vec<&PersistentVolume> = c.named_by.iter().collect();
        let cand = Candidate {
            image: IMAGE,
            meta: &c.meta,
            image_id: "id-1",
            trashed: c.trashed,
            watchers: &c.watchers,
            named_by: &named,
            pv_of_name: c.pv_of_name.as_ref(),
            target: target_of(&c.meta, c.chosen),
            claim: c.claim.as_ref(),
        };
        let f = Facts {
            me: &me,
            from_clusters: &c.from,
            pool: "kube",
            live: &live,
            class: "fast",
        };
        assert_eq!(decide(&cand, &f), c.want, "{}", c.name);
    }
}

#[test]
fn csi_image_names_count() {
    let mut pv = fixtures::rbd_pv("p", ("kube", "other"), &[], None);
    assert!(names_image(&pv, "kube", "other"));
    assert!(!names_image(&pv, "kube", IMAGE));
    assert!(!names_image(&pv, "rbd", "other"));
    let spec = pv.spec.as_mut().unwrap();
    spec.rbd = None;
    spec.csi = Some(k8s_openapi::api::core::v1::CSIPersistentVolumeSource {
        volume_handle: "0001-0009-cluster-0000000000000003-uuid".into(),
        volume_attributes: fixtures::map(&[("imageName", IMAGE), ("pool", "kube")]),
        ..Default::default()
    });
    assert!(names_image(&pv, "kube", IMAGE));
    assert!(!names_image(&pv, "rbd", IMAGE));
}

#[test]
fn the_pv_is_our_builders_retained_and_marked() {
    let class = {
        let mut c = fixtures::storage_class("ceph.com/rbd", fixtures::RBD_PARAMS);
        c.reclaim_policy = Some("Delete".into());
        c
    };
    let params = crate::params::parse(&class.parameters.clone().unwrap()).unwrap();
    let target = Target {
        namespace: "ns".into(),
        name: "data".into(),
        chosen: false,
    };
    let req = request_for(IMAGE, 64 << 20, &target, None, VolumeMode::Filesystem).unwrap();
    let pv = adoption_pv(
        &req,
        None,
        &class,
        &params,
        VolumeSourceKind::Rbd,
        IMAGE,
        "id-1",
        "ceph.com/rbd",
        &here(),
    );
    assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u1"));
    assert_eq!(pv.metadata.finalizers, None, "Retain: no finalizer");
    let spec = pv.spec.as_ref().unwrap();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert_eq!(spec.capacity.as_ref().unwrap()["storage"].0, "64Mi");
    let r = spec.claim_ref.as_ref().unwrap();
    assert_eq!(
        (r.namespace.as_deref(), r.name.as_deref()),
        (Some("ns"), Some("data"))
    );
    assert_eq!(r.uid, None, "no claim yet: bound by name");
    assert!(names_image(&pv, "kube", IMAGE));
    let ann = pv.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann[ANN_ADOPTED_IMAGE], "id-1");
    assert_eq!(ann[volume::ANN_FSID], "f-1");
    // A rerun recognises it.
    let mut written = pv.clone();
    written.metadata.uid = Some("pv-uid".into());
    let meta = kept();
    let named = [&written];
    let cand = Candidate {
        image: IMAGE,
        meta: &meta,
        image_id: "id-1",
        trashed: false,
        watchers: &[],
        named_by: &named,
        pv_of_name: None,
        target: target_of(&meta, None),
        claim: None,
    };
    let me = me();
    let live = here();
    let f = Facts {
        me: &me,
        from_clusters: &[],
        pool: "kube",
        live: &live,
        class: "fast",
    };
    assert!(written_by_adopt(&written, &cand, &f));
    assert!(matches!(decide(&cand, &f), Verdict::Finish { .. }));
    // The re-stamp then makes deletion's checks agree with the PV.
    let in_order = restamp_pairs(&me, &written, &target, None, &live, 2000);
    assert_eq!(
        in_order.last().unwrap().0,
        owner::META_PV_UID,
        "the uid last"
    );
    let pairs: BTreeMap<String, String> = in_order.into_iter().collect();
    let mut after = meta.clone();
    after.extend(pairs);
    assert_eq!(after[owner::META_PV_UID], "pv-uid");
    assert_eq!(
        after[owner::META_CLAIM_UID],
        "u1",
        "kept when no claim exists"
    );
    assert_eq!(
        owner::check_delete(&after, &me, "pvc-u1", &live, false),
        Ok(())
    );
    let cand = Candidate {
        meta: &after,
        ..cand
    };
    assert_eq!(
        decide(&cand, &f),
        Verdict::Done {
            pv: "pvc-u1".into()
        }
    );
}

#[test]
fn an_existing_claim_shapes_the_volume() {
    let target = Target {
        namespace: "ns".into(),
        name: "data".into(),
        chosen: true,
    };
    let mut c = claim_in("fast", "u9", None);
    let spec = c.spec.as_mut().unwrap();
    spec.access_modes = Some(vec!["ReadOnlyMany".into()]);
    spec.volume_mode = Some("Block".into());
    spec.resources = Some(k8s_openapi::api::core::v1::VolumeResourceRequirements {
        requests: Some(BTreeMap::from([(
            "storage".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("32Mi".into()),
        )])),
        ..Default::default()
    });
    let req = request_for(IMAGE, 64 << 20, &target, Some(&c), VolumeMode::Filesystem).unwrap();
    assert_eq!(req.access_modes, vec!["ReadOnlyMany".to_string()]);
    assert_eq!(req.volume_mode, VolumeMode::Block);
    assert_eq!((req.size, req.uid.as_str()), (64 << 20, "u1"));
    let e = request_for(IMAGE, 16 << 20, &target, Some(&c), VolumeMode::Filesystem).unwrap_err();
    assert!(
        e.to_string()
            .contains("asks for 32Mi, the image holds 16Mi"),
        "{e}"
    );
}
