//! Test harnesses of the dbt-remote workspace (a dev-dependency of its crates; not published):
//! [`server::RealServer`] starts the real `dbt-server` binary with its documented command line
//! on a free port of 127.0.0.1, [`gcp::Emulators`] (feature `gcp`) the Firestore and Cloud
//! Storage emulators. The conformance suites stay in `dbt_remote_core::testing`.

#[cfg(feature = "gcp")]
pub mod gcp;
pub mod server;
