//! Pipeline logic shared by the controllers and the command line: input resolution, the akmods
//! cache decision, candidate verification and promotion steps. Pure decisions live here; all
//! registry I/O goes through [`crate::registry`].

pub mod cache;
pub mod hashing;
pub mod kernels;
pub mod layers;
pub mod lock;
pub mod promote;
pub mod provenance;
pub mod records;
pub mod resolve;
pub mod scan_memory;
pub mod schedule;
pub mod tags;
pub mod targets;
pub mod verify;
