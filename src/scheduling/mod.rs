//! The scheduling simulation: pure functions from pending pods, existing capacity, NodePools and
//! the instance catalog to a plan of new NodeClaims. No client, no clock, no I/O.

pub mod quantity;
pub mod requirements;
pub mod resources;
