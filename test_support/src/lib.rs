//! Test harnesses of the dbt-remote workspace (a dev-dependency of its crates; not published):
//! [`server::RealServer`] starts the real `dbt-server` binary with its documented command line
//! on a free port of 127.0.0.1, [`gcp::Emulators`] (feature `gcp`) the Firestore and Cloud
//! Storage emulators; [`text::assert_contains`] checks messages, [`files::write_files`] writes a
//! project, [`bench`] the benchmarks' projects, statistics and server configurations. The
//! conformance suites stay in
//! `dbt_remote_core::testing`.

pub mod bench;
pub mod files;
#[cfg(feature = "gcp")]
pub mod gcp;
pub mod server;
pub mod text;
