//! The little of Ceph's wire encoding that object-class calls need: strings and a map of
//! string to bufferlist, each length a little-endian u32 ahead of its bytes.

/// `encode(std::map<std::string, bufferlist>)` with each value's bytes as the bufferlist.
pub(super) fn encode_string_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    // A std::map is encoded in key order.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    put_len(&mut out, sorted.len());
    for (k, v) in sorted {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    out
}

/// `decode(std::string)`; `None` when the bytes are not one whole encoded UTF-8 string.
pub(super) fn decode_string(bytes: &[u8]) -> Option<String> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (rest.len() == len)
        .then(|| String::from_utf8(rest.to_vec()).ok())
        .flatten()
}

/// The `create_time` of pool `pool` in the JSON of `osd pool ls detail`, as Unix seconds.
pub(super) fn pool_create_time(json: &[u8], pool: &str) -> Option<i64> {
    let pools: Vec<serde_json::Value> = serde_json::from_slice(json).ok()?;
    let p = pools.iter().find(|p| p["pool_name"] == pool)?;
    ceph_time(p["create_time"].as_str()?)
}

/// `ceph osd pool get-quota --format json`: zero means no quota.
pub(super) fn pool_quota(json: &[u8]) -> Option<super::PoolQuota> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let set = |k: &str| v[k].as_u64().filter(|n| *n > 0);
    Some(super::PoolQuota {
        max_objects: set("quota_max_objects"),
        max_bytes: set("quota_max_bytes"),
        objects: v["current_num_objects"].as_u64().unwrap_or(0),
        bytes: v["current_num_bytes"].as_u64().unwrap_or(0),
    })
}

/// Every monitor address in the JSON of `ceph mon dump` (`public_addrs.addrvec`, v2 and v1,
/// and the legacy `addr`), without the `/nonce`.
pub(super) fn mon_addrs(json: &[u8]) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let mut out: Vec<String> = Vec::new();
    for m in v["mons"].as_array()? {
        let vec = m["public_addrs"]["addrvec"]
            .as_array()
            .into_iter()
            .flatten();
        for a in vec.map(|a| &a["addr"]).chain([&m["addr"]]) {
            if let Some(a) = a.as_str().and_then(|a| a.split('/').next())
                && !a.is_empty()
                && !out.iter().any(|o| o == a)
            {
                out.push(a.to_string());
            }
        }
    }
    Some(out)
}

/// `2026-12-06T03:21:32.111197+0000` (Ceph's `utime_t` in UTC) as Unix seconds.
fn ceph_time(t: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !t.ends_with("+0000") && !t.ends_with('Z') {
        return None;
    }
    // Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("Ceph encodes lengths as u32");
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_addresses_as_mon_dump_prints_them() {
        let dump = br#"{"epoch":1,"fsid":"f","mons":[{"rank":0,"name":"a","public_addrs":{"addrvec":[{"type":"v2","addr":"127.0.0.1:3300","nonce":0},{"type":"v1","addr":"127.0.0.1:6789","nonce":0}]},"addr":"127.0.0.1:6789/0","public_addr":"127.0.0.1:6789/0"}]}"#;
        assert_eq!(
            mon_addrs(dump),
            Some(vec!["127.0.0.1:3300".into(), "127.0.0.1:6789".into()])
        );
        assert_eq!(mon_addrs(br#"{"mons":[]}"#), Some(vec![]));
        assert_eq!(mon_addrs(b"[]"), None);
    }

    #[test]
    fn pool_quotas_as_get_quota_prints_them() {
        // `ceph osd pool get-quota P --format json` (Ceph 16.2.15) once max_objects 12 was
        // reached; zero is "no quota".
        let json = br#"{"pool_name":"p","pool_id":4,"quota_max_objects":12,"current_num_objects":13,"quota_max_bytes":0,"current_num_bytes":197}"#;
        let q = pool_quota(json).unwrap();
        assert_eq!(
            q,
            super::super::PoolQuota {
                max_objects: Some(12),
                max_bytes: None,
                objects: 13,
                bytes: 197,
            }
        );
        assert_eq!(
            q.reached().as_deref(),
            Some("max_objects 12 (13 objects stored)")
        );
        let both = super::super::PoolQuota {
            max_bytes: Some(100),
            ..q.clone()
        };
        assert_eq!(
            both.reached().as_deref(),
            Some("max_objects 12 (13 objects stored) and max_bytes 100 (197 bytes stored)")
        );
        let none = pool_quota(br#"{"quota_max_objects":0,"quota_max_bytes":0}"#).unwrap();
        assert_eq!((none.reached(), none.set()), (None, None));
        assert_eq!(both.set().as_deref(), Some("max_objects 12, max_bytes 100"));
        assert!(pool_quota(b"not json").is_none());
    }

    #[test]
    fn pool_creation_times() {
        assert_eq!(ceph_time("1970-01-01T00:00:00.000000+0000"), Some(0));
        // `date -u -d 2026-12-06T03:21:38 +%s`
        assert_eq!(
            ceph_time("2026-12-06T03:21:38.594521+0000"),
            Some(1_796_527_298)
        );
        assert_eq!(ceph_time("2000-02-29T12:00:00.0+0000"), Some(951_825_600));
        assert_eq!(ceph_time("2026-12-06T03:21:38.5+0100"), None);
        let json = br#"[{"pool_id":1,"pool_name":"a","create_time":"1970-01-01T00:01:00.0+0000"},
            {"pool_id":2,"pool_name":"kube","create_time":"1970-01-02T00:00:00.0+0000"}]"#;
        assert_eq!(pool_create_time(json, "kube"), Some(86_400));
        assert_eq!(pool_create_time(json, "gone"), None);
    }

    #[test]
    fn a_map_is_encoded_in_key_order_with_u32_lengths() {
        let got = encode_string_map(&[("b".into(), "xy".into()), ("a".into(), String::new())]);
        let want: Vec<u8> = [
            &2u32.to_le_bytes()[..],
            &1u32.to_le_bytes(),
            b"a",
            &0u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            b"b",
            &2u32.to_le_bytes(),
            b"xy",
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[test]
    fn a_string_decodes_only_when_whole() {
        let enc = [&12u32.to_le_bytes()[..], b"10f2a6b8b4c1"].concat();
        assert_eq!(decode_string(&enc).as_deref(), Some("10f2a6b8b4c1"));
        assert_eq!(decode_string(&enc[..10]), None);
        assert_eq!(decode_string(&[1, 0]), None);
        assert_eq!(
            decode_string(&[&1u32.to_le_bytes()[..], &[0xff]].concat()),
            None
        );
    }
}
