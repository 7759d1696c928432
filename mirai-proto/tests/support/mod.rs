//! Test support shared by this crate's tests (and, by path, mirai-core's fuzz target).
pub mod fuzz;
