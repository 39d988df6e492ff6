//! HTTP client for the manager API (being written).
