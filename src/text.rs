//! Text from Kubernetes objects on an operator's terminal.
//!
//! Names, annotations, parameter values and image names are written by whoever may edit those
//! objects (a tenant, for claims and their annotations). Printed as they are, an ESC or CSI
//! sequence in them could clear the screen, rewrite earlier lines or set the window title, and
//! a bidi override could make a line read differently from what it says. The commands that
//! print such text (`migrate-to-csi`, `doctor`, `audit`) pass it through [`escape`] first.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` safe to print on a terminal, on one line: every control character (C0, DEL, C1:
/// ESC and CSI among them), every bidi control and the Unicode line and paragraph separators
/// are written as Rust escapes (`\u{1b}`, `\n`, `\u{202e}`), and `\` as `\\` so that an
/// escape in the output always stands for one character of the input. Anything else, other
/// scripts included, is kept as it is. Borrows when nothing needs escaping.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            // Arabic letter mark, left-to-right and right-to-left marks.
            '\u{061c}' | '\u{200e}' | '\u{200f}'
            // Embeddings and overrides (LRE, RLE, PDF, LRO, RLO).
            | '\u{202a}'..='\u{202e}'
            // Isolates (LRI, RLI, FSI, PDI).
            | '\u{2066}'..='\u{2069}'
            // Line and paragraph separators: a line break to some terminals and pagers.
            | '\u{2028}' | '\u{2029}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "",
            "pvc-0b5f2c3e-6c1d-4f0e-9a41-1f0c9d0e6b2a",
            "kube/kubernetes-dynamic-pvc-1",
            "spec.rbd → spec.csi (rbd.csi.ceph.com, clusterID c)",
            "Größe 10 GiB, 日本語, émoji 🙂",
            "\"quoted\" and 'single'",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn terminal_sequences_are_shown_not_run() {
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        // Set the window title, then BEL.
        assert_eq!(escape("\u{1b}]0;owned\u{7}"), "\\u{1b}]0;owned\\u{7}");
        // The one-byte CSI of C1, and the rest of C1.
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("\u{80}\u{9f}"), "\\u{80}\\u{9f}");
        assert_eq!(escape("\u{0}\u{7f}\u{8}"), "\\u{0}\\u{7f}\\u{8}");
    }

    #[test]
    fn line_breaks_stay_on_one_line() {
        assert_eq!(escape("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escape("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
        assert!(!escape("x\ny\u{85}z").contains(['\n', '\u{85}']));
    }

    #[test]
    fn bidi_controls_are_shown() {
        assert_eq!(
            escape("image\u{202e}txt.exe"),
            "image\\u{202e}txt.exe",
            "right-to-left override"
        );
        for c in ['\u{61c}', '\u{200e}', '\u{200f}']
            .into_iter()
            .chain('\u{202a}'..='\u{202e}')
            .chain('\u{2066}'..='\u{2069}')
        {
            let e = escape(&c.to_string()).into_owned();
            assert_eq!(e, format!("\\u{{{:x}}}", c as u32));
        }
    }

    #[test]
    fn escapes_cannot_be_forged() {
        // Text that already reads like an escape stays distinguishable from a real one.
        assert_eq!(escape("\\u{1b}"), "\\\\u{1b}");
        assert_ne!(escape("\\u{1b}"), escape("\u{1b}"));
        assert_eq!(escape("C:\\x"), "C:\\\\x");
    }

    #[test]
    fn nothing_unsafe_is_left() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let e = escape(&all);
        assert!(!e.chars().any(|c| c != '\\' && needs_escape(c)));
        assert!(!e.chars().any(char::is_control));
    }
}
