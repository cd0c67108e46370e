//! dlock-consul (placeholder).
