//! Rolling updates: the decisions about records (`records`: replacing,
//! draining, removing and restoring instances, new generations, rollbacks,
//! promotions and the kept history), pure like the rest of this crate.

pub mod records;
