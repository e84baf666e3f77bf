//! (scenarios to be written)
