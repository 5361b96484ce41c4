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
