//! How a reconcile step ends when it does not fail. A lost race and a wait for background
//! work are not errors: they are retried quietly, count in no failure metric, and raise no
//! Warning event, so they are not `Error` variants the error paths must remember to skip.

/// A step's end, other than failure.
#[derive(Debug)]
pub enum Outcome<T = ()> {
    Done(T),
    /// A write carried the resourceVersion read and the object had changed since (HTTP 409):
    /// nothing was written. The next pass decides again on the new version.
    Changed {
        verb: &'static str,
        object: String,
    },
    /// Progress, not failure: the step waits for background work.
    Waiting(Wait),
}

/// What a step waits for.
#[derive(Debug, thiserror::Error)]
pub enum Wait {
    #[error(
        "flattening clone {pool}/{child} before deleting its source {pool}/{image}; the deletion continues when it is done"
    )]
    Flattening {
        pool: String,
        child: String,
        /// The clone's source, which is being deleted.
        image: String,
    },
    #[error(
        "volume image {pool}/{image} has VolumeSnapshots ({snapshots}); it is deleted once they are: delete them (kubectl get volumesnapshotcontents shows which), or for a content kept under deletionPolicy Retain remove its RBD snapshot by hand (rbd snap unprotect / rbd snap rm)"
    )]
    Snapshots {
        pool: String,
        image: String,
        snapshots: String,
    },
}

impl<T> Outcome<T> {
    /// The object changed since it was read: `verb` on `object` was not done.
    pub fn changed(verb: &'static str, object: impl Into<String>) -> Outcome<T> {
        Outcome::Changed {
            verb,
            object: object.into(),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(t) => Outcome::Done(f(t)),
            Outcome::Changed { verb, object } => Outcome::Changed { verb, object },
            Outcome::Waiting(w) => Outcome::Waiting(w),
        }
    }
}

/// `?` for outcomes: yields the value of `Done`, returns any other outcome from the caller.
macro_rules! done {
    ($e:expr) => {
        match $e {
            $crate::controller::outcome::Outcome::Done(v) => v,
            other => return Ok(other.map(|_| unreachable!())),
        }
    };
}
pub(crate) use done;
