//! redirector: sidecarless, in-kernel enforcement of Kuma's MeshTCPRoute.
//!
//! The pipeline, one module per stage:
//! [`model`] (read and validate Kuma resources) -> [`resolve`] (which route
//! serves which destination) -> [`compile`] (kernel tables and diffs) ->
//! [`datapath`] (load, attach, pin, write maps). Everything before `datapath`
//! is pure. [`agent`] runs the pipeline as a long-lived process.

pub mod agent;
pub mod cgroup;
pub mod compile;
pub mod datapath;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod resolve;
pub mod status;
