//! The cached JSON packed against a dictionary of what objects of one kind have in common.
//!
//! Two PVs of ours differ in a few names and uids: the rest (keys, annotations, the class's
//! monitors, pool, Secrets, driver) repeats in every one of them. Each cached object is kept
//! as back-references into a dictionary (earlier objects of its kind, shared) and into
//! itself, with what matches nothing as literals: an LZ77 code with a preset dictionary,
//! unpacked whole when a reconcile reads the object.
//!
//! The dictionary grows from the objects themselves: one that packs poorly (a new class, a
//! kind of PV not seen before) is appended to it for the objects after it. An object keeps
//! the dictionary it was packed with, so a new one never changes what an old object reads;
//! a dictionary goes when the last object packed with it does. Dictionaries are bounded in
//! size, and a new one is made at most once every [`NEW_DICT_EVERY`] objects of a kind, so
//! what they cost stays below a few hundred bytes per object whatever the objects are.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

/// Bytes a match needs to be worth its two or three bytes.
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = MIN_MATCH + 0x7f;
const MAX_LITERALS: usize = 0x80;
/// Candidates tried per position: plenty for objects of a few KB.
const CHAIN: usize = 24;
const HASH_BITS: u32 = 12;
/// The largest dictionary: a few objects of each shape.
const DICT_MAX: usize = 16 << 10;
/// An object packed to more than this share of its size (in %) adds itself to the dictionary.
const POOR_PERCENT: usize = 40;
/// At most one new dictionary per this many objects packed, per kind.
const NEW_DICT_EVERY: u32 = 64;

/// A shared dictionary with its hash chains, computed once.
pub struct Dict {
    bytes: Box<[u8]>,
    head: Box<[u32]>,
    prev: Box<[u32]>,
}

/// `u32::MAX`: no earlier position with this hash.
const NONE: u32 = u32::MAX;

fn hash(b: &[u8]) -> usize {
    let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

/// Links position `i` of `buf` into the chains.
fn link(buf: &[u8], i: usize, head: &mut [u32], prev: &mut Vec<u32>) {
    if i + MIN_MATCH <= buf.len() {
        let h = hash(&buf[i..]);
        prev.push(head[h]);
        head[h] = i as u32;
    } else {
        prev.push(NONE);
    }
}

impl Dict {
    pub fn new(bytes: Vec<u8>) -> Dict {
        let mut head = vec![NONE; 1 << HASH_BITS];
        let mut prev = Vec::with_capacity(bytes.len());
        for i in 0..bytes.len() {
            link(&bytes, i, &mut head, &mut prev);
        }
        Dict {
            bytes: bytes.into_boxed_slice(),
            head: head.into_boxed_slice(),
            prev: prev.into_boxed_slice(),
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn flush_literals(out: &mut Vec<u8>, lit: &[u8]) {
    for chunk in lit.chunks(MAX_LITERALS) {
        out.push((chunk.len() - 1) as u8);
        out.extend_from_slice(chunk);
    }
}

/// `data` packed against `dict`: a control byte below 0x80 starts that many literals (plus
/// one); at or above it, a match of `(c & 0x7f) + MIN_MATCH` bytes at a distance (a varint)
/// back from the current position in the dictionary followed by the object.
pub fn pack(dict: &Dict, data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(dict.bytes.len() + data.len());
    buf.extend_from_slice(&dict.bytes);
    buf.extend_from_slice(data);
    let mut head = dict.head.to_vec();
    // The links of the object's positions; the dictionary's are its own.
    let base = dict.bytes.len();
    let mut prev = Vec::with_capacity(data.len());
    let mut out = Vec::with_capacity(data.len() / 3 + 16);
    let mut lit_start = dict.bytes.len();
    let mut i = dict.bytes.len();
    while i < buf.len() {
        let (mut best_len, mut best_at) = (0, 0);
        if i + MIN_MATCH <= buf.len() {
            let mut cand = head[hash(&buf[i..])];
            let limit = (buf.len() - i).min(MAX_MATCH);
            for _ in 0..CHAIN {
                if cand == NONE {
                    break;
                }
                let c = cand as usize;
                let len = buf[c..]
                    .iter()
                    .zip(&buf[i..i + limit])
                    .take_while(|(a, b)| a == b)
                    .count();
                if len > best_len {
                    (best_len, best_at) = (len, c);
                    if len == limit {
                        break;
                    }
                }
                cand = if c < base {
                    dict.prev[c]
                } else {
                    prev[c - base]
                };
            }
        }
        if best_len >= MIN_MATCH {
            flush_literals(&mut out, &buf[lit_start..i]);
            out.push(0x80 | (best_len - MIN_MATCH) as u8);
            put_varint(&mut out, i - best_at);
            for j in i..i + best_len {
                link(&buf, j, &mut head, &mut prev);
            }
            i += best_len;
            lit_start = i;
        } else {
            link(&buf, i, &mut head, &mut prev);
            i += 1;
        }
    }
    flush_literals(&mut out, &buf[lit_start..]);
    out
}

/// Why packed bytes could not be read back: never, for bytes [`pack`] wrote.
#[derive(Debug, thiserror::Error)]
#[error("packed cache entry is corrupt at byte {0}")]
pub struct Corrupt(usize);

/// What [`pack`] packed, given the same dictionary.
pub fn unpack(dict: &Dict, packed: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let d = &dict.bytes;
    let mut out: Vec<u8> = Vec::with_capacity(packed.len() * 4);
    let mut p = 0;
    while p < packed.len() {
        let c = packed[p] as usize;
        p += 1;
        if c < 0x80 {
            let lit = packed.get(p..p + c + 1).ok_or(Corrupt(p))?;
            out.extend_from_slice(lit);
            p += c + 1;
            continue;
        }
        let len = (c & 0x7f) + MIN_MATCH;
        let (mut dist, mut shift) = (0usize, 0);
        loop {
            let b = *packed.get(p).ok_or(Corrupt(p))?;
            p += 1;
            dist |= ((b & 0x7f) as usize).checked_shl(shift).ok_or(Corrupt(p))?;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        let pos = d.len() + out.len();
        let start = pos
            .checked_sub(dist)
            .filter(|_| dist > 0)
            .ok_or(Corrupt(p))?;
        // Byte by byte: a match may overlap what it writes.
        for from in start..start + len {
            let b = if from < d.len() {
                d[from]
            } else {
                out[from - d.len()]
            };
            out.push(b);
        }
    }
    Ok(out)
}

/// An object's bytes packed, with the dictionary they need.
#[derive(Clone)]
pub struct Packed {
    dict: Arc<Dict>,
    bytes: Box<[u8]>,
}

impl Packed {
    pub fn bytes(&self) -> Result<Vec<u8>, Corrupt> {
        unpack(&self.dict, &self.bytes)
    }

    #[cfg(test)]
    pub fn packed_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The current dictionary of one kind, and objects packed since it was made.
struct Current {
    dict: Arc<Dict>,
    since: u32,
}

/// Each kind's current dictionary (PVs and claims share little).
static CURRENT: LazyLock<Mutex<HashMap<TypeId, Current>>> = LazyLock::new(Mutex::default);

/// Packs `data` with the current dictionary of `kind`; see the module documentation.
pub fn pack_as(kind: TypeId, data: Vec<u8>) -> Packed {
    let dict = {
        let mut all = CURRENT.lock();
        let cur = all.entry(kind).or_insert_with(|| Current {
            dict: Arc::new(Dict::new(Vec::new())),
            since: NEW_DICT_EVERY,
        });
        cur.since = cur.since.saturating_add(1);
        cur.dict.clone()
    };
    let packed = pack(&dict, &data);
    if packed.len() * 100 <= data.len() * POOR_PERCENT {
        return Packed {
            dict,
            bytes: packed.into_boxed_slice(),
        };
    }
    let grown = {
        let mut all = CURRENT.lock();
        let cur = all.get_mut(&kind).expect("inserted above");
        if cur.since < NEW_DICT_EVERY {
            None
        } else {
            let mut bytes = if cur.dict.bytes.len() + data.len() <= DICT_MAX {
                cur.dict.bytes.to_vec()
            } else {
                Vec::new()
            };
            bytes.extend_from_slice(&data);
            let d = Arc::new(Dict::new(bytes));
            *cur = Current {
                dict: d.clone(),
                since: 0,
            };
            Some(d)
        }
    };
    match grown {
        Some(dict) => Packed {
            bytes: pack(&dict, &data).into_boxed_slice(),
            dict,
        },
        None => Packed {
            dict,
            bytes: packed.into_boxed_slice(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(dict: &[u8], data: &[u8]) -> usize {
        let d = Dict::new(dict.to_vec());
        let p = pack(&d, data);
        assert_eq!(
            unpack(&d, &p).unwrap(),
            data,
            "{:?}",
            String::from_utf8_lossy(data)
        );
        p.len()
    }

    #[test]
    fn what_is_packed_unpacks_the_same() {
        let json =
            br#"{"metadata":{"name":"pvc-1"},"spec":{"rbd":{"monitors":["10.0.0.1:6789"]}}}"#;
        // Empty inputs, short ones, runs (overlapping matches), the dictionary alone.
        for (dict, data) in [
            (&b""[..], &b""[..]),
            (b"", b"a"),
            (b"", b"abc"),
            (b"", &[b'x'; 1000][..]),
            (b"abcd", b"abcd"),
            (b"abcd", b"abcdabcdabcdabcdX"),
            (json, json),
            (b"", json),
            (json, br#"{"metadata":{"name":"pvc-2"}}"#),
        ] {
            roundtrip(dict, data);
        }
        // Bytes of every value, long literal runs, long distances; deterministic noise.
        let mut x: u32 = 12345;
        let mut noise = || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        };
        for n in [1usize, 127, 128, 129, 300, 5000] {
            let data: Vec<u8> = (0..n).map(|_| noise()).collect();
            let mut twice = data.clone();
            twice.extend_from_slice(&data[..n / 2]);
            roundtrip(&data, &twice);
            roundtrip(b"", &twice);
            let small: Vec<u8> = (0..n).map(|_| noise() % 4).collect();
            roundtrip(&small[..n / 2], &small);
        }
    }

    #[test]
    fn an_object_like_the_dictionary_packs_small() {
        let a = br#"{"metadata":{"annotations":{"rbd-provisioner.ceph.com/monitors":"10.0.0.1:6789,10.0.0.2:6789"},"name":"pvc-0b7a"},"spec":{"storageClassName":"fast"}}"#;
        let b = br#"{"metadata":{"annotations":{"rbd-provisioner.ceph.com/monitors":"10.0.0.1:6789,10.0.0.2:6789"},"name":"pvc-4c3e"},"spec":{"storageClassName":"fast"}}"#;
        let n = roundtrip(a, b);
        assert!(n < 20, "{n} bytes");
    }

    #[test]
    fn corrupt_bytes_are_an_error_not_a_panic() {
        let d = Dict::new(b"abcdef".to_vec());
        for bad in [
            &[0x05u8][..],
            &[0x80],
            &[0x80, 0x07],
            &[0x80, 0xff],
            &[0x80, 0x00],
        ] {
            assert!(unpack(&d, bad).is_err(), "{bad:?}");
        }
        let mut long = vec![0x80];
        long.extend([0xff; 12]);
        assert!(unpack(&d, &long).is_err());
    }

    struct KindA;
    struct KindB;

    #[test]
    fn a_kind_learns_its_dictionary_and_old_objects_keep_theirs() {
        let obj = |i: u32| {
            format!(r#"{{"kind":"Widget","name":"w-{i}","class":"gold-plated-widget-class","owner":"team"}}"#).into_bytes()
        };
        let first = pack_as(TypeId::of::<KindA>(), obj(0));
        let second = pack_as(TypeId::of::<KindA>(), obj(1));
        assert!(
            second.packed_len() < obj(1).len() / 3,
            "{} bytes",
            second.packed_len()
        );
        assert!(Arc::ptr_eq(&first.dict, &second.dict));
        // Another shape, soon after: packed poorly, but no new dictionary yet.
        let other = br#"{"completely":"different","values":[1,2,3,4,5,6,7,8]}"#.to_vec();
        let o = pack_as(TypeId::of::<KindA>(), other.clone());
        assert!(Arc::ptr_eq(&o.dict, &first.dict));
        for i in 2..NEW_DICT_EVERY + 2 {
            assert_eq!(
                pack_as(TypeId::of::<KindA>(), obj(i)).bytes().unwrap(),
                obj(i)
            );
        }
        // Now it grows: the other shape packs small after that, the old objects read the same.
        let grown = pack_as(TypeId::of::<KindA>(), other.clone());
        assert!(!Arc::ptr_eq(&grown.dict, &first.dict));
        assert_eq!(grown.bytes().unwrap(), other);
        assert!(pack_as(TypeId::of::<KindA>(), other.clone()).packed_len() < 8);
        assert_eq!(first.bytes().unwrap(), obj(0));
        assert_eq!(o.bytes().unwrap(), other);
        // Each kind has its own.
        let b = pack_as(TypeId::of::<KindB>(), obj(0));
        assert!(!Arc::ptr_eq(&b.dict, &first.dict) && !Arc::ptr_eq(&b.dict, &grown.dict));
    }
}
