//! The set-up commands' drivers: `ignis twilio configure`, `ignis agent sync`, `ignis doctor`.
//! Each reads the configuration, sends the requests its core in [`crate::setup`] builds, feeds
//! the answers back and prints the report. No decisions here.

pub mod agent;
pub mod doctor;
pub mod twilio;
