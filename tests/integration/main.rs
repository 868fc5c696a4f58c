//! Integration tests: one test binary (one link step) with a module per area.

#[path = "../support/mod.rs"]
mod support;

mod crds;
mod examples;
mod layer_walker;
mod plan_cli;
mod registry_fixture;
mod registry_layer;
mod resolve;
