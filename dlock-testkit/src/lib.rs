//! dlock-testkit (placeholder).
