//! The controllers. Each module keeps its decisions in pure functions and its I/O at the edges.

pub mod conditions;
pub mod warmpool;
