use super::*;

#[test]
fn clients_that_went_bad_are_not_handed_out_again() {
    let errno_err = |errno: i32| CephError::Image {
        op: Op::Create,
        pool: "kube".into(),
        image: "x".into(),
        errno: Errno(errno),
        hint: None,
    };
    let h = Health::default();
    assert!(h.healthy());
    // What the object is (missing, busy, already there) says nothing about the client.
    for e in [libc::ENOENT, libc::EBUSY, libc::EEXIST] {
        assert!(!h.observe::<()>(&Err(errno_err(e))));
    }
    assert!(h.healthy());
    // Timeouts in a row: a fresh connection is cheaper than more of them.
    for _ in 0..FAILING_LIMIT - 1 {
        h.observe::<()>(&Err(errno_err(libc::ETIMEDOUT)));
    }
    assert!(h.healthy());
    h.observe::<()>(&Ok(()));
    for _ in 0..FAILING_LIMIT {
        h.observe::<()>(&Err(errno_err(libc::ETIMEDOUT)));
    }
    assert!(!h.healthy());
    // A rotated key, revoked caps or a blocklisted client: at once.
    for e in [libc::EACCES, libc::EPERM, libc::ESHUTDOWN] {
        let h = Health::default();
        assert!(
            h.observe::<()>(&Err(errno_err(e))),
            "first poisoning is reported"
        );
        assert!(!h.observe::<()>(&Err(errno_err(e))), "only once");
        assert!(!h.healthy());
        h.observe::<()>(&Ok(()));
        assert!(!h.healthy(), "a poisoned client stays out");
    }
}
