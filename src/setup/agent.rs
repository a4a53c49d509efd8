//! Placeholder: filled in by its own change (issue 13).
