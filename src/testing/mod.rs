//! Fault-injection kit (placeholder; being written).
