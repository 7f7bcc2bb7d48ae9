//! The pure half of redirector: from Kuma resources to the kernel's tables.
//!
//! One module per stage: [`source`] (files, read incrementally, as events) ->
//! [`store`] (every resource by kind, mesh, namespace and name) ->
//! [`model`] (read and validate Kuma resources) ->
//! [`resolve`] (which route serves which destination, for which workload
//! class) -> [`compile`] (kernel tables, diffs, and their decoding) ->
//! [`plan`] (the whole pipeline on a path or a text, and its explanation);
//! [`pipeline`] runs the same stages incrementally for the agent; [`sorted`]
//! updates their ordered maps in bulk.
//! Nothing here touches the kernel or needs the BPF toolchain; the agent in
//! the `redirector` crate writes what this computes.

pub mod compile;
pub mod filter;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod resolve;
pub mod sorted;
pub mod source;
pub mod store;
