//! Compile-fail tests: wrong usage of `#[dlock::try_lock]` gives a pointed
//! error at the offending token. Regenerate the `.stderr` snapshots after an
//! intended change with `TRYBUILD=overwrite cargo test -p dlock-macros`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/pass/*.rs");
}
