//! Fuzz entry points for the audio pipeline (issue 3).
