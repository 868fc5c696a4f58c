//! Integration tests: one test binary (one link step) with a module per area.

#![recursion_limit = "256"]

#[path = "../support/mod.rs"]
mod support;

mod apisim;
mod builder;
mod cache_check;
mod controller;
mod crds;
mod examples;
mod hostile_input;
mod layer_walker;
mod plan_cli;
mod promote;
mod promotion_controller;
mod registry_fixture;
mod registry_layer;
mod resolve;
mod scan_cache;
mod signing;
mod verify;
