//! TODO(skeleton): socket
