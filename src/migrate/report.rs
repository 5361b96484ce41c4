//! What `migrate-to-csi` reports: a line per volume as it is done (escaped: names,
//! annotations, images and the API server's messages all come from objects others may
//! write), or with `-o json` one document at the end; a progress bar on a terminal.

use serde::Serialize;

use super::MigrateError;
use crate::output::{Output, Progress};
use crate::text::escape;
use domain::migration::Step;

/// What happened to one volume.
#[derive(Debug)]
pub(super) enum Outcome {
    Migrated { resumed: bool },
    WouldMigrate(String),
    WouldResume(Step),
    Skipped(String),
    Refused(String),
    Failed(MigrateError),
}

impl Outcome {
    /// One word for scripts.
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Migrated { .. } => "migrated",
            Outcome::WouldMigrate(_) => "would-migrate",
            Outcome::WouldResume(_) => "would-resume",
            Outcome::Skipped(_) => "skipped",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Migrated { resumed: false } => write!(f, "migrated"),
            Outcome::Migrated { resumed: true } => {
                write!(f, "migrated (resumed an interrupted migration)")
            }
            Outcome::WouldMigrate(what) => write!(f, "would migrate: {what}"),
            Outcome::WouldResume(step) => {
                write!(f, "would resume an interrupted migration ({step})")
            }
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Failed(e) => write!(f, "failed: {e}; rerun to resume"),
        }
    }
}

/// One volume, as `-o json` gives it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(super) struct VolumeLine {
    pub pv: String,
    /// `pvc-… (ns/claim, image pool/image)`
    pub volume: String,
    pub outcome: &'static str,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
struct Document {
    volumes: Vec<VolumeLine>,
    notes: Vec<String>,
}

pub(super) struct Report {
    output: Output,
    progress: Progress,
    doc: Document,
    pub changed: usize,
    refused: usize,
    failed: usize,
}

impl Report {
    pub fn new(output: Output, volumes: usize) -> Report {
        Report {
            output,
            progress: Progress::new(volumes, "volumes"),
            doc: Document::default(),
            changed: 0,
            refused: 0,
            failed: 0,
        }
    }

    pub fn volume(&mut self, pv: &str, label: &str, outcome: Outcome) {
        match &outcome {
            Outcome::Refused(_) => self.refused += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Migrated { .. } | Outcome::WouldMigrate(_) | Outcome::WouldResume(_) => {
                self.changed += 1
            }
            Outcome::Skipped(_) => {}
        }
        self.progress.step(pv);
        let line = VolumeLine {
            pv: pv.into(),
            volume: label.into(),
            outcome: outcome.kind(),
            message: outcome.to_string(),
        };
        match self.output {
            Output::Table => self.say(&format!("{label}: {}", line.message)),
            Output::Json => self.doc.volumes.push(line),
        }
    }

    pub fn note(&mut self, note: &str) {
        match self.output {
            Output::Table => self.say(note),
            Output::Json => self.doc.notes.push(note.into()),
        }
    }

    fn say(&self, line: &str) {
        self.progress.println(&escape(line));
    }

    /// Prints the JSON document (if asked for); (refused, failed).
    pub fn finish(self) -> (usize, usize) {
        if self.output == Output::Json {
            println!("{}", json(&self.doc));
        }
        (self.refused, self.failed)
    }
}

fn json(doc: &Document) -> String {
    serde_json::to_string_pretty(doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lists_volumes_and_notes() {
        let mut r = Report::new(Output::Json, 2);
        r.volume(
            "pvc-1",
            "pvc-1 (ns/a, image kube/i)",
            Outcome::Migrated { resumed: true },
        );
        r.volume(
            "pvc-2",
            "pvc-2 (no claim)",
            Outcome::Refused("in use".into()),
        );
        r.note("note: switch the class");
        assert_eq!((r.changed, r.refused, r.failed), (1, 1, 0));
        let v: serde_json::Value = serde_json::from_str(&json(&r.doc)).unwrap();
        assert_eq!(v["volumes"][0]["outcome"], "migrated");
        assert_eq!(
            v["volumes"][0]["message"],
            "migrated (resumed an interrupted migration)"
        );
        assert_eq!(v["volumes"][1]["outcome"], "refused");
        assert_eq!(v["volumes"][1]["message"], "refused: in use");
        assert_eq!(v["notes"][0], "note: switch the class");
        assert_eq!(r.finish(), (1, 0));
    }
}
