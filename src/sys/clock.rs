//! TODO(skeleton): clock
