//! Holds no code: this crate exists for `tests/`, which run the agent and the manager
//! libraries together against a real `nats-server`.
