//! TODO(skeleton): eventfd
