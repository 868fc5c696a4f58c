//! Integration tests: one test binary (one link step) with a module per area.

#![recursion_limit = "256"]

#[path = "../support/mod.rs"]
mod support;

mod apisim;
mod crds;
mod examples;
mod registry_fixture;
