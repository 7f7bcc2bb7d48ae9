//! redirector: sidecarless, in-kernel enforcement of Kuma's MeshTCPRoute.
//!
//! The pure pipeline (model -> resolve -> compile -> plan) lives in
//! `redirector-core`; this crate is what touches the kernel and runs:
//! [`datapath`] (load, attach, pin, write maps), [`status`] (read them back),
//! [`metrics`], [`cgroup`] discovery, and the [`agent`] that wires the
//! pipeline to the datapath as a long-lived process; and [`bench`], the
//! `redirector bench` measurement of this node (with the harness the kernel
//! tests reuse).

pub mod agent;
pub mod bench;
pub mod cgroup;
pub mod datapath;
pub mod kernel;
pub mod kubernetes;
pub mod metrics;
pub mod owner;
pub mod pods;
pub mod status;
