//! Groups of green threads (placeholder; implemented in the runtime issue).

/// Placeholder.
pub struct Group;
/// Placeholder.
pub struct GreenPool;
