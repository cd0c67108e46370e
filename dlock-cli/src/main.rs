//! dlock command.
fn main() {}
