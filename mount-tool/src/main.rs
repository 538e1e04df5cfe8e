//! The `pfnfs` command. TODO(helper).
fn main() {}
