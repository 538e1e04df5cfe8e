//! Storage taken away under a mounted pool, both modes: the pool file is truncated into the
//! middle of a file's frames while mounted (every access to a page past the new end raises
//! SIGBUS in the daemon). Reading that part of the file gives EIO, at once again on a second
//! try, and writing it fails; every other file keeps working and the daemon stays up. The pool
//! file is then given its length back (the lost pages read zeros, as a replaced blank medium
//! would), the unmount is clean, `fsck -n` reports the file on bad frames (exit 4), `fsck -y`
//! detaches them, the pool mounts and checks clean, the file reads zeros where the frame was,
//! and filling the pool never puts data on the bad frame again. Before the SIGBUS handler,
//! the first read killed the daemon.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use pfnfs_tests::sys::errno;
use pfnfs_tests::{Mode, MountGuard, pattern, pfnfs_on, read_all, skip_without_fuse};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const PAGE: usize = 4 * KIB;

/// Drops the kernel's clean cached pages of the file (buffered mode would otherwise answer
/// reads from its page cache without asking the daemon).
fn drop_cached(path: &Path) {
    let f = File::open(path).unwrap();
    // SAFETY: a plain system call on an open descriptor; no memory is passed.
    let rc = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0, "posix_fadvise");
}

fn read_at(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    File::open(path)?.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn run(mode: Mode) {
    if skip_without_fuse() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pfnfs-bad-media-")
        .tempdir()
        .unwrap();
    let pool = dir.path().join("test.pool");
    let out = pfnfs_on(&["mkfs", "--size", "64M"], &pool);
    assert!(out.status.success(), "{out:?}");
    let pool_len = fs::metadata(&pool).unwrap().len();

    let mut g = MountGuard::try_existing(&pool, mode, None).expect("mount");
    let good = pattern(1, MIB);
    let victim = pattern(2, 4 * MIB);
    // A MiB at a time, each made durable before the next: in buffered mode the kernel's
    // write-back of a larger write may take the pages in any order, and the frames follow.
    for (name, data) in [("good", &good), ("victim", &victim)] {
        let mut f = File::create(g.join(name)).unwrap();
        for chunk in data.chunks(MIB) {
            f.write_all(chunk).unwrap();
            f.sync_all().unwrap();
        }
    }
    // The cut: the lowest pool page of the victim's last 3 MiB that lies above every page of
    // the good file and of the victim's first MiB (write-back may place pages out of order).
    let image = fs::read(&pool).unwrap();
    let at_of: HashMap<&[u8], usize> = image
        .chunks_exact(PAGE)
        .enumerate()
        .map(|(i, p)| (p, i * PAGE))
        .collect();
    let pages = |data: &[u8]| -> Vec<usize> {
        data.chunks_exact(PAGE)
            .map(|p| {
                *at_of
                    .get(p)
                    .expect("every page of the files is in the pool")
            })
            .collect()
    };
    let keep = pages(&good)
        .into_iter()
        .chain(pages(&victim[..MIB]))
        .max()
        .unwrap();
    let (lost, lost_at) = pages(&victim[MIB..])
        .into_iter()
        .enumerate()
        .map(|(i, at)| (at, (MIB + i * PAGE) as u64))
        .filter(|&(at, _)| at > keep)
        .min()
        .expect("a page of the victim above the pages kept");
    drop(at_of);
    drop(image);

    // Storage taken away: everything from that page on.
    OpenOptions::new()
        .write(true)
        .open(&pool)
        .unwrap()
        .set_len(lost as u64)
        .unwrap();
    drop_cached(&g.join("victim"));
    for attempt in ["first", "second"] {
        let e = read_at(&g.join("victim"), lost_at, PAGE)
            .expect_err("a read of lost storage succeeded");
        assert_eq!(errno(&e), libc::EIO, "{attempt} read of lost storage: {e}");
    }
    // Writing over the bad frame fails (at the write in direct mode, at fsync in buffered).
    let f = OpenOptions::new()
        .write(true)
        .open(g.join("victim"))
        .unwrap();
    let wrote = f
        .write_all_at(&[7u8; PAGE], lost_at)
        .and_then(|()| f.sync_all());
    let e = wrote.expect_err("a write onto a bad frame succeeded");
    assert_eq!(errno(&e), libc::EIO, "write onto a bad frame: {e}");
    drop(f);
    // The part before the cut and every other file still work; so do new files.
    assert_eq!(read_at(&g.join("victim"), 0, MIB).unwrap(), &victim[..MIB]);
    drop_cached(&g.join("good"));
    assert_eq!(read_all(&g.join("good")), good);
    let small = pattern(3, 64 * KIB);
    fs::write(g.join("small"), &small).unwrap();
    File::open(g.join("small")).unwrap().sync_all().unwrap();
    assert_eq!(read_all(&g.join("small")), small);

    // The medium comes back blank (the pages past the cut read zeros) and the pool is
    // unmounted cleanly: the bad frame is on the pool's bad-frame list.
    OpenOptions::new()
        .write(true)
        .open(&pool)
        .unwrap()
        .set_len(pool_len)
        .unwrap();
    g.unmount().expect("the daemon exits cleanly");
    drop(g);
    // `pfnfs stat` lists the frames met: the lost page's (a direct read meets exactly it;
    // buffered reads ahead, and may meet other pages past the cut as well).
    let out = pfnfs_on(&["stat", "--json"], &pool);
    assert!(out.status.success(), "pfnfs stat: {out:?}");
    let stat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bad: Vec<(usize, usize)> = stat["bad_frames"]
        .as_array()
        .expect("bad_frames in pfnfs stat --json")
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap() as usize,
                r[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert!(!bad.is_empty(), "no bad frame listed: {stat}");
    assert!(
        bad.iter().all(|&(start, _)| start * PAGE >= lost),
        "a bad frame before the cut: {bad:?}"
    );
    if mode == Mode::Direct {
        assert_eq!(
            bad,
            vec![(lost / PAGE, 1)],
            "direct mode meets the one page read"
        );
    }
    let text = pfnfs_on(&["stat"], &pool);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("(memory failed there; never used again)"),
        "{text:?}"
    );

    let out = pfnfs_on(&["fsck", "-n"], &pool);
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "fsck -n: {report}");
    assert!(report.contains("bad-frames"), "fsck -n: {report}");
    let out = pfnfs_on(&["fsck", "-y"], &pool);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "fsck -y: {out:?}"
    );
    let out = pfnfs_on(&["fsck", "-n"], &pool);
    assert!(out.status.success(), "fsck -n after -y: {out:?}");

    let mut g = MountGuard::try_existing(&pool, mode, None).expect("remount");
    let back = read_all(&g.join("victim"));
    assert_eq!(back.len(), victim.len());
    assert_eq!(&back[..MIB], &victim[..MIB], "the victim before the cut");
    assert!(
        back[lost_at as usize..lost_at as usize + PAGE]
            .iter()
            .all(|&b| b == 0),
        "the detached frame reads as a hole"
    );
    assert_eq!(read_all(&g.join("good")), good);
    assert_eq!(read_all(&g.join("small")), small);
    // Fill the pool: nothing lands on the bad frame.
    let fill = pattern(4, 128 * MIB);
    let mut f = File::create(g.join("fill")).unwrap();
    let mut written = 0;
    for chunk in fill.chunks(MIB) {
        if f.write_all(chunk).and_then(|()| f.sync_data()).is_err() {
            break;
        }
        written += chunk.len();
    }
    assert!(written >= 16 * MIB, "only {} MiB fit", written / MIB);
    drop(f);
    g.unmount().expect("clean unmount after the refill");
    drop(g);
    let image = fs::read(&pool).unwrap();
    for &(start, frames) in &bad {
        assert!(
            image[start * PAGE..(start + frames) * PAGE]
                .iter()
                .all(|&b| b == 0),
            "bad frames {start}+{frames} were used again"
        );
    }
    let out = pfnfs_on(&["fsck", "-n"], &pool);
    assert!(out.status.success(), "fsck -n at the end: {out:?}");
}

#[test]
fn lost_storage_is_eio_and_never_reused_direct() {
    run(Mode::Direct);
}

#[test]
fn lost_storage_is_eio_and_never_reused_buffered() {
    run(Mode::Buffered);
}
