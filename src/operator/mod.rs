//! Wiring of the long-running controller: configuration, and (as the controllers land) shared
//! reflectors, leader election, metrics and health endpoints.

pub mod settings;

pub use settings::Settings;
