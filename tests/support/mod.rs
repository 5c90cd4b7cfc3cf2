//! Helpers shared by integration tests.

pub mod chaos;
pub mod e2e;
pub mod hostile;
pub mod lagging;
pub mod operator;
pub mod sim;
