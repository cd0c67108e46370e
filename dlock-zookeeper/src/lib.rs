//! dlock-zookeeper (placeholder).
