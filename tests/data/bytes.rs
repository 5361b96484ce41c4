//! The bytes of images, written and judged with the `rbd` CLI and `sha256sum` (the project's
//! librbd code is what is under test, so it neither writes nor reads them): the data a test
//! expects, writing it into an image, and comparing an image with it.

use std::io::Write;
use std::process::{Command, Stdio};

use testbed::{Bed, assert_success, rbd_json, try_cli};

pub const MIB: usize = 1 << 20;

/// Deterministic pseudo-random bytes (splitmix64): a failure can be replayed from its seed,
/// and two seeds never give the same data, so a stale copy cannot pass for a fresh one.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Extents of pseudo-random data for an image of `size` bytes: at 0, at unaligned offsets
/// across boundaries of the 4 MiB objects, and up to the very last byte (so a grown tail
/// starts right after written data). Each extent has data of its own seed.
pub fn extents(seed: u64, size: usize) -> Vec<(usize, Vec<u8>)> {
    assert!(size >= 32 * MIB, "the layout needs 32 MiB");
    let layout = [
        (0, MIB),
        (3 * MIB + 4097, 2 * MIB),
        (size / 2 - 4 * MIB - 512, MIB + 1000),
        (size - MIB, MIB),
    ];
    let writes: Vec<(usize, Vec<u8>)> = layout
        .iter()
        .enumerate()
        .map(|(i, &(off, len))| {
            (
                off,
                pattern(seed.wrapping_mul(31).wrapping_add(i as u64), len),
            )
        })
        .collect();
    // A pattern of zeros would match a fresh image and prove nothing; overlapping extents
    // would hide one write under another.
    for (i, (off, data)) in writes.iter().enumerate() {
        let nonzero = data.iter().filter(|b| **b != 0).count();
        assert!(
            nonzero * 100 > data.len() * 99,
            "extent {i}: {nonzero} of {} non-zero",
            data.len()
        );
        if let Some((next, _)) = writes.get(i + 1) {
            assert!(off + data.len() <= *next, "extent {i} overlaps the next");
        }
    }
    let total: usize = writes.iter().map(|(_, d)| d.len()).sum();
    assert_eq!((writes.len(), total), (4, 5 * MIB + 1000));
    let (last_off, last) = writes.last().unwrap();
    assert_eq!(
        last_off + last.len(),
        size,
        "the last extent ends at the last byte"
    );
    writes
}

/// The image's expected contents after `writes` land on `base`.
pub fn overlay(base: &[u8], writes: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = base.to_vec();
    for (off, data) in writes {
        out[*off..off + data.len()].copy_from_slice(data);
    }
    out
}

pub fn conf(bed: &Bed) -> std::path::PathBuf {
    bed.dir.join("ceph/ceph.conf")
}

/// Runs `rbd <args>` with `input` on its stdin; panics with its stderr when it fails.
pub fn rbd_stdin(bed: &Bed, args: &[&str], input: &[u8]) {
    let mut child = Command::new("rbd")
        .arg("-c")
        .arg(conf(bed))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the rbd CLI");
    // rbd prints almost nothing with --no-progress, so writing everything before reading
    // its output cannot deadlock.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input)
        .expect("feed rbd");
    let out = child.wait_with_output().unwrap();
    assert_success(&format!("rbd {args:?}"), &out);
}

/// Writes `writes` into the existing image `spec` (pool/image) with `rbd import-diff`: an
/// `rbd diff v1` stream of data records only (no size record, so the image keeps its size;
/// no snapshot records, so none is made), the way a node's writes would land.
pub fn write_extents(bed: &Bed, spec: &str, writes: &[(usize, Vec<u8>)]) {
    let mut diff = b"rbd diff v1\n".to_vec();
    for (off, data) in writes {
        diff.push(b'w');
        diff.extend_from_slice(&(*off as u64).to_le_bytes());
        diff.extend_from_slice(&(data.len() as u64).to_le_bytes());
        diff.extend_from_slice(data);
    }
    diff.push(b'e');
    rbd_stdin(bed, &["import-diff", "--no-progress", "-", spec], &diff);
}

/// Creates image `spec` holding exactly `bytes`, with `rbd import` (layering only, as the old
/// provisioner made its images).
pub fn import_image(bed: &Bed, spec: &str, bytes: &[u8]) {
    rbd_stdin(
        bed,
        &[
            "import",
            "--no-progress",
            "--image-format",
            "2",
            "--image-feature",
            "layering",
            "-",
            spec,
        ],
        bytes,
    );
}

/// `sha256sum` of `bytes`: the same tool judges both sides.
pub fn sha256_of(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    // sha256sum prints only at the end, but a pipe holds 64 KiB: feed it from a thread.
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().expect("feed sha256sum");
    assert!(out.status.success());
    digest_field(&out.stdout)
}

pub fn digest_field(out: &[u8]) -> String {
    let d = String::from_utf8_lossy(out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(d.len(), 64, "sha256sum printed {d:?}");
    d
}

/// `rbd export POOL/IMAGE - | sha256sum`, literally, failing if either side of the pipe does.
pub fn image_sha256(bed: &Bed, spec: &str) -> String {
    let out = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; rbd -c \"$1\" export --no-progress \"$2\" - | sha256sum",
        ])
        .arg("bash")
        .arg(conf(bed))
        .arg(spec)
        .output()
        .expect("run rbd export | sha256sum");
    assert_success(&format!("rbd export {spec} | sha256sum"), &out);
    digest_field(&out.stdout)
}

/// Every byte of image `spec`, as `rbd export` streams it.
pub fn export(bed: &Bed, spec: &str) -> Vec<u8> {
    let out = try_cli(bed, "rbd", &["export", "--no-progress", spec, "-"]);
    assert_success(&format!("rbd export {spec}"), &out);
    out.stdout
}

pub fn image_size(bed: &Bed, spec: &str) -> u64 {
    rbd_json(bed, &["info", spec]).unwrap_or_else(|| panic!("rbd info {spec}"))["size"]
        .as_u64()
        .expect("rbd info prints a size")
}

/// Ok(digest) when image `spec` is exactly `expected` (size from `rbd info`, content from
/// the digest of its export); otherwise where it differs, from a second export.
pub fn compare_image(bed: &Bed, spec: &str, expected: &[u8]) -> Result<String, String> {
    let size = image_size(bed, spec);
    if size != expected.len() as u64 {
        return Err(format!(
            "{spec} has {size} bytes, {} expected",
            expected.len()
        ));
    }
    let (got, want) = (image_sha256(bed, spec), sha256_of(expected));
    if got == want {
        return Ok(got);
    }
    let bytes = export(bed, spec);
    let differ: Vec<usize> = (0..expected.len().min(bytes.len()))
        .filter(|&i| bytes[i] != expected[i])
        .collect();
    Err(format!(
        "{spec}: sha256 {got}, {want} expected; {} of {} bytes differ, the first at offset {:?}",
        differ.len(),
        expected.len(),
        differ.first()
    ))
}

pub fn assert_image(bed: &Bed, spec: &str, expected: &[u8]) -> String {
    compare_image(bed, spec, expected).unwrap_or_else(|e| panic!("data lost: {e}"))
}

/// Non-zero bytes of image `spec` from `from` to its end, and how many bytes that is.
pub fn nonzero_tail(bed: &Bed, spec: &str, from: usize) -> (usize, usize) {
    let bytes = export(bed, spec);
    assert!(bytes.len() >= from, "{spec} is shorter than {from} bytes");
    let tail = &bytes[from..];
    (tail.iter().filter(|b| **b != 0).count(), tail.len())
}

/// Asserts the grown part of `spec`, from `old` bytes to `new`, reads as zeros.
pub fn assert_zero_tail(bed: &Bed, spec: &str, old: usize, new: usize) {
    let (nonzero, len) = nonzero_tail(bed, spec, old);
    assert_eq!(len, new - old, "the grown tail of {spec}");
    assert_eq!(
        nonzero, 0,
        "{nonzero} non-zero bytes in the grown tail of {spec}"
    );
}

/// Removes images the test made by hand, failing test or not.
pub struct Images(pub Bed, pub Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for spec in &self.1 {
            let _ = try_cli(&self.0, "rbd", &["rm", "--no-progress", spec]);
        }
    }
}
