//! The credential ("SSO token") pool: selection, health (cooldown, failures, expiry), admin edits and batched
//! persistence.
//!
//! The request path reads an `ArcSwap` snapshot of the pool and touches only per-token atomics, so picking a
//! token takes no lock. Edits from the admin API build a new snapshot under a mutex that requests never take.

mod pool;

pub use pool::{Outcome, Token, TokenKind, TokenLease, TokenPool, TokenStatus};
