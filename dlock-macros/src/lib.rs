//! dlock-macros (placeholder).
