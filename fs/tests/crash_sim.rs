//! Crash consistency you can prove: every workload is crashed at its persist points (all, or
//! a seeded sample), in a clean and a torn mode, recovered, fsck'd and compared with the model
//! of what the contract allows. The harness is in `crash_common`; this file holds the
//! workloads.
//!
//! Quick (default, CI): `cargo test -p pfnfs-fs --test crash_sim` checks at most
//! `crash_common::DEFAULT_POINTS` crash points per workload and mode, seed fixed.
//!
//! Exhaustive: `PFNFS_CRASH_POINTS=all cargo test --release -p pfnfs-fs --test crash_sim`.
//! Other seeds: `PFNFS_CRASH_SEED=<n>|random` (the random mix changes with it). Only the
//! POSIX contract for data (durable at fsync, not on return): `PFNFS_CRASH_DATA=contract`.
//!
//! A failure names the workload, point, mode and seed and prints the command that replays
//! exactly that crash: `PFNFS_CRASH_SEED=.. PFNFS_REPLAY=workload:point:clean|torn:SEED cargo
//! test -p pfnfs-fs --test crash_sim replay -- --ignored --nocapture`.

mod crash_common;

use crash_common::*;
use pfnfs_alloc::CrashMode;
use pfnfs_fs::inode::Kind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TEST_FILE: &str = "crash_sim";

// =============================================================================================
// Workloads

/// Every metadata operation alone (and every kind of write), each on the standard tree.
fn single(name: &str) -> Option<Vec<Step>> {
    let chr = libc::S_IFCHR | 0o600;
    let reg = libc::S_IFREG | 0o640;
    let xchg = libc::RENAME_EXCHANGE;
    let noreplace = libc::RENAME_NOREPLACE;
    Some(match name {
        "create" => vec![create("/d1/new", 0o640)],
        "create_in_setgid_dir" => vec![create("/gdir/new", 0o644)],
        "mkdir" => vec![mkdir("/d2/newdir", 0o700)],
        "mkdir_in_setgid_dir" => vec![mkdir("/gdir/sub", 0o755)],
        "mknod_fifo" => vec![mknod("/d1/pipe", libc::S_IFIFO | 0o600, 0)],
        "mknod_chr" => vec![mknod("/d1/null", chr, 0x0103)],
        "mknod_reg" => vec![mknod("/d1/reg", reg, 0)],
        "symlink" => vec![symlink("/d2/sl", "../d1/f1")],
        "link" => vec![link("/f3", "/d2/f3link")],
        "unlink_last_link" => vec![unlink("/f3")],
        "unlink_one_of_two_links" => vec![unlink("/d1/f1")],
        "unlink_symlink" => vec![unlink("/lnk")],
        "rmdir" => vec![rmdir("/d2/empty")],
        "rename_plain" => vec![rename("/d1/f1", "/d1/f1b", 0)],
        "rename_across_dirs" => vec![rename("/f3", "/d1/f3", 0)],
        "rename_over_file" => vec![rename("/f3", "/d2/f2", 0)],
        "rename_over_hard_link" => vec![rename("/f3", "/d2/f1hard", 0)],
        "rename_onto_own_link" => vec![rename("/d1/f1", "/d2/f1hard", 0)],
        "rename_over_empty_dir" => vec![rename("/d1/sub", "/d2/empty", 0)],
        "rename_dir_across" => vec![rename("/d2/full", "/d1/full", 0)],
        "rename_noreplace" => vec![rename("/h1", "/d2/h1", noreplace)],
        "rename_exchange_files" => vec![rename("/f3", "/d2/f2", xchg)],
        "rename_exchange_file_dir_across" => vec![rename("/d1/f1", "/d2/full", xchg)],
        "rename_exchange_dirs_across" => vec![rename("/d1/sub", "/d2/full", xchg)],
        "chmod" => vec![chmod("/d1/f1", 0o600)],
        "chown" => vec![chown("/d1/f1", 1000, 1000)],
        "chown_clears_setuid" => vec![chown("/suid", 0, 0)],
        "utimes" => vec![utimes("/d1/f1")],
        "truncate_down_mid_frame" => vec![truncate(p("/f3"), 5000)],
        "truncate_down_frame_aligned" => vec![truncate(p("/f3"), 8192)],
        "truncate_to_zero" => vec![truncate(p("/f3"), 0)],
        "truncate_up" => vec![truncate(p("/d2/f2"), 30_000)],
        "truncate_by_non_owner_clears_setuid" => vec![truncate_as(p("/suid"), 1000, 1000)],
        "fallocate_extend" => vec![fallocate(p("/d2/f2"), 4096, 20_000, 0)],
        "fallocate_keep_size" => vec![fallocate(p("/d2/f2"), 0, 40_000, FALLOC_KEEP_SIZE)],
        "fallocate_punch" => vec![fallocate(
            p("/f3"),
            5000,
            30_000,
            FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE,
        )],
        "fallocate_punch_past_eof" => vec![fallocate(
            p("/d2/f2"),
            1000,
            50_000,
            FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE,
        )],
        "fallocate_zero_range" => vec![fallocate(p("/f3"), 1000, 10_000, FALLOC_ZERO_RANGE)],
        "fallocate_zero_range_keep_size" => vec![fallocate(
            p("/f3"),
            90_000,
            20_000,
            FALLOC_ZERO_RANGE | FALLOC_KEEP_SIZE,
        )],
        "fallocate_zero_range_extending" => {
            vec![fallocate(p("/d2/f2"), 3000, 20_000, FALLOC_ZERO_RANGE)]
        }
        "setxattr_new" => vec![setxattr("/d2/f2", "user.new", b"value")],
        "setxattr_replace" => vec![setxattr("/d1/f1", "user.a", b"two, longer")],
        "setxattr_on_dir" => vec![setxattr("/d1", "trusted.t", &[7u8; 300])],
        "removexattr" => vec![removexattr("/d1/f1", "user.a")],
        "write_extend_in_last_frame" => vec![write(p("/d2/f2"), 5000, 3000, 10)],
        "write_extend_new_frames" => vec![write(p("/d2/f2"), 5000, 20_000, 11)],
        "write_past_eof_leaving_hole" => vec![write(p("/d2/f2"), 50_000, 100, 12)],
        "write_into_hole" => vec![write(p("/h1"), 8000, 10_000, 13)],
        "write_into_unwritten" => vec![write(p("/falloc"), 100, 5000, 14)],
        "write_into_unwritten_past_eof" => vec![write(p("/falloc"), 9000, 3000, 15)],
        "write_overwrite" => vec![write(p("/f3"), 1000, 20_000, 16)],
        "write_overwrite_unaligned_small" => vec![write(p("/f3"), 4093, 7, 17)],
        "write_overwrite_and_extend" => vec![write(p("/f3"), 90_000, 30_000, 18)],
        "write_by_non_owner_clears_setuid" => vec![write_as(p("/suid"), 10, 100, 19, 1000)],
        // /suid also carries a file capability, which every data or size change removes
        // (before the change, in a record of its own).
        "overwrite_removes_capability" => vec![write(p("/suid"), 10, 100, 26)],
        "extending_write_by_non_owner_removes_privileges" => {
            vec![write_as(p("/suid"), 2900, 9000, 27, 1000)]
        }
        "truncate_removes_capability" => vec![truncate(p("/suid"), 1000)],
        "fallocate_removes_capability" => vec![fallocate(p("/suid"), 0, 8192, 0)],
        "punch_removes_capability" => vec![fallocate(
            p("/suid"),
            100,
            5000,
            FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE,
        )],
        "capability_set_again_then_write" => vec![
            truncate(p("/suid"), 5000),
            setxattr("/suid", "security.capability", &CAPABILITY),
            write_as(p("/suid"), 4000, 3000, 28, 1000),
        ],
        // In-place zeroing of truncate/punch must not be redone over data written after it.
        "truncate_then_extending_write" => {
            vec![
                truncate(p("/f3"), 15_294),
                write(p("/f3"), 14_445, 16_048, 21),
            ]
        }
        "truncate_down_up_then_overwrite" => vec![
            truncate(p("/f3"), 15_294),
            truncate(p("/f3"), 20_000),
            write(p("/f3"), 15_300, 100, 22),
        ],
        "punch_then_overwrite_edge" => vec![
            fallocate(p("/f3"), 5000, 30_000, FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE),
            write(p("/f3"), 6000, 1000, 23),
        ],
        "zero_range_then_overwrite" => vec![
            fallocate(p("/f3"), 1000, 10_000, FALLOC_ZERO_RANGE),
            write(p("/f3"), 1500, 500, 24),
        ],
        "shutdown" => vec![
            write(p("/f3"), 100, 5000, 25),
            create("/d1/last", 0o600),
            Step::Shutdown,
        ],
        // Inline data (files of at most 512 bytes keep them in their inode record): /d2/full/
        // inner holds 100 inline bytes, /h1 spilled into frames in the prelude.
        "write_inline_new_file" => vec![
            create("/d1/small", 0o644),
            write(p("/d1/small"), 0, 300, 50),
        ],
        "write_inline_overwrite" => vec![write(p("/d2/full/inner"), 10, 50, 51)],
        "write_inline_extend" => vec![write(p("/d2/full/inner"), 100, 400, 52)],
        "write_inline_past_eof_leaving_zeros" => vec![write(p("/d2/full/inner"), 300, 10, 53)],
        "write_spills_inline" => vec![write(p("/d2/full/inner"), 90, 5000, 54)],
        "truncate_inline_down" => vec![truncate(p("/d2/full/inner"), 40)],
        "truncate_inline_to_zero_then_write" => vec![
            truncate(p("/d2/full/inner"), 0),
            write(p("/d2/full/inner"), 0, 200, 55),
        ],
        "truncate_inline_up_within" => vec![truncate(p("/d2/full/inner"), 512)],
        "truncate_inline_past_limit" => vec![truncate(p("/d2/full/inner"), 513)],
        "fallocate_inline" => vec![fallocate(p("/d2/full/inner"), 0, 8192, 0)],
        "punch_inline" => vec![fallocate(
            p("/d2/full/inner"),
            10,
            20,
            FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE,
        )],
        "inline_grow_spill_fsync" => vec![
            open("/d2/full/inner", 1),
            write(fd(1), 100, 200, 56),
            fsync(fd(1)),
            write(fd(1), 300, 300, 57),
            fsync(fd(1)),
            close(1),
        ],
        "unlink_open_file" => vec![
            open("/f3", 1),
            unlink("/f3"),
            write(fd(1), 0, 9000, 20),
            close(1),
        ],
        _ => return None,
    })
}

/// Renames across directories over existing targets (files, hard-linked files, empty
/// directories), directories moving with their contents, and exchanges.
fn renames() -> Vec<Step> {
    vec![
        create("/d1/a", 0o644),
        write(p("/d1/a"), 0, 3000, 30),
        create("/d2/a", 0o644),
        write(p("/d2/a"), 0, 7000, 31),
        mkdir("/d1/sd", 0o755),
        create("/d1/sd/x", 0o644),
        rename("/d1/a", "/d2/a", 0),
        rename("/d2/f2", "/d1/f1", 0),
        rename("/d1/sd", "/d2/empty", 0),
        rename("/d2/full", "/d1/sub", 0),
        rename("/f3", "/d1/sub/inner", 0),
        rename("/d1/sub", "/h1", libc::RENAME_EXCHANGE),
        rename("/lnk", "/d2/empty/lnk2", 0),
        rename("/fifo", "/d1/fifo", 0),
        rename("/d2/empty", "/d1/moved", 0),
        rename("/d1/moved/x", "/d1/moved/lnk2", 0),
        rename("/d1", "/d3", 0),
        rename("/d3/moved", "/d2/moved", libc::RENAME_NOREPLACE),
        rename("/d2/a", "/h1/a", 0),
        rename("/h1", "/d2/moved", libc::RENAME_EXCHANGE),
        rename("/d2/f1hard", "/d2/moved/f1", 0),
    ]
}

/// Hard links: made, renamed onto each other, written through, removed to the last one.
fn hard_links() -> Vec<Step> {
    vec![
        link("/f3", "/d1/l1"),
        link("/f3", "/d2/l2"),
        link("/d1/l1", "/d1/l3"),
        unlink("/f3"),
        rename("/d1/l3", "/d2/l2", 0),
        write(p("/d2/l2"), 50_000, 8000, 40),
        rename("/d1/l1", "/d2/f2", 0),
        chmod("/d1/l3", 0o600),
        link("/d2/f1hard", "/d2/l4"),
        rename("/d2/l4", "/d1/l3", 0),
        unlink("/d2/l2"),
        unlink("/d1/f1"),
        truncate(p("/d2/f2"), 1000),
        unlink("/d2/f2"),
        unlink("/d1/l3"),
        unlink("/d2/f1hard"),
    ]
}

/// truncate and fallocate through several descriptors of one file (and one of another),
/// unlinking the file while it is open.
fn truncate_fallocate_fds() -> Vec<Step> {
    let punch = FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE;
    vec![
        open("/f3", 1),
        open("/f3", 2),
        open("/d2/f2", 3),
        truncate(fd(1), 5000),
        fallocate(fd(2), 0, 40_000, FALLOC_KEEP_SIZE),
        write(fd(1), 30_000, 5000, 50),
        fallocate(fd(2), 8000, 10_000, punch),
        truncate(fd(2), 70_000),
        fallocate(fd(1), 60_000, 20_000, FALLOC_ZERO_RANGE),
        fallocate(fd(3), 10_000, 8192, 0),
        write(fd(3), 12_000, 100, 51),
        fallocate(fd(3), 0, 3000, FALLOC_ZERO_RANGE | FALLOC_KEEP_SIZE),
        unlink("/f3"),
        write(fd(1), 0, 9000, 52),
        truncate(fd(2), 100),
        fallocate(fd(1), 0, 50_000, 0),
        close(1),
        fsync(fd(2)),
        close(2),
        truncate(fd(3), 1),
        close(3),
    ]
}

/// Appends of odd sizes with an fsync after every third.
fn appends_fsync() -> Vec<Step> {
    let mut steps = vec![create("/log", 0o644)];
    let mut size = 0u64;
    for i in 0..24u64 {
        let len = 700 + (i * 997) % 3000;
        steps.push(write(p("/log"), size, len as usize, 60 + i));
        size += len;
        if i % 3 == 2 {
            steps.push(fsync(p("/log")));
        }
    }
    steps
}

/// Explicit checkpoints between operations: crashes during a checkpoint and right after one.
fn checkpoints() -> Vec<Step> {
    vec![
        create("/c1", 0o644),
        write(p("/c1"), 0, 10_000, 70),
        Step::Checkpoint,
        mkdir("/cd", 0o755),
        rename("/c1", "/cd/c1", 0),
        write(p("/cd/c1"), 5000, 10_000, 71),
        unlink("/f3"),
        Step::Checkpoint,
        setxattr("/cd", "user.x", b"y"),
        truncate(p("/cd/c1"), 100),
        Step::Checkpoint,
        Step::Checkpoint,
        unlink("/cd/c1"),
        rmdir("/cd"),
    ]
}

/// Fills the log past half with large xattr records so that an automatic checkpoint happens
/// before an operation, with data writes in between.
fn log_fill() -> Vec<Step> {
    let mut steps = vec![create("/big", 0o644)];
    for i in 0..40u64 {
        steps.push(Step::SetXattr {
            path: "/big".into(),
            name: "user.big".into(),
            value: pattern(80 + i, 60_000),
        });
        if i % 8 == 7 {
            steps.push(write(p("/big"), i * 1000, 3000, 200 + i));
        }
    }
    steps.push(unlink("/d2/f2"));
    steps
}

/// A fresh filesystem: the first operations after mkfs.
fn fresh() -> Vec<Step> {
    vec![
        mkdir("/a", 0o755),
        create("/a/b", 0o644),
        write(p("/a/b"), 0, 6000, 90),
        symlink("/s", "a/b"),
        link("/a/b", "/c"),
        rename("/a", "/z", 0),
        unlink("/z/b"),
        truncate(p("/c"), 3),
    ]
}

/// Every path in the model with its inode and kind.
fn paths(m: &Model) -> Vec<(String, u64, Kind)> {
    m.view()
        .entries
        .into_iter()
        .map(|(p, e)| (String::from_utf8(p).expect("utf8"), e.ino, e.kind))
        .collect()
}

fn child(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A seeded random mix of `n` operations from `prelude`, every one valid in the state the
/// previous ones leave (generated against the model). Writes and truncations come from root
/// or from uid 1000 (which clears setuid bits).
fn random_mix(prelude: Prelude, seed: u64, n: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = template(prelude).model.clone();
    let mut fake_ino = 1_000_000u64;
    let mut steps = Vec::new();
    let mut next_fd = 1u32;
    let mut name_n = 0u32;
    while steps.len() < n {
        let all = paths(&m);
        let dirs: Vec<&(String, u64, Kind)> = all.iter().filter(|e| e.2 == Kind::Dir).collect();
        let files: Vec<&(String, u64, Kind)> = all.iter().filter(|e| e.2 == Kind::File).collect();
        let non_root: Vec<&(String, u64, Kind)> = all.iter().filter(|e| e.0 != "/").collect();
        let total: u64 = m.inodes.values().map(|i| i.content.len() as u64).sum();
        let mut fresh_name = |rng: &mut StdRng| {
            name_n += 1;
            let dir = &dirs[rng.random_range(0..dirs.len())].0;
            child(dir, &format!("n{name_n}"))
        };
        let pick_file = |rng: &mut StdRng, m: &Model| -> Option<FileRef> {
            if !m.fds.is_empty() && rng.random_bool(0.3) {
                let fds: Vec<u32> = m.fds.keys().copied().collect();
                return Some(fd(fds[rng.random_range(0..fds.len())]));
            }
            (!files.is_empty()).then(|| p(&files[rng.random_range(0..files.len())].0))
        };
        let step = match rng.random_range(0..22) {
            0 | 1 => create(&fresh_name(&mut rng), 0o644),
            2 => mkdir(&fresh_name(&mut rng), 0o755),
            3 => symlink(&fresh_name(&mut rng), "some/target"),
            4 => mknod(&fresh_name(&mut rng), libc::S_IFIFO | 0o600, 0),
            5 => {
                let others: Vec<_> = non_root.iter().filter(|e| e.2 != Kind::Dir).collect();
                if others.is_empty() {
                    continue;
                }
                let src = &others[rng.random_range(0..others.len())].0;
                link(src, &fresh_name(&mut rng))
            }
            6 => {
                let others: Vec<_> = non_root.iter().filter(|e| e.2 != Kind::Dir).collect();
                if others.is_empty() {
                    continue;
                }
                unlink(&others[rng.random_range(0..others.len())].0)
            }
            7 => {
                let empty: Vec<_> = non_root
                    .iter()
                    .filter(|e| e.2 == Kind::Dir && m.inodes[&e.1].entries.is_empty())
                    .collect();
                if empty.is_empty() {
                    continue;
                }
                rmdir(&empty[rng.random_range(0..empty.len())].0)
            }
            8 | 9 => {
                if non_root.is_empty() {
                    continue;
                }
                let (src, s_ino, s_kind) = non_root[rng.random_range(0..non_root.len())].clone();
                let exchange = rng.random_bool(0.2);
                let replace = exchange || rng.random_bool(0.4);
                let (dst, d_ino) = if replace {
                    let (d, i, _) = non_root[rng.random_range(0..non_root.len())].clone();
                    (d, Some(i))
                } else {
                    (fresh_name(&mut rng), None)
                };
                if dst == src {
                    continue;
                }
                let sp = m.resolve(split_dir(&src)).unwrap();
                let dp = m.resolve(split_dir(&dst)).unwrap();
                if m.is_ancestor(s_ino, dp) {
                    continue;
                }
                if let Some(d) = d_ino {
                    let d_kind = m.inodes[&d].kind;
                    if exchange {
                        if m.is_ancestor(d, sp) {
                            continue;
                        }
                    } else if (s_kind == Kind::Dir) != (d_kind == Kind::Dir)
                        || (d_kind == Kind::Dir && !m.inodes[&d].entries.is_empty())
                    {
                        continue;
                    }
                }
                let flags = if exchange { libc::RENAME_EXCHANGE } else { 0 };
                rename(&src, &dst, flags)
            }
            10..=12 => {
                if total > 3 << 20 {
                    continue;
                }
                let Some(f) = pick_file(&mut rng, &m) else {
                    continue;
                };
                let size = m.inodes[&resolve_ref(&m, &f)].content.len() as u64;
                let offset = rng.random_range(0..=size + 8192).min(200_000);
                let len = rng.random_range(1..=16_384);
                let uid = if rng.random_bool(0.2) { 1000 } else { 0 };
                write_as(f, offset, len, rng.random(), uid)
            }
            13 => {
                let Some(f) = pick_file(&mut rng, &m) else {
                    continue;
                };
                let uid = if rng.random_bool(0.2) { 1000 } else { 0 };
                truncate_as(f, rng.random_range(0..=120_000), uid)
            }
            14 | 15 => {
                let Some(f) = pick_file(&mut rng, &m) else {
                    continue;
                };
                let modes = [
                    0,
                    FALLOC_KEEP_SIZE,
                    FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE,
                    FALLOC_ZERO_RANGE,
                    FALLOC_ZERO_RANGE | FALLOC_KEEP_SIZE,
                ];
                let mode = modes[rng.random_range(0..modes.len())];
                fallocate(
                    f,
                    rng.random_range(0..=100_000),
                    rng.random_range(1..=30_000),
                    mode,
                )
            }
            16 => {
                let (path, _, _) = &all[rng.random_range(0..all.len())];
                match rng.random_range(0..3) {
                    0 => chmod(path, rng.random_range(0..0o10000)),
                    1 => chown(
                        path,
                        rng.random_range(0..3) * 500,
                        rng.random_range(0..3) * 500,
                    ),
                    _ => utimes(path),
                }
            }
            17 => {
                let (path, ino, _) = &all[rng.random_range(0..all.len())];
                let names: Vec<Vec<u8>> = m.inodes[ino].xattrs.keys().cloned().collect();
                if !names.is_empty() && rng.random_bool(0.4) {
                    let name = &names[rng.random_range(0..names.len())];
                    removexattr(path, std::str::from_utf8(name).unwrap())
                } else {
                    let name = format!("user.x{}", rng.random_range(0..4));
                    let value = pattern(rng.random(), rng.random_range(0..2000));
                    Step::SetXattr {
                        path: path.clone(),
                        name,
                        value,
                    }
                }
            }
            18 => {
                let Some(f) = pick_file(&mut rng, &m) else {
                    continue;
                };
                fsync(f)
            }
            19 => {
                if m.fds.len() >= 3 || files.is_empty() {
                    continue;
                }
                next_fd += 1;
                open(&files[rng.random_range(0..files.len())].0, next_fd)
            }
            20 => {
                let fds: Vec<u32> = m.fds.keys().copied().collect();
                if fds.is_empty() {
                    continue;
                }
                close(fds[rng.random_range(0..fds.len())])
            }
            _ => {
                if rng.random_bool(0.3) {
                    Step::Checkpoint
                } else {
                    continue;
                }
            }
        };
        let created = match &step {
            Step::Create { .. }
            | Step::Mkdir { .. }
            | Step::Symlink { .. }
            | Step::Mknod { .. } => {
                fake_ino += 1;
                Some(fake_ino)
            }
            _ => None,
        };
        m.apply(&step, created);
        steps.push(step);
    }
    // Close what is still open, so the last steps also release unlinked inodes.
    for n in m.fds.keys().copied().collect::<Vec<_>>() {
        steps.push(close(n));
    }
    steps
}

fn split_dir(path: &str) -> &str {
    let i = path.rfind('/').unwrap();
    if i == 0 { "/" } else { &path[..i] }
}

fn resolve_ref(m: &Model, f: &FileRef) -> u64 {
    match f {
        FileRef::Path(path) => m.resolve(path).unwrap(),
        FileRef::Fd(n) => m.fds[n],
    }
}

/// Every scenario by name.
fn scenario(name: &str, cfg: &Config) -> Option<Scenario> {
    if let Some(steps) = single(name) {
        return Some(Scenario::new(name, Prelude::Standard, steps));
    }
    let std = Prelude::Standard;
    Some(match name {
        "renames" => Scenario::new(name, std, renames()),
        "hard_links" => Scenario::new(name, std, hard_links()),
        "truncate_fallocate_fds" => Scenario::new(name, std, truncate_fallocate_fds()),
        "appends_fsync" => Scenario::new(name, std, appends_fsync()),
        "checkpoints" => Scenario::new(name, std, checkpoints()).keep_checkpoint_points(),
        "log_fill" => Scenario::new(name, std, log_fill())
            .keep_checkpoint_points()
            .sample_at_most(6),
        "fresh" => Scenario::new(name, Prelude::Empty, fresh()),
        "random_mix" => Scenario::new(
            name,
            std,
            random_mix(std, derive_seed(cfg.seed, name, 0), 80),
        ),
        "random_mix_long" => Scenario::new(
            name,
            std,
            random_mix(std, derive_seed(cfg.seed, name, 0), 300),
        ),
        "random_mix_fresh" => Scenario::new(
            name,
            Prelude::Empty,
            random_mix(Prelude::Empty, derive_seed(cfg.seed, name, 0), 120),
        ),
        _ => return None,
    })
}

fn check(name: &str) -> Totals {
    let cfg = Config::from_env();
    let scn = scenario(name, &cfg).unwrap_or_else(|| panic!("no scenario {name}"));
    check_scenario(&scn, &cfg, TEST_FILE)
}

/// Checks a scenario at every crash point.
fn check_strict(name: &str) -> Totals {
    let mut cfg = Config::from_env();
    cfg.max_points = None;
    let scn = scenario(name, &cfg).unwrap_or_else(|| panic!("no scenario {name}"));
    check_scenario(&scn, &cfg, TEST_FILE)
}

/// Replays exactly one crash: `PFNFS_REPLAY=workload:point:clean|torn:SEED` (with the
/// `PFNFS_CRASH_SEED` the failing run printed).
pub fn replay(workload: &str, point: u64, mode: CrashMode) -> Result<(), String> {
    let cfg = Config::from_env();
    let scn = scenario(workload, &cfg).unwrap_or_else(|| panic!("no scenario {workload}"));
    let case = CrashCase {
        scenario: workload.into(),
        point,
        mode,
    };
    check_case(&scn, &case, &cfg)
}

#[test]
#[ignore = "replays the crash named by PFNFS_REPLAY"]
fn replay_from_env() {
    let spec = std::env::var("PFNFS_REPLAY").expect("PFNFS_REPLAY=workload:point:mode");
    let case = parse_case(&spec);
    if std::env::var_os("PFNFS_REPLAY_STEPS").is_some() {
        let cfg = Config::from_env();
        let scn = scenario(&case.scenario, &cfg).expect("scenario");
        let counted = run(&scn, None, false).expect("run");
        for (i, step) in scn.steps.iter().enumerate() {
            let (a, b) = counted.step_points[i];
            eprintln!("step {i:3} persist points {:3}..={b:<3} {step:?}", a + 1);
        }
    }
    match replay(&case.scenario, case.point, case.mode) {
        Ok(()) => eprintln!("{case}: the recovered state is allowed"),
        Err(e) => panic!("{case}: {e}"),
    }
}

// =============================================================================================
// Tests

macro_rules! crash_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
    };
}

mod single_op {
    use super::check;
    crash_tests!(
        create,
        create_in_setgid_dir,
        mkdir,
        mkdir_in_setgid_dir,
        mknod_fifo,
        mknod_chr,
        mknod_reg,
        symlink,
        link,
        unlink_last_link,
        unlink_one_of_two_links,
        unlink_symlink,
        rmdir,
        rename_plain,
        rename_across_dirs,
        rename_over_file,
        rename_over_hard_link,
        rename_onto_own_link,
        rename_over_empty_dir,
        rename_dir_across,
        rename_noreplace,
        rename_exchange_files,
        rename_exchange_file_dir_across,
        rename_exchange_dirs_across,
        chmod,
        chown,
        chown_clears_setuid,
        utimes,
        truncate_down_mid_frame,
        truncate_down_frame_aligned,
        truncate_to_zero,
        truncate_up,
        truncate_by_non_owner_clears_setuid,
        fallocate_extend,
        fallocate_keep_size,
        fallocate_punch,
        fallocate_punch_past_eof,
        fallocate_zero_range,
        fallocate_zero_range_keep_size,
        fallocate_zero_range_extending,
        setxattr_new,
        setxattr_replace,
        setxattr_on_dir,
        removexattr,
        write_extend_in_last_frame,
        write_extend_new_frames,
        write_past_eof_leaving_hole,
        write_into_hole,
        write_into_unwritten,
        write_into_unwritten_past_eof,
        write_overwrite,
        write_overwrite_unaligned_small,
        write_overwrite_and_extend,
        write_by_non_owner_clears_setuid,
        overwrite_removes_capability,
        extending_write_by_non_owner_removes_privileges,
        truncate_removes_capability,
        fallocate_removes_capability,
        punch_removes_capability,
        capability_set_again_then_write,
        truncate_then_extending_write,
        truncate_down_up_then_overwrite,
        punch_then_overwrite_edge,
        zero_range_then_overwrite,
        shutdown,
        write_inline_new_file,
        write_inline_overwrite,
        write_inline_extend,
        write_inline_past_eof_leaving_zeros,
        write_spills_inline,
        truncate_inline_down,
        truncate_inline_to_zero_then_write,
        truncate_inline_up_within,
        truncate_inline_past_limit,
        fallocate_inline,
        punch_inline,
        inline_grow_spill_fsync,
        unlink_open_file,
    );
}

mod workload {
    use super::check;
    crash_tests!(
        renames,
        hard_links,
        truncate_fallocate_fds,
        appends_fsync,
        fresh,
        random_mix,
        random_mix_long,
        random_mix_fresh,
    );

    #[test]
    fn checkpoints() {
        assert_eq!(check("checkpoints").checkpoints, 4);
    }

    #[test]
    fn log_fill() {
        let totals = check("log_fill");
        assert!(
            totals.checkpoints >= 1,
            "the log never passed half full: no automatic checkpoint"
        );
    }
}

/// The bugs this suite found in fs/ (all fixed), each as the smallest workload that showed
/// it, checked strictly: regression tests.
mod bugs {
    use super::check_strict;

    /// fallocate(ZERO_RANGE) past EOF once logged Punch and Allocate as two records; now one
    /// ZeroRange record.
    #[test]
    fn zero_range_extending_is_atomic() {
        check_strict("fallocate_zero_range_extending");
    }

    /// setattr(size) by a non-root caller once logged Truncate and the setuid-clearing
    /// SetAttr as two records; the Truncate record now carries the mode.
    #[test]
    fn truncate_clearing_setuid_is_atomic() {
        check_strict("truncate_by_non_owner_clears_setuid");
    }

    /// An extending write whose record is lost left its bytes past EOF in the old last frame;
    /// recovery of an uncleanly unmounted pool now zeroes every last frame past EOF.
    #[test]
    fn no_data_past_eof_after_a_crash() {
        check_strict("write_extend_in_last_frame");
    }
}

/// The harness checks itself: the model comparison is not vacuous, and a durability bug
/// injected below the filesystem is caught.
mod harness {
    use std::sync::Arc;

    use super::*;
    use pfnfs_alloc::layout::{LOG_FRAMES_MIN, LOG_START_PFN};
    use pfnfs_alloc::{CrashSimBackend, FRAME_SIZE, PoolBackend};

    #[test]
    fn content_slack_accepts_old_or_new_words_only() {
        let old = pattern(1, 40);
        let new = pattern(2, 40);
        let mut slack = Slack::new();
        let alts = slack.entry(7).or_default();
        for w in 0..5 {
            alts.insert(w, vec![word(&old.0, w)]);
        }
        let view = |c: &Bytes| {
            let mut v = View::default();
            v.entries.insert(
                b"/f".to_vec(),
                VEntry {
                    ino: 7,
                    kind: Kind::File,
                    mode: 0o100644,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    nlink: 1,
                    size: c.len() as u64,
                    dotdot: None,
                    target: None,
                    xattrs: Vec::new(),
                    content: Some(c.clone()),
                },
            );
            v
        };
        let mut mixed = new.0.as_ref().clone();
        mixed[8..16].copy_from_slice(&old.0[8..16]);
        mixed[32..40].copy_from_slice(&old.0[32..40]);
        assert!(diff(&view(&Bytes::new(mixed.clone())), &view(&new), &slack).is_empty());
        // A word torn inside (half old, half new) is neither.
        mixed[20..24].copy_from_slice(&old.0[20..24]);
        let d = diff(&view(&Bytes::new(mixed)), &view(&new), &slack);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("@16"), "{d:?}");
        // Without slack, any old word is a difference.
        assert!(!diff(&view(&old), &view(&new), &Slack::new()).is_empty());
    }

    #[test]
    fn a_missing_step_is_a_difference() {
        let cfg = Config::from_env();
        let scn = scenario("link", &cfg).unwrap();
        let r = run(&scn, None, true).unwrap();
        assert_eq!(r.points, 1);
        assert_eq!(r.step_points, vec![(0, 1)]);
        let d = diff(
            &r.after.view(),
            &template(Prelude::Standard).model.view(),
            &Slack::new(),
        );
        assert_eq!(d.len(), 2, "the new name, and the link count: {d:?}");
    }

    /// A backend whose flushes of the log region do nothing: records never become durable.
    #[derive(Debug)]
    struct LogNeverFlushed(Arc<CrashSimBackend>);

    impl PoolBackend for LogNeverFlushed {
        fn len_bytes(&self) -> u64 {
            self.0.len_bytes()
        }
        fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), pfnfs_alloc::MediaError> {
            self.0.read_into(offset, buf)
        }
        unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
            // SAFETY: the same contract, passed on.
            unsafe { self.0.borrow(offset, len) }
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), pfnfs_alloc::MediaError> {
            self.0.write(offset, data)
        }
        fn zero(&self, offset: u64, len: u64) -> Result<(), pfnfs_alloc::MediaError> {
            self.0.zero(offset, len)
        }
        fn flush(&self, offset: u64, len: u64) -> Result<(), pfnfs_alloc::MediaError> {
            let log = LOG_START_PFN * FRAME_SIZE..(LOG_START_PFN + LOG_FRAMES_MIN) * FRAME_SIZE;
            if log.contains(&offset) {
                return Ok(());
            }
            self.0.flush(offset, len)
        }
        fn fence(&self) -> std::io::Result<()> {
            self.0.fence()
        }
        fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
            self.0.sync(offset, len)
        }
    }

    #[test]
    fn an_unpersisted_log_record_is_caught() {
        let cfg = Config::from_env();
        let scn = scenario("rename_across_dirs", &cfg).unwrap();
        let case = CrashCase {
            scenario: scn.name.clone(),
            point: 2,
            mode: pfnfs_alloc::CrashMode::Clean,
        };
        assert_eq!(check_case(&scn, &case, &cfg), Ok(()));
        let wrap: Wrap = |sim| Box::new(LogNeverFlushed(sim));
        let err = check_case_with(&scn, &case, &cfg, Some(wrap)).unwrap_err();
        assert!(err.contains("neither allowed state"), "{err}");
        assert!(err.contains("/d1/f3: missing"), "{err}");
    }
}

/// Crashes before a filesystem exists: during mkfs and during the first mount.
mod lifecycle {
    use std::sync::Arc;

    use pfnfs_alloc::{CrashMode, CrashSimBackend, MemBackend, Pool, PoolBackend, PoolError};
    use pfnfs_fs::inode::ROOT_INO;
    use pfnfs_fs::volume::Volume;

    use super::crash_common::{POOL_BYTES, check_ownership, view_of};

    /// mkfs, then the first mount (which writes the first checkpoint), crashed at every
    /// persist point of both in both modes: the pool is either not a pool yet (mkfs must be
    /// rerun) or opens and mounts as an empty filesystem.
    #[test]
    fn mkfs_and_first_mount_survive_crashes() {
        let count = {
            let b = Arc::new(CrashSimBackend::new(POOL_BYTES));
            let pool = Pool::format_backend("sim", Box::new(b.clone())).unwrap();
            let mkfs = b.persist_points();
            drop(Volume::load(Arc::new(pool)).unwrap());
            (mkfs, b.persist_points())
        };
        let (mkfs_points, total) = count;
        assert!(mkfs_points >= 2 && total > mkfs_points, "{count:?}");
        let mut opened = 0;
        for point in 1..=total + 1 {
            for mode in [CrashMode::Clean, CrashMode::Torn { seed: point }] {
                let b = Arc::new(CrashSimBackend::new(POOL_BYTES));
                b.arm_crash(point, mode);
                let pool = Pool::format_backend("sim", Box::new(b.clone())).unwrap();
                drop(Volume::load(Arc::new(pool)).unwrap());
                b.crash_now(mode);
                let mem = MemBackend::new(POOL_BYTES);
                b.for_each_durable_page(|offset, page| mem.write(offset, page).unwrap());
                let ctx = format!("point {point} of {total} (mkfs: 1..={mkfs_points}), {mode}");
                let pool = match Pool::open_backend("crashed", Box::new(mem), false) {
                    Ok(pool) => pool,
                    Err(PoolError::NotAPool { .. } | PoolError::SuperblockDamaged { .. })
                        if point <= mkfs_points =>
                    {
                        continue;
                    }
                    Err(e) => panic!("{ctx}: the pool does not open: {e}"),
                };
                opened += 1;
                let vol = Volume::load(Arc::new(pool))
                    .unwrap_or_else(|e| panic!("{ctx}: mount failed: {e:?}"));
                let report = pfnfs_fs::fsck::check_volume(&vol);
                assert!(report.problems.is_empty(), "{ctx}: {:?}", report.problems);
                vol.allocator().check_consistency().unwrap();
                check_ownership(&vol).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let view = view_of(&vol).unwrap();
                assert_eq!(view.inodes(), [ROOT_INO].into(), "{ctx}");
                assert_eq!(view.entries[&b"/".to_vec()].nlink, 2, "{ctx}");
            }
        }
        assert!(opened > 0);
    }
}
