//! Crash points replayed: what a predecessor killed in the middle of a deletion leaves, and
//! what the next deletion makes of it. An image already in the trash is purged only when it
//! is provably this volume's: the PV's immutable spec names it and the name is derived from
//! the claim's uid (a half-moved entry cannot even be opened to read its stamp).

use super::*;

/// A PV our deletion had committed (deleted, held by our finalizer) when its process died.
fn committed(scene: &Scene) -> PersistentVolume {
    deleting(&released_pv(UID, &scene.place()))
}

/// The steps of the retried deletion: the fresh read, the admin Secret, the DELETE again
/// (still held), our finalizer dropped.
fn retried(pv: &PersistentVolume) -> Vec<Step> {
    goes_through(pv)
}

/// Marks our image as trashed by us, as the deletion does just before the move.
fn mark_trashed(scene: &Scene) {
    let name = image_name(UID);
    scene
        .fake
        .put_metadata(POOL, &name, &[(domain::owner::META_TRASHED, "1700000000")]);
}

async fn run(scene: &Scene, pv: PersistentVolume) -> ApiServer {
    let (client, api) = ApiServer::start(retried(&pv));
    let ctx = scene.context(client, std::slice::from_ref(&pv));
    let action = reconcile(Arc::new(pv), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    settle(&ctx).await;
    api
}

/// Killed after the trash move, before the purge: the image is "already gone" from the
/// directory, which the PV's recorded place proves is not a replaced pool; the entry under
/// its name is purged and the PV let go.
#[tokio::test]
async fn an_image_trashed_by_a_killed_predecessor_is_purged() {
    let scene = Scene::new();
    let id = scene.our_image(UID);
    mark_trashed(&scene);
    scene
        .fake
        .cluster()
        .trash_move(POOL, &image_name(UID), 0)
        .await
        .unwrap();
    scene.fake.clear_calls();
    run(&scene, committed(&scene)).await.done();
    assert_eq!(
        writes_once(&scene, &id),
        vec![format!("trash_remove {POOL}/{id}")]
    );
    assert!(scene.fake.trash(POOL).is_empty());
}

/// Killed inside `rbd_trash_move`, the image already out of the directory: the entry is
/// "moving" and cannot be removed (EUCLEAN) until a trash move of the name finishes it.
#[tokio::test]
async fn a_trash_move_interrupted_after_the_directory_is_finished_and_purged() {
    let scene = Scene::new();
    scene.our_image(UID);
    mark_trashed(&scene);
    let id = scene
        .fake
        .interrupt_trash_move(POOL, &image_name(UID), false);
    run(&scene, committed(&scene)).await.done();
    assert!(scene.empty(), "trashed and purged");
    // Refused while "moving", finished by a trash move of the name, then removed.
    let removes = scene.fake.calls_of(Rbd::TrashRemove);
    assert_eq!(removes[0].errno, Some(libc::EUCLEAN), "{removes:?}");
    assert!(
        removes[1..].iter().all(|c| c.ok() && c.image == id),
        "{removes:?}"
    );
    let moves = scene.fake.calls_of(Rbd::TrashMove);
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert!(moves[0].is(Rbd::TrashMove, POOL, &image_name(UID)));
    assert_eq!(scene.fake.writes().len(), removes.len() + 1, "nothing else");
}

/// Killed inside `rbd_trash_move`, the image still in the directory: the deletion runs as
/// usual (its stamp is readable), and its own trash move finishes the interrupted one.
#[tokio::test]
async fn a_trash_move_interrupted_before_the_directory_is_redone() {
    let scene = Scene::new();
    let id = scene.our_image(UID);
    let image = image_name(UID);
    scene.fake.interrupt_trash_move(POOL, &image, true);
    run(&scene, committed(&scene)).await.done();
    assert_eq!(writes_once(&scene, &id), marked_moved_purged(&image, &id));
    assert!(scene.empty(), "trashed and purged");
}

/// The PV's name and image agree, but its claim's uid does not name the image: a trash
/// entry of that name (here an operator's own `rbd trash mv`, unstamped) is not provably
/// this volume's and stays; so does it for the trash sweep, which purges only our marks.
#[tokio::test]
async fn a_trash_entry_not_provably_this_volumes_is_left() {
    let scene = Scene::new();
    let image = image_name(UID);
    scene.fake.put_image(POOL, &image, GIB);
    scene
        .fake
        .cluster()
        .trash_move(POOL, &image, 0)
        .await
        .unwrap();
    scene.fake.clear_calls();
    let mut pv = committed(&scene);
    pv.spec.as_mut().unwrap().claim_ref.as_mut().unwrap().uid = Some("another-claim".into());
    run(&scene, pv).await.done();
    assert_eq!(scene.writes(), Vec::<String>::new());
    assert_eq!(scene.fake.trash(POOL).len(), 1, "kept");
    let entry = &scene.fake.trash(POOL)[0];
    let meta = scene.fake.trashed_image(POOL, &entry.id).unwrap().metadata;
    assert!(!purgeable(&meta, &instance()));
}

/// Killed between the commit and the trash move: the PV is held by our finalizer, the
/// image untouched. The next process deletes it as usual.
#[tokio::test]
async fn a_deletion_killed_after_its_commit_is_finished() {
    let scene = Scene::new();
    let id = scene.our_image(UID);
    run(&scene, committed(&scene)).await.done();
    assert_eq!(scene.done(Rbd::TrashMove), 1);
    assert!(scene.empty(), "trashed and purged");
    assert!(writes_once(&scene, &id).ends_with(&[format!("trash_remove {POOL}/{id}")]));
}
