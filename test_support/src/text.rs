//! Assertions on text: error messages, logs, command output.

/// Asserts that `text` contains every one of `needles`, showing `text` when one is missing.
#[track_caller]
pub fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "no {needle:?} in: {text}");
    }
}
