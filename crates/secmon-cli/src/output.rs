//! Table and JSON output helpers (being written).
