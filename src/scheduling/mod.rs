//! The scheduling simulation: pure functions from pending pods, existing capacity, NodePools and
//! the instance catalog to a plan of new NodeClaims. No client, no clock, no I/O.

pub mod bitset;
pub mod catalog;
pub mod inputs;
pub mod lower_bound;
pub mod overlays;
pub mod pod;
pub mod quantity;
pub mod requirements;
pub mod resources;
pub mod shapes;
pub mod solver;
pub mod static_claims;
pub mod topology;
