//! The rows `adopt` reports, as a table for a terminal or JSON for scripts.

use serde::Serialize;

use crate::text::escape;
use domain::adopt::Verdict;
use domain::meta::qualified;
use domain::owner::Stamp;
use domain::volume::human_size;

/// One image: what it is, and whether it is adoptable or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub image: String,
    /// Bytes.
    pub size: u64,
    /// The claim its stamp names (`namespace/name`), empty when unstamped.
    pub claim: String,
    /// Seconds since the stamp's creation time.
    pub age_seconds: Option<i64>,
    /// `adoptable`, `finish` (an earlier run wrote the PV; only the re-stamp is left),
    /// `adopted` (already) or `refused`.
    pub status: &'static str,
    /// The PV it gets (or has), and the claim that PV is pre-bound to.
    pub pv: Option<String>,
    pub target: Option<String>,
    /// Why it is refused.
    pub reason: Option<String>,
    /// With `--apply`: what was done.
    pub applied: Option<String>,
    /// With `--apply`: why it failed.
    pub error: Option<String>,
}

impl Row {
    pub fn new(image: &str, size: u64, stamp: Option<&Stamp>, verdict: &Verdict) -> Row {
        Row::at(image, size, stamp, verdict, now())
    }

    pub fn at(image: &str, size: u64, stamp: Option<&Stamp>, verdict: &Verdict, now: i64) -> Row {
        let (status, pv, target, reason) = match verdict {
            Verdict::Adopt { pv, target } => ("adoptable", Some(pv), Some(target.label()), None),
            Verdict::Finish { pv, target } => ("finish", Some(pv), Some(target.label()), None),
            Verdict::Done { pv } => ("adopted", Some(pv), None, None),
            Verdict::Refuse(r) => ("refused", None, None, Some(r.to_string())),
        };
        Row {
            image: image.into(),
            size,
            claim: stamp
                .map(|s| qualified(Some(&s.claim_namespace), &s.claim_name))
                .unwrap_or_default(),
            age_seconds: stamp.map(|s| now.saturating_sub(s.created)),
            status,
            pv: pv.cloned(),
            target,
            reason,
            applied: None,
            error: None,
        }
    }

    pub fn set_result(&mut self, r: Option<Result<String, String>>) {
        match r {
            Some(Ok(done)) => self.applied = Some(done),
            Some(Err(e)) => self.error = Some(e),
            None => {}
        }
    }

    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// `3d4h`, `5m`, `1m1s`: the largest unit and the next one when it is not zero.
pub fn age(secs: i64) -> String {
    const UNITS: [(i64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let secs = secs.max(0);
    let i = UNITS.iter().position(|(u, _)| secs >= *u).unwrap_or(3);
    let (unit, name) = UNITS[i];
    let mut out = format!("{}{name}", secs / unit);
    if let Some((next, next_name)) = UNITS.get(i + 1) {
        let n = secs % unit / next;
        if n > 0 {
            out.push_str(&format!("{n}{next_name}"));
        }
    }
    out
}

/// A table for a terminal: one line per image, then its reason or result indented below.
/// Names come from objects and stamps others chose: escaped.
pub fn table(rows: &[Row], applied: bool) -> String {
    let mut out = String::new();
    let head = ["IMAGE", "SIZE", "CLAIM", "AGE", "STATUS", "PV -> CLAIM"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                escape(&r.image).into_owned(),
                human_size(r.size),
                escape(&r.claim).into_owned(),
                r.age_seconds.map(age).unwrap_or_else(|| "-".into()),
                r.status.to_string(),
                match (&r.pv, &r.target) {
                    (Some(pv), Some(t)) => escape(&format!("{pv} -> {t}")).into_owned(),
                    (Some(pv), None) => escape(pv).into_owned(),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([head[i].len()])
            .max()
            .unwrap_or_default()
    };
    let widths: Vec<usize> = (0..head.len()).map(width).collect();
    let line = |cols: &[String]| {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    out.push_str(&line(&head.map(String::from)));
    for (r, c) in rows.iter().zip(&cells) {
        out.push_str(&line(c));
        for note in [&r.reason, &r.applied, &r.error].into_iter().flatten() {
            out.push_str(&format!("    {}\n", escape(note)));
        }
    }
    let adoptable = rows
        .iter()
        .filter(|r| matches!(r.status, "adoptable" | "finish"))
        .count();
    out.push_str(&format!(
        "{} image(s), {adoptable} adoptable{}\n",
        rows.len(),
        if applied || adoptable == 0 {
            ""
        } else {
            "; nothing changed (dry run): rerun with --apply to write their PVs"
        }
    ));
    out
}

#[cfg(test)]
mod tests;
