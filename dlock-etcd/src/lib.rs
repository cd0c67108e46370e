//! dlock-etcd (placeholder).
