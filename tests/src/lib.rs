//! Test support: mounting a pool under a temp dir with a guard that always unmounts.
