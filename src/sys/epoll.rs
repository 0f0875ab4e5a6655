//! TODO(skeleton): epoll
