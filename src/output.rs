//! What the operator's commands (`audit`, `migrate-to-csi`, `adopt`) share: `-o json|table`,
//! and a progress bar on stderr that shows only when stdout is a terminal, so pipes, scripts
//! and tests get nothing but their output.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `-o`: a table for people, or one JSON document for scripts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// A progress bar over `len` items, drawn on stderr; hidden unless stdout is a terminal.
pub struct Progress(ProgressBar);

impl Progress {
    pub fn new(len: usize, what: &str) -> Progress {
        Progress::shown(std::io::stdout().is_terminal(), len, what)
    }

    fn shown(terminal: bool, len: usize, what: &str) -> Progress {
        if !terminal {
            return Progress(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what.to_string());
        Progress(bar)
    }

    /// One item done; `item` names it (escaped: names come from objects others chose).
    pub fn step(&self, item: &str) {
        self.0.set_message(crate::text::escape(item).into_owned());
        self.0.inc(1);
    }

    /// Prints a line on stdout without tearing the bar.
    pub fn println(&self, line: &str) {
        self.0.suspend(|| println!("{line}"));
    }

    pub fn is_hidden(&self) -> bool {
        self.0.is_hidden()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_off_a_terminal() {
        let p = Progress::shown(false, 3, "images");
        assert!(p.is_hidden());
        p.step("a");
        // Tests run with stdout captured: never a terminal.
        assert!(Progress::new(1, "x").is_hidden());
        assert!(!std::io::stdout().is_terminal());
    }

    #[test]
    fn counts_on_a_terminal() {
        let p = Progress::shown(true, 3, "images");
        p.step("kube/\u{1b}[2Ja");
        p.step("kube/b");
        assert_eq!(p.0.position(), 2);
        assert!(!p.0.message().contains('\u{1b}'), "{}", p.0.message());
        assert_eq!(p.0.prefix(), "images");
    }
}
