//! TODO(skeleton): uring
