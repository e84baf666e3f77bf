//! Redis backend for llmrl (in progress: see the project's issues). The fleet-wide backend
//! implements the `Backend` trait of the core crate on Redis.
