//! The cached JSON packed against a dictionary of what objects of one kind have in common.
//!
//! Two PVs of ours differ in a few names and uids: the rest (keys, annotations, the class's
//! monitors, pool, Secrets, driver) repeats in every one of them. Each cached object is kept
//! as back-references into a dictionary (earlier objects of its kind, shared) and into
//! itself, with what matches nothing as literals: an LZ4 block with a preset dictionary
//! (lz4_flex, without unsafe), unpacked whole when a reconcile reads the object.
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

/// The largest dictionary: a few objects of each shape.
const DICT_MAX: usize = 16 << 10;
/// An object packed to more than this share of its size (in %) adds itself to the dictionary.
const POOR_PERCENT: usize = 40;
/// At most one new dictionary per this many objects packed, per kind.
const NEW_DICT_EVERY: u32 = 64;

/// A shared dictionary: earlier objects of a kind, whose bytes later ones refer to.
pub struct Dict {
    bytes: Box<[u8]>,
}

impl Dict {
    pub fn new(bytes: Vec<u8>) -> Dict {
        Dict {
            bytes: bytes.into_boxed_slice(),
        }
    }
}

/// `data` packed against `dict`: an LZ4 block (lz4_flex) with the dictionary as what precedes
/// it, its length in front.
pub fn pack(dict: &Dict, data: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size_with_dict(data, &dict.bytes)
}

/// Why packed bytes could not be read back: never, for bytes [`pack`] wrote.
#[derive(Debug, thiserror::Error)]
#[error("packed cache entry is corrupt: {0}")]
pub struct Corrupt(#[from] lz4_flex::block::DecompressError);

/// What [`pack`] packed, given the same dictionary.
pub fn unpack(dict: &Dict, packed: &[u8]) -> Result<Vec<u8>, Corrupt> {
    Ok(lz4_flex::block::decompress_size_prepended_with_dict(
        packed,
        &dict.bytes,
    )?)
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
        assert!(n < a.len() / 4, "{n} bytes");
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
        // A whole-dictionary match: the length in front, one sequence, LZ4's last literals.
        let again = pack_as(TypeId::of::<KindA>(), other.clone()).packed_len();
        assert!(again < other.len() / 3, "{again} bytes");
        assert_eq!(first.bytes().unwrap(), obj(0));
        assert_eq!(o.bytes().unwrap(), other);
        // Each kind has its own.
        let b = pack_as(TypeId::of::<KindB>(), obj(0));
        assert!(!Arc::ptr_eq(&b.dict, &first.dict) && !Arc::ptr_eq(&b.dict, &grown.dict));
    }
}
