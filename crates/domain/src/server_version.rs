//! What the API server's version decides: the flavour of PVs for classes that do not choose,
//! and how the watches read their first state.

use crate::params::Flavor;

/// The API server's version, as `/version` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// From `/version`'s strings, which may carry a suffix ("20+" on some distributions); an
    /// unreadable part is 0.
    pub fn parse(major: &str, minor: &str) -> ServerVersion {
        let number = |s: &str| {
            s.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap_or(0)
        };
        ServerVersion {
            major: number(major),
            minor: number(minor),
        }
    }

    /// The flavour for classes without `volumeFlavor`: `chosen` (from `--volume-flavor`), else
    /// csi from 1.31, where the in-tree rbd plugin is gone, and rbd before.
    pub fn default_flavor(self, chosen: Option<Flavor>) -> Flavor {
        match chosen {
            Some(f) => f,
            None if (self.major, self.minor) >= (1, 31) => Flavor::Csi,
            None => Flavor::Rbd,
        }
    }

    /// Whether the watches start with a streaming list (`sendInitialEvents`: the state comes
    /// from the API server's watch cache one object at a time, with no list response at all)
    /// rather than pages. Its WatchList gate is on by default from 1.34 (beta in 1.32, off
    /// again in 1.33); before that a server ignores or refuses the request.
    pub fn streams_lists(self) -> bool {
        (self.major, self.minor) >= (1, 34)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_with_suffixes() {
        assert_eq!(
            ServerVersion::parse("1", "20+"),
            ServerVersion {
                major: 1,
                minor: 20
            }
        );
        assert_eq!(ServerVersion::parse("", "x").minor, 0);
    }

    #[test]
    fn flavor_follows_server_version() {
        let v = |major, minor| ServerVersion { major, minor };
        assert_eq!(v(1, 20).default_flavor(None), Flavor::Rbd);
        assert_eq!(v(1, 30).default_flavor(None), Flavor::Rbd);
        assert_eq!(v(1, 31).default_flavor(None), Flavor::Csi);
        assert_eq!(v(2, 0).default_flavor(None), Flavor::Csi);
        assert_eq!(v(1, 33).default_flavor(Some(Flavor::Rbd)), Flavor::Rbd);
        assert_eq!(v(1, 20).default_flavor(Some(Flavor::Csi)), Flavor::Csi);
    }

    #[test]
    fn lists_stream_where_the_server_streams_them_by_default() {
        let v = |major, minor| ServerVersion { major, minor };
        for (version, streams) in [
            (v(1, 20), false),
            (v(1, 32), false),
            (v(1, 33), false),
            (v(1, 34), true),
            (v(1, 37), true),
            (v(2, 0), true),
            (v(0, 0), false),
        ] {
            assert_eq!(version.streams_lists(), streams, "{version:?}");
        }
    }
}
