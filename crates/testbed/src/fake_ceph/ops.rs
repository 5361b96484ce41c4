//! The operations, as librbd does them (checked against a real cluster by
//! `tests/ceph_contract/`).

use super::*;

impl State {
    /// Whether clones depend on snapshot `at` of `pool/image`.
    fn snap_has_children(
        &mut self,
        pool: &str,
        image: &str,
        snap: &str,
        at: usize,
    ) -> Result<bool, CephError> {
        let (img, _) = self.snap_op(pool, image, snap)?;
        let parent = ParentRef {
            pool: pool.to_string(),
            image_id: img.id.clone(),
            snap_id: img.snaps[at].id,
        };
        Ok(self.has_children(&parent))
    }

    /// Before a new image: `Some(AlreadyExisted)` when the name is taken (librbd's create is
    /// idempotent that way), EDQUOT when the pool is at its quota.
    fn name_taken(
        &self,
        pool: &str,
        name: &str,
        err: impl Fn(Errno) -> CephError,
    ) -> Result<Option<Created>, CephError> {
        let pool = self.pool(pool)?;
        if pool.images.contains_key(name) {
            return Ok(Some(Created::AlreadyExisted));
        }
        if pool.over_quota() {
            return Err(err(Errno(libc::EDQUOT)));
        }
        Ok(None)
    }

    pub(super) fn create_image(&mut self, spec: &ImageSpec) -> Result<Created, CephError> {
        let err = |e| CephError::image_op(Op::Create, &spec.pool, &spec.name, e);
        self.pool(&spec.pool)?;
        let features = new_features(spec.features).map_err(err)?;
        let (data_pool_id, features) = self
            .data_pool(&spec.pool, spec.data_pool.as_deref(), features)
            .map_err(err)?;
        if let Some(taken) = self.name_taken(&spec.pool, &spec.name, err)? {
            return Ok(taken);
        }
        let img = self.new_image(spec.size, features, data_pool_id);
        self.pool_mut(&spec.pool)?
            .images
            .insert(spec.name.clone(), img);
        Ok(Created::New)
    }

    pub(super) fn clone_image(&mut self, s: &CloneSpec) -> Result<Created, CephError> {
        let parent = s.parent.to_string();
        let err = |e| CephError::clone_failed(&parent, &s.pool, &s.name, e);
        self.pool(&s.parent.pool)?;
        self.pool(&s.pool)?;
        let features = new_features(s.features).map_err(err)?;
        if features & RBD_FEATURE_LAYERING == 0 {
            return Err(err(Errno(libc::ENOSYS)));
        }
        let (size, obj_size, meta, parent_ref) = {
            let p = self
                .pool(&s.parent.pool)?
                .images
                .get(&s.parent.image)
                .filter(|i| i.header)
                .ok_or_else(|| err(enoent()))?;
            let snap = p
                .snaps
                .iter()
                .find(|x| x.name == s.parent.snap)
                .ok_or_else(|| err(enoent()))?;
            if p.features & RBD_FEATURE_LAYERING == 0 {
                return Err(err(Errno(libc::ENOSYS)));
            }
            // Format 1 needs the snapshot protected; 2 does not (None: librbd's "auto", taken
            // here as 1, what a cluster without `require_min_compat_client mimic` picks).
            if s.clone_format != Some(2) && !snap.protected {
                return Err(err(Errno(libc::EINVAL)));
            }
            let r = ParentRef {
                pool: s.parent.pool.clone(),
                image_id: p.id.clone(),
                snap_id: snap.id,
            };
            (snap.size, p.obj_size, p.meta.clone(), r)
        };
        let (data_pool_id, features) = self
            .data_pool(&s.pool, s.data_pool.as_deref(), features)
            .map_err(err)?;
        if let Some(taken) = self.name_taken(&s.pool, &s.name, err)? {
            return Ok(taken);
        }
        let mut img = self.new_image(size, features, data_pool_id);
        img.obj_size = obj_size;
        // librbd copies the parent's image-meta into the clone.
        img.meta = meta;
        img.parent = Some(parent_ref);
        self.pool_mut(&s.pool)?.images.insert(s.name.clone(), img);
        Ok(Created::New)
    }

    /// Growing writes only the header's omap, which a pool at its quota accepts.
    pub(super) fn resize(
        &mut self,
        pool: &str,
        image: &str,
        new_size: u64,
    ) -> Result<(), CephError> {
        let img = self.open_mut(pool, image)?;
        if new_size < img.size {
            return Err(CephError::ShrinkRefused {
                pool: pool.to_string(),
                image: image.to_string(),
                current: img.size,
                requested: new_size,
            });
        }
        img.size = img.size.max(new_size);
        Ok(())
    }

    pub(super) fn remove_image(&mut self, pool: &str, image: &str) -> Result<Removed, CephError> {
        let err = |e| CephError::image_op(Op::Remove, pool, image, Errno(e));
        let p = self.pool_mut(pool)?;
        let Some(img) = p.images.get(image) else {
            return Ok(Removed::AlreadyGone);
        };
        // librbd moves the image to the trash first, then removes it from there (putting
        // it back when that is refused).
        if p.trash_unwritable() {
            return Ok(Removed::AlreadyGone);
        }
        p.trash_object = true;
        // A half-made image (no header) is cleaned up as it is.
        if img.header {
            if !img.snaps.is_empty() {
                return Err(err(libc::ENOTEMPTY));
            }
            if !img.watchers.is_empty() {
                return Err(err(libc::EBUSY));
            }
        }
        p.images.remove(image);
        Ok(Removed::Removed)
    }

    pub(super) fn trash_move(
        &mut self,
        pool: &str,
        image: &str,
        delay: u64,
    ) -> Result<Removed, CephError> {
        let now = self.now();
        let p = self.pool_mut(pool)?;
        let end = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        let known =
            p.images.contains_key(image) || p.trash.values().any(|t| t.moving && t.name == image);
        if known && p.trash_unwritable() {
            return Ok(Removed::AlreadyGone);
        }
        if known {
            p.trash_object = true;
        }
        if let Some(img) = p.images.remove(image) {
            let id = img.id.clone();
            if let Some(t) = p.trash.get_mut(&id) {
                // Finishing a move a killed process began: the entry's times stay.
                t.moving = false;
                t.img = img;
                return Ok(Removed::Removed);
            }
            p.trash.insert(
                id,
                Trashed {
                    name: image.to_string(),
                    img,
                    deletion_time: now,
                    deferment_end_time: end,
                    moving: false,
                },
            );
            return Ok(Removed::Removed);
        }
        // Not in the directory: an interrupted move of that name is finished.
        match p.trash.values_mut().find(|t| t.moving && t.name == image) {
            Some(t) => {
                t.moving = false;
                Ok(Removed::Removed)
            }
            None => Ok(Removed::AlreadyGone),
        }
    }

    pub(super) fn trash_remove(
        &mut self,
        pool: &str,
        id: &str,
        force: bool,
    ) -> Result<Removed, CephError> {
        let now = self.now();
        let err = |e| CephError::trash_op(Op::TrashRemove, pool, id, Errno(e));
        let p = self.pool_mut(pool)?;
        let Some(t) = p.trash.get(id) else {
            return Ok(Removed::AlreadyGone);
        };
        if now < t.deferment_end_time && !force {
            return Err(err(libc::EPERM));
        }
        if t.moving {
            return Err(err(libc::EUCLEAN));
        }
        if t.img.header {
            if !t.img.snaps.is_empty() {
                return Err(err(libc::ENOTEMPTY));
            }
            if !t.img.watchers.is_empty() {
                return Err(err(libc::EBUSY));
            }
        }
        p.trash.remove(id);
        // A half-moved entry whose image is still in the directory goes with it.
        p.images.retain(|_, i| i.id != id);
        Ok(Removed::Removed)
    }

    pub(super) fn trash_open(&self, pool: &str, id: &str) -> Result<&Img, CephError> {
        self.pool(pool)?
            .by_id(id)
            .filter(|i| i.header)
            .ok_or_else(|| CephError::trash_op(Op::Open, pool, id, enoent()))
    }

    /// Image-meta is omap on the header, which a pool at its quota accepts.
    pub(super) fn set_metadata(
        &mut self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
        opened: bool,
    ) -> Result<(), CephError> {
        let img = if opened {
            self.open_mut(pool, image)?
        } else {
            // Found through its id object, then written by the object class on the header
            // object, which it creates if it is missing (a half-made image's).
            let err = || CephError::image_op(Op::SetMetadata, pool, image, enoent());
            self.pool_mut(pool)?.images.get_mut(image).ok_or_else(err)?
        };
        if opened {
            // Key by key: the last of a repeated key wins.
            img.meta.extend(pairs);
        } else {
            // One encoded map: the first of a repeated key wins.
            let mut seen = std::collections::HashSet::new();
            for (k, v) in pairs {
                if seen.insert(k.clone()) {
                    img.meta.insert(k, v);
                }
            }
        }
        Ok(())
    }

    /// The image opened read/write and the position of its snapshot `snap`, if any.
    pub(super) fn snap_op(
        &mut self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<(&mut Img, Option<usize>), CephError> {
        check_snap_name(snap)?;
        let img = self.open_mut(pool, image)?;
        let at = img.snaps.iter().position(|s| s.name == snap);
        Ok((img, at))
    }

    /// A snapshot is omap on the header (and an id from the monitors): a pool at its quota
    /// accepts it.
    pub(super) fn snap_create(
        &mut self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Created, CephError> {
        let id = self.next_snap_id + 1;
        let now = self.now();
        let (img, at) = self.snap_op(pool, image, snap)?;
        if at.is_some() {
            return Ok(Created::AlreadyExisted);
        }
        let size = img.size;
        img.snaps.push(Snap {
            id,
            name: snap.to_string(),
            size,
            protected: false,
            timestamp: now,
        });
        self.next_snap_id = id;
        Ok(Created::New)
    }

    pub(super) fn snap_protect(
        &mut self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<(), CephError> {
        let err = |e| CephError::snapshot_op(Op::SnapshotProtect, pool, image, snap, Errno(e));
        let (img, at) = self.snap_op(pool, image, snap)?;
        let at = at.ok_or_else(|| err(libc::ENOENT))?;
        if img.snaps[at].protected {
            return Ok(());
        }
        if img.features & RBD_FEATURE_LAYERING == 0 {
            return Err(err(libc::ENOSYS));
        }
        img.snaps[at].protected = true;
        Ok(())
    }

    pub(super) fn snap_unprotect(
        &mut self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<(), CephError> {
        let err = |e| CephError::snapshot_op(Op::SnapshotUnprotect, pool, image, snap, Errno(e));
        let (img, at) = self.snap_op(pool, image, snap)?;
        let at = at.ok_or_else(|| err(libc::ENOENT))?;
        if !img.snaps[at].protected {
            return Ok(());
        }
        if self.snap_has_children(pool, image, snap, at)? {
            return Err(err(libc::EBUSY));
        }
        let (img, _) = self.snap_op(pool, image, snap)?;
        img.snaps[at].protected = false;
        Ok(())
    }

    pub(super) fn snap_remove(
        &mut self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Removed, CephError> {
        let err = |e| CephError::snapshot_op(Op::SnapshotRemove, pool, image, snap, Errno(e));
        let (img, at) = self.snap_op(pool, image, snap)?;
        let Some(at) = at else {
            return Ok(Removed::AlreadyGone);
        };
        if img.snaps[at].protected {
            return Err(err(libc::EBUSY));
        }
        // Clones of format 2 of an unprotected snapshot (librbd would move it to the trash
        // namespace instead).
        if self.snap_has_children(pool, image, snap, at)? {
            return Err(err(libc::EBUSY));
        }
        let (img, _) = self.snap_op(pool, image, snap)?;
        img.snaps.remove(at);
        Ok(Removed::Removed)
    }

    /// As librbd: the image opened read-only, then set to the snapshot.
    pub(super) fn snap_children(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Vec<Child>, CephError> {
        self.pool(pool)?;
        check_snap_name(snap)?;
        let img = self.open(pool, image, Op::Open)?;
        let s =
            img.snaps.iter().find(|s| s.name == snap).ok_or_else(|| {
                CephError::snapshot_op(Op::ListChildren, pool, image, snap, enoent())
            })?;
        Ok(self.children(&ParentRef {
            pool: pool.to_string(),
            image_id: img.id.clone(),
            snap_id: s.id,
        }))
    }

    pub(super) fn flatten(&mut self, pool: &str, image: &str) -> Result<(), CephError> {
        let img = self.open_mut(pool, image)?;
        img.parent = None;
        Ok(())
    }
}
