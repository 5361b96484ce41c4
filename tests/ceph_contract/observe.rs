//! How each value is written into a transcript, without what differs between two clusters;
//! and the specs the scenarios build.

use super::*;

/// How a step's value is written into the transcript, without what differs by nature.
pub(crate) trait Observe {
    fn observe(&self, run: &mut Run) -> String;
}

impl Observe for () {
    fn observe(&self, _: &mut Run) -> String {
        "()".into()
    }
}

impl Observe for Created {
    fn observe(&self, _: &mut Run) -> String {
        format!("{self:?}")
    }
}

impl Observe for Removed {
    fn observe(&self, _: &mut Run) -> String {
        format!("{self:?}")
    }
}

impl Observe for ImageInfo {
    fn observe(&self, run: &mut Run) -> String {
        assert!(!self.id.is_empty(), "a format 2 image has an id");
        let id = run.token("id", &self.id);
        let data_pool_id = run
            .pool_names
            .get(&self.data_pool_id)
            .cloned()
            .unwrap_or_else(|| format!("pool #{}", self.data_pool_id));
        format!(
            "size={} obj_size={} features={:#x} old_format={} id={id} data_pool_id={data_pool_id} data_pool={:?} parent={:?}",
            self.size, self.obj_size, self.features, self.old_format, self.data_pool, self.parent
        )
    }
}

impl Observe for Vec<SnapInfo> {
    fn observe(&self, _: &mut Run) -> String {
        assert!(
            self.windows(2).all(|w| w[0].id < w[1].id),
            "snapshots are listed by id: {self:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        // The time itself differs from run to run; that it is this run's does not.
        let taken = |t: i64| match t {
            0 => "at no time",
            t if (now - t).abs() <= 60 => "within a minute",
            _ => "at another time",
        };
        let snaps: Vec<String> = self
            .iter()
            .map(|s| {
                format!(
                    "{} size={} protected={} taken {}",
                    s.name,
                    s.size,
                    s.protected,
                    taken(s.timestamp)
                )
            })
            .collect();
        format!("[{}]", snaps.join(", "))
    }
}

/// `snap_children`, in the order listed.
impl Observe for Vec<Child> {
    fn observe(&self, run: &mut Run) -> String {
        let kids: Vec<String> = self
            .iter()
            .map(|k| {
                let id = run.token("id", &k.id);
                format!("{}/{} id={id} in_trash={}", k.pool, k.image, k.in_trash)
            })
            .collect();
        format!("[{}]", kids.join(", "))
    }
}

impl Observe for Vec<TrashEntry> {
    fn observe(&self, run: &mut Run) -> String {
        let mut mine: Vec<&TrashEntry> = self
            .iter()
            .filter(|t| t.name.starts_with(&run.prefix))
            .collect();
        mine.sort_by(|a, b| a.name.cmp(&b.name));
        let entries: Vec<String> = mine
            .iter()
            .map(|t| {
                let id = run.token("id", &t.id);
                format!(
                    "{} id={id} deferment={}s",
                    t.name,
                    t.deferment_end_time - t.deletion_time
                )
            })
            .collect();
        format!("[{}]", entries.join(", "))
    }
}

impl Observe for Vec<Watcher> {
    fn observe(&self, _: &mut Run) -> String {
        assert!(self.iter().all(|w| !w.addr.is_empty()), "{self:?}");
        format!("{} watcher(s)", self.len())
    }
}

impl Observe for Inspection {
    fn observe(&self, run: &mut Run) -> String {
        format!(
            "{} meta={} {} snaps={}",
            self.info.observe(run),
            self.metadata.observe(run),
            self.watchers.observe(run),
            self.snapshots.observe(run)
        )
    }
}

/// `list_images`: the scenario's own names.
impl Observe for Vec<String> {
    fn observe(&self, run: &mut Run) -> String {
        let mine: Vec<&String> = self.iter().filter(|n| n.starts_with(&run.prefix)).collect();
        format!("{mine:?}")
    }
}

/// `pool_applications`, all of them.
#[derive(Debug)]
pub(crate) struct Apps(pub(crate) Vec<String>);

impl Observe for Apps {
    fn observe(&self, _: &mut Run) -> String {
        format!("{:?}", self.0)
    }
}

impl Observe for BTreeMap<String, String> {
    fn observe(&self, _: &mut Run) -> String {
        format!("{self:?}")
    }
}

impl Observe for (BTreeMap<String, String>, u64) {
    fn observe(&self, _: &mut Run) -> String {
        format!("{:?} size={}", self.0, self.1)
    }
}

/// Omap records: the scenario's own keys.
impl Observe for Vec<(String, Vec<u8>)> {
    fn observe(&self, run: &mut Run) -> String {
        let mine: Vec<&(String, Vec<u8>)> = self
            .iter()
            .filter(|(k, _)| k.starts_with(&run.prefix))
            .collect();
        format!("{mine:?}")
    }
}

impl Observe for PoolQuota {
    fn observe(&self, _: &mut Run) -> String {
        format!(
            "max_objects={:?} max_bytes={:?} reached={}",
            self.max_objects,
            self.max_bytes,
            self.reached().is_some()
        )
    }
}

/// `pool_created`.
impl Observe for Option<i64> {
    fn observe(&self, _: &mut Run) -> String {
        match self {
            Some(t) => {
                assert!(*t > 1_500_000_000, "a Unix time: {t}");
                "created at some time".into()
            }
            None => "None".into(),
        }
    }
}

/// `pool_id`.
impl Observe for i64 {
    fn observe(&self, run: &mut Run) -> String {
        run.token("pool", &format!("pool id {self}"))
    }
}

/// `fsid`.
impl Observe for String {
    fn observe(&self, run: &mut Run) -> String {
        assert_eq!(self.len(), 36, "an fsid is a UUID: {self}");
        run.token("fsid", self)
    }
}

pub(crate) fn clone_spec(parent: (&str, &str, &str), pool: &str, name: &str) -> CloneSpec {
    CloneSpec {
        parent: ParentSpec {
            pool: parent.0.into(),
            image: parent.1.into(),
            snap: parent.2.into(),
        },
        pool: pool.into(),
        data_pool: None,
        name: name.into(),
        features: RBD_FEATURE_LAYERING,
        clone_format: Some(1),
    }
}

pub(crate) fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
