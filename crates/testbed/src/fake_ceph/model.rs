//! What the fake holds (pools, images, snapshots, the trash) and how it finds things.

use super::*;

/// An image as the fake holds it: for inspection by tests ([`FakeCeph::image`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeImage {
    pub id: String,
    pub size: u64,
    pub obj_size: u64,
    pub features: u64,
    /// Pool holding the data objects, when not the image's own.
    pub data_pool: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The snapshot it was cloned from, by name as [`RbdCluster::image_info`] reports it.
    pub parent: Option<ParentSpec>,
    pub snapshots: Vec<SnapInfo>,
    pub watchers: Vec<Watcher>,
}

/// A parent by identity (pool, image id, snapshot id), as librbd keeps it: names are looked
/// up when reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ParentRef {
    pub(super) pool: String,
    pub(super) image_id: String,
    pub(super) snap_id: u64,
}

#[derive(Clone, Debug)]
pub(super) struct Snap {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) protected: bool,
    /// The cluster's clock at its creation.
    pub(super) timestamp: i64,
}

#[derive(Clone, Debug)]
pub(super) struct Img {
    pub(super) id: String,
    pub(super) size: u64,
    pub(super) obj_size: u64,
    pub(super) features: u64,
    pub(super) data_pool_id: i64,
    pub(super) meta: BTreeMap<String, String>,
    pub(super) parent: Option<ParentRef>,
    pub(super) snaps: Vec<Snap>,
    pub(super) watchers: Vec<Watcher>,
    /// False for what a process killed inside `rbd_create4` leaves: the name taken (directory
    /// entry, id object), no header, so every open fails with ENOENT.
    pub(super) header: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Trashed {
    pub(super) name: String,
    pub(super) img: Img,
    pub(super) deletion_time: i64,
    pub(super) deferment_end_time: i64,
    /// Left "moving" by a process killed inside `rbd_trash_move`: removal fails with
    /// EUCLEAN until a trash move of the name finishes it.
    pub(super) moving: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Pool {
    pub(super) id: i64,
    pub(super) created: Option<i64>,
    pub(super) quota: PoolQuota,
    pub(super) applications: Vec<String>,
    /// The directory: images by name (the trash holds the others).
    pub(super) images: BTreeMap<String, Img>,
    /// By trash id (the image's id).
    pub(super) trash: BTreeMap<String, Trashed>,
    /// Omap objects.
    pub(super) objects: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Whether the pool's trash object (`rbd_trash`) exists: made by the first trash move
    /// (`rbd_remove` goes through the trash too), never removed.
    pub(super) trash_object: bool,
}

impl Pool {
    /// Whether the pool is at its quota (by the figures it was given): then the OSDs refuse
    /// with EDQUOT what would add objects or bytes, and let omap-only writes and removals
    /// pass.
    pub(super) fn over_quota(&self) -> bool {
        self.quota.reached().is_some()
    }

    /// A trash move at the quota cannot make the trash object; librbd then fails to reset
    /// the entry it could not add, with ENOENT, and the caller reads "already gone" while the
    /// image stays where it was (measured; see `tests/ceph_contract/`).
    pub(super) fn trash_unwritable(&self) -> bool {
        self.over_quota() && !self.trash_object
    }

    /// An image by id, in the directory or the trash.
    pub(super) fn by_id(&self, id: &str) -> Option<&Img> {
        self.images
            .values()
            .find(|i| i.id == id)
            .or_else(|| self.trash.get(id).map(|t| &t.img))
    }

    pub(super) fn by_id_mut(&mut self, id: &str) -> Option<&mut Img> {
        if let Some(i) = self.images.values_mut().find(|i| i.id == id) {
            return Some(i);
        }
        self.trash.get_mut(id).map(|t| &mut t.img)
    }

    /// The name an image id is reported under: its directory entry, else its trash entry's.
    pub(super) fn name_of(&self, id: &str) -> Option<String> {
        self.images
            .iter()
            .find(|(_, i)| i.id == id)
            .map(|(n, _)| n.clone())
            .or_else(|| self.trash.get(id).map(|t| t.name.clone()))
    }
}

pub(super) struct State {
    pub(super) fsid: String,
    pub(super) pools: BTreeMap<String, Pool>,
    pub(super) next_pool_id: i64,
    pub(super) next_image: u64,
    pub(super) next_snap_id: u64,
    pub(super) next_watch: u64,
    pub(super) clock_offset: i64,
    pub(super) faults: Vec<Fault>,
    pub(super) calls: Vec<Call>,
    /// Pools replaced right after the next call of a method on them
    /// ([`super::FakeCeph::replace_pool_after`]).
    pub(super) replace_after: Vec<(Method, String)>,
}

impl State {
    pub(super) fn now(&self) -> i64 {
        unix_now() + self.clock_offset
    }

    pub(super) fn pool(&self, pool: &str) -> Result<&Pool, CephError> {
        check_pool_name(pool)?;
        self.pools
            .get(pool)
            .ok_or_else(|| CephError::pool_open(pool, enoent()))
    }

    pub(super) fn pool_mut(&mut self, pool: &str) -> Result<&mut Pool, CephError> {
        check_pool_name(pool)?;
        self.pools
            .get_mut(pool)
            .ok_or_else(|| CephError::pool_open(pool, enoent()))
    }

    /// The image `pool/name`, opened: ENOENT (as `op`, usually [`Op::Open`]) when the name
    /// is not in the directory or has no header.
    pub(super) fn open(&self, pool: &str, name: &str, op: Op) -> Result<&Img, CephError> {
        self.pool(pool)?
            .images
            .get(name)
            .filter(|i| i.header)
            .ok_or_else(|| CephError::image_op(op, pool, name, enoent()))
    }

    pub(super) fn open_mut(&mut self, pool: &str, name: &str) -> Result<&mut Img, CephError> {
        self.pool_mut(pool)?
            .images
            .get_mut(name)
            .filter(|i| i.header)
            .ok_or_else(|| CephError::image_op(Op::Open, pool, name, enoent()))
    }

    /// The parent as `rbd_get_parent` names it.
    pub(super) fn parent_spec(&self, p: &ParentRef) -> Option<ParentSpec> {
        let pool = self.pools.get(&p.pool)?;
        let image = pool.name_of(&p.image_id)?;
        let snap = pool
            .by_id(&p.image_id)?
            .snaps
            .iter()
            .find(|s| s.id == p.snap_id)?
            .name
            .clone();
        Some(ParentSpec {
            pool: p.pool.clone(),
            image,
            snap,
        })
    }

    /// Whether any image, in any pool's directory or trash, is a clone of this snapshot.
    pub(super) fn has_children(&self, parent: &ParentRef) -> bool {
        self.pools.values().any(|p| {
            p.images
                .values()
                .chain(p.trash.values().map(|t| &t.img))
                .any(|i| i.parent.as_ref() == Some(parent))
        })
    }

    /// The clones of this snapshot, as `rbd_list_children3` reports them: sorted by pool, then
    /// name; an image both in the directory and in the trash (a move interrupted) counts as in
    /// the directory.
    pub(super) fn children(&self, parent: &ParentRef) -> Vec<Child> {
        let mut out = Vec::new();
        for (pool_name, p) in &self.pools {
            let of = |i: &Img| i.parent.as_ref() == Some(parent);
            for (name, i) in p.images.iter().filter(|(_, i)| of(i)) {
                out.push(Child {
                    pool: pool_name.clone(),
                    image: name.clone(),
                    id: i.id.clone(),
                    in_trash: false,
                });
            }
            for (id, t) in &p.trash {
                if of(&t.img) && !p.images.values().any(|i| i.id == *id) {
                    out.push(Child {
                        pool: pool_name.clone(),
                        image: t.name.clone(),
                        id: id.clone(),
                        in_trash: true,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.pool, &a.image, &a.id).cmp(&(&b.pool, &b.image, &b.id)));
        out
    }

    pub(super) fn pool_name_of_id(&self, id: i64) -> Option<String> {
        self.pools
            .iter()
            .find(|(_, p)| p.id == id)
            .map(|(n, _)| n.clone())
    }

    pub(super) fn new_image_id(&mut self) -> String {
        self.next_image += 1;
        // librbd ids are hex strings of about twelve digits.
        format!("fa{:010x}", self.next_image)
    }

    pub(super) fn new_image(&mut self, size: u64, features: u64, data_pool_id: i64) -> Img {
        Img {
            id: self.new_image_id(),
            size,
            obj_size: OBJECT_SIZE,
            features,
            data_pool_id,
            meta: BTreeMap::new(),
            parent: None,
            snaps: Vec::new(),
            watchers: Vec::new(),
            header: true,
        }
    }

    /// The data pool's id for a new image in `pool`, and the features with
    /// `RBD_FEATURE_DATA_POOL` added when it is another pool. A missing data pool is ENOENT.
    pub(super) fn data_pool(
        &self,
        pool: &str,
        data_pool: Option<&str>,
        features: u64,
    ) -> Result<(i64, u64), Errno> {
        let own = self.pools.get(pool).map(|p| p.id).unwrap_or(-1);
        match data_pool {
            None => Ok((own, features)),
            Some(dp) => {
                let id = self.pools.get(dp).ok_or(enoent())?.id;
                if id == own {
                    Ok((own, features))
                } else {
                    Ok((id, features | RBD_FEATURE_DATA_POOL))
                }
            }
        }
    }

    pub(super) fn info(&self, pool: &str, img: &Img) -> ImageInfo {
        let own = self.pools.get(pool).map(|p| p.id).unwrap_or(-1);
        ImageInfo {
            size: img.size,
            obj_size: img.obj_size,
            features: img.features,
            old_format: false,
            id: img.id.clone(),
            data_pool_id: img.data_pool_id,
            data_pool: (img.data_pool_id != own).then(|| {
                self.pool_name_of_id(img.data_pool_id)
                    .unwrap_or_else(|| format!("#{}", img.data_pool_id))
            }),
            parent: img.parent.as_ref().and_then(|p| self.parent_spec(p)),
        }
    }

    pub(super) fn public(&self, pool: &str, img: &Img) -> FakeImage {
        let info = self.info(pool, img);
        FakeImage {
            id: img.id.clone(),
            size: img.size,
            obj_size: img.obj_size,
            features: img.features,
            data_pool: info.data_pool,
            metadata: img.meta.clone(),
            parent: info.parent,
            snapshots: img.snaps.iter().map(snap_info).collect(),
            watchers: img.watchers.clone(),
        }
    }
}

pub(super) fn snap_info(s: &Snap) -> SnapInfo {
    SnapInfo {
        id: s.id,
        name: s.name.clone(),
        size: s.size,
        protected: s.protected,
        timestamp: s.timestamp,
    }
}

pub(super) fn trash_entry(id: &str, t: &Trashed) -> TrashEntry {
    TrashEntry {
        id: id.to_string(),
        name: t.name.clone(),
        deletion_time: t.deletion_time,
        deferment_end_time: t.deferment_end_time,
    }
}

/// The given keys that are set.
pub(super) fn pick(meta: &BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|k| meta.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}
