//! Client configuration: which options every handle gets, and the checks on credentials
//! made before librados ever sees them. No `unsafe`: the handle's safe methods do the calls.

use std::time::Duration;

use super::handles::Rados;
use super::{CephError, Credentials, Errno, Timeouts};

/// Options set on every client handle (besides mon_host and key). `required == false`
/// options are cosmetic (logging) and an unknown-option error from an older/newer
/// library is ignored for them.
pub(super) fn client_options(t: &Timeouts) -> Vec<(&'static str, String, bool)> {
    let connect = whole_secs(t.connect);
    let op = whole_secs(t.op);
    vec![
        // Never fall back to keyring files under /etc/ceph: the key below is the only one.
        ("keyring", String::new(), true),
        ("client_mount_timeout", connect, true),
        ("rados_mon_op_timeout", op.clone(), true),
        ("rados_osd_op_timeout", op, true),
        // Quiet: nothing on stderr, no log file, no admin socket (its "config show" would
        // reveal the key to anyone able to reach the socket).
        ("log_to_stderr", "false".into(), false),
        ("err_to_stderr", "false".into(), false),
        ("log_to_syslog", "false".into(), false),
        ("err_to_syslog", "false".into(), false),
        ("log_to_file", "false".into(), false),
        ("log_file", String::new(), false),
        ("admin_socket", String::new(), false),
    ]
}

/// Whether `key` has the shape of a base64-encoded cephx `CryptoKey`: u16 type, 8-byte
/// creation time, u16 secret length, then that many secret bytes (28 bytes, 40 base64
/// characters for the usual 16-byte AES secret).
fn looks_like_cephx_key(key: &str) -> bool {
    let Some(bytes) = base64_decode(key) else {
        return false;
    };
    let shaped = bytes.len() >= 12 && {
        let secret_len = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
        secret_len > 0 && bytes.len() == 12 + secret_len
    };
    // The decoded secret itself.
    super::wipe(bytes);
    shaped
}

/// Strict standard base64 (with padding) decoding; `None` when malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let chunks = s.len() / 4;
    let mut decode = || {
        for (i, chunk) in s.chunks(4).enumerate() {
            let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || (pad > 0 && i + 1 != chunks) {
                return None;
            }
            let mut n = 0u32;
            for &c in &chunk[..4 - pad] {
                n = (n << 6) | val(c)?;
            }
            n <<= 6 * pad as u32;
            let b = n.to_be_bytes();
            out.extend_from_slice(&b[1..4 - pad]);
        }
        Some(())
    };
    if decode().is_none() {
        // What was decoded before the bad character is part of the secret.
        super::wipe(out);
        return None;
    }
    Some(out)
}

/// Seconds for a Ceph option, rounded up, at least 1 (0 would mean "no timeout").
fn whole_secs(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1).to_string()
}

pub(super) fn configure(
    rados: &Rados,
    user: &str,
    mon_host: &str,
    key: &str,
    t: &Timeouts,
) -> Result<(), CephError> {
    let setup = |step: &'static str, errno: Errno, hint: Option<&'static str>| CephError::Setup {
        user: user.to_string(),
        step,
        errno,
        hint,
    };
    rados.set("mon_host", mon_host.as_bytes()).map_err(|e| {
        setup(
            "setting mon_host",
            e,
            Some("check the monitors parameter (comma-separated host:port, v1:/v2: prefixes)"),
        )
    })?;
    rados.set("key", key.as_bytes()).map_err(|e| {
        setup(
            "setting the key",
            e,
            Some("the key must be a base64 cephx key"),
        )
    })?;
    for (option, value, required) in client_options(t) {
        match rados.set(option, value.as_bytes()) {
            Ok(()) => {}
            Err(e) if !required && e.0 == libc::ENOENT => {}
            Err(e) => return Err(setup(option, e, None)),
        }
    }
    Ok(())
}

/// A created and configured, not yet connected handle, with the `mon_host` and user it
/// was given. Malformed credentials are refused here, before librados sees them.
pub(super) fn configured(
    c: &Credentials,
    t: &Timeouts,
) -> Result<(Rados, String, String), CephError> {
    let mons: Vec<&str> = c
        .monitors
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .collect();
    if mons.is_empty() {
        return Err(CephError::InvalidArgument {
            what: "monitors",
            reason: "no monitor address given".into(),
        });
    }
    let monitors = mons.join(",");
    let user = c.user.trim();
    let user = user.strip_prefix("client.").unwrap_or(user).to_string();
    if user.is_empty() {
        return Err(CephError::InvalidArgument {
            what: "user",
            reason: "empty cephx user id".into(),
        });
    }
    if !looks_like_cephx_key(c.key.expose().trim()) {
        // Never hand librados a malformed key: it logs the undecodable text.
        return Err(CephError::InvalidArgument {
            what: "key",
            reason: format!(
                "the key for client.{user} is not a base64 cephx secret \
                 (as printed by `ceph auth get-key client.{user}`)"
            ),
        });
    }
    let rados = Rados::create(&user)?;
    configure(&rados, &user, &monitors, c.key.expose().trim(), t)?;
    Ok((rados, monitors, user))
}

#[cfg(test)]
mod tests {
    use super::super::CephKey;
    use super::*;

    fn creds(key: &str) -> Credentials {
        Credentials {
            monitors: vec![" v2:127.0.0.1:13300 ".into(), "127.0.0.1:6789".into()],
            user: "client.kube".into(),
            key: CephKey::new(key),
        }
    }

    /// Configuring a handle needs no cluster: check what is set on it.
    #[test]
    fn handle_is_configured_from_credentials_and_timeouts() {
        let t = Timeouts {
            connect: Duration::from_millis(4500),
            op: Duration::from_secs(7),
        };
        let (rados, monitors, user) =
            configured(&creds("AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ=="), &t).unwrap();
        assert_eq!(monitors, "v2:127.0.0.1:13300,127.0.0.1:6789");
        assert_eq!(user, "kube");
        assert_eq!(rados.get("mon_host").unwrap(), monitors);
        let num = |o: &str| rados.get(o).unwrap().parse::<f64>().unwrap();
        assert_eq!(num("client_mount_timeout"), 5.0);
        assert_eq!(num("rados_mon_op_timeout"), 7.0);
        assert_eq!(num("rados_osd_op_timeout"), 7.0);
        assert_eq!(rados.get("log_to_stderr").unwrap(), "false");
        assert_eq!(rados.get("err_to_stderr").unwrap(), "false");
        assert_eq!(rados.get("log_file").unwrap(), "");
        assert_eq!(rados.get("admin_socket").unwrap(), "");
        assert_eq!(rados.get("keyring").unwrap(), "");
    }

    #[test]
    fn every_client_option_is_known_to_librados() {
        let rados = Rados::create("probe").unwrap();
        for (option, value, _) in client_options(&Timeouts::default()) {
            rados
                .set(option, value.as_bytes())
                .unwrap_or_else(|e| panic!("{option}: {e}"));
        }
    }

    #[test]
    fn bad_credentials_are_rejected_before_librados() {
        let t = Timeouts::default();
        let mut c = creds("AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==");
        c.monitors = vec![" ".into()];
        let e = configured(&c, &t).unwrap_err();
        assert!(
            matches!(
                e,
                CephError::InvalidArgument {
                    what: "monitors",
                    ..
                }
            ),
            "{e}"
        );

        let mut c = creds("AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==");
        c.user = "client.".into();
        let e = configured(&c, &t).unwrap_err();
        assert!(
            matches!(e, CephError::InvalidArgument { what: "user", .. }),
            "{e}"
        );

        let e = configured(&creds(""), &t).unwrap_err();
        assert!(
            matches!(e, CephError::InvalidArgument { what: "key", .. }),
            "{e}"
        );

        for bad in [
            "AQD3\0x",
            "AQD3RAdrDpYAMhAA3InAAAAAAAAAmS15WHEQ==",
            "not a key",
            "AQ==",
        ] {
            let e = configured(&creds(bad), &t).unwrap_err();
            assert!(
                matches!(e, CephError::InvalidArgument { what: "key", .. }),
                "{e}"
            );
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("AQ") && !text.contains("not a key"),
                "{text}"
            );
            assert!(text.contains("ceph auth get-key client.kube"), "{text}");
        }
    }

    /// Regression test for a key leak: with `rados_create` (empty cluster name) librados
    /// ignored `err_to_stderr=false` during connect and printed "failed to decode key
    /// '<the key>'" on stderr. Runs [`librados_child_with_a_malformed_key`] in a process of
    /// its own (stderr belongs to the whole process, and other tests run in parallel
    /// threads) and checks what that process wrote to stderr.
    #[test]
    fn librados_stays_silent_on_stderr_even_with_a_malformed_key() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "config::tests::librados_child_with_a_malformed_key",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the child test did not run: {stdout}"
        );
        assert!(
            !stderr.contains("AQD3"),
            "librados printed the key: {stderr}"
        );
        assert_eq!(stderr, "", "librados wrote to stderr");
    }

    const CHILD: &str = "RBDP_LIBRADOS_STDERR_CHILD";

    /// Feeds librados a malformed key directly (bypassing our own validation); run only by
    /// the test above, in its own process.
    #[test]
    #[ignore = "run by librados_stays_silent_on_stderr_even_with_a_malformed_key"]
    fn librados_child_with_a_malformed_key() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let t = Timeouts {
            connect: Duration::from_secs(1),
            op: Duration::from_secs(1),
        };
        let rados = Rados::create("probe").unwrap();
        configure(
            &rados,
            "probe",
            "127.0.0.1:1",
            "AQD3RAdrDpYAMhAA3InAAAAAAAAAmS15WHEQ==",
            &t,
        )
        .unwrap();
        assert!(rados.connect().is_err(), "connect must fail");
    }

    #[test]
    fn cephx_key_shape() {
        assert!(looks_like_cephx_key(
            "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ=="
        ));
        assert!(looks_like_cephx_key(
            "AQBSdFVo/6O2LBAAzP0Wc1qkD4GiVp2Ds1q76Q=="
        ));
        assert!(!looks_like_cephx_key(
            "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ"
        )); // no padding
        assert!(!looks_like_cephx_key(
            "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQAA"
        )); // 30 bytes
        assert!(!looks_like_cephx_key("AQD3RAdr"));
        assert!(!looks_like_cephx_key(""));
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert_eq!(base64_decode("TQ==TWFu"), None);
        assert_eq!(base64_decode("T!=="), None);
    }

    #[test]
    fn whole_seconds_round_up_and_are_never_zero() {
        assert_eq!(whole_secs(Duration::ZERO), "1");
        assert_eq!(whole_secs(Duration::from_millis(1)), "1");
        assert_eq!(whole_secs(Duration::from_millis(1001)), "2");
        assert_eq!(whole_secs(Duration::from_secs(30)), "30");
    }
}
