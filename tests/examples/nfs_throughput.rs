//! What going over NFS costs: one client writing and reading a file through nfs-ganesha
//! exports of pfnfs (direct and buffered mode) and of tmpfs, side by side on the loopback,
//! rounds interleaved so the machine's noise falls on every target alike. The figures in
//! docs/NFS.md come from this program.
//!
//! ```sh
//! cargo run --release -p pfnfs-tests --example nfs_throughput -- [MIB] [ROUNDS] [VERSION]
//! ```
//!
//! MIB is the file size (default 256), ROUNDS the rounds (default 5), VERSION `3` (default),
//! `4.0` or `4.1`. Needs root, FUSE, nfs-ganesha with its VFS FSAL and rpcbind. The client
//! is nfs-rs: writes are UNSTABLE with up to 8 in flight and a COMMIT at the end; reads go
//! through its `BufferedFile`, which keeps several READs in flight.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nfs_rs::{BufferedFile, Mount};
use pfnfs_tests::nfs::{Export, Ganesha, Rpcbind, mount, put, skip_without_ganesha};
use pfnfs_tests::{Mode, MountGuard, Tmpfs, pattern, skip_without_fuse};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `data` as `name` and reads it back; MiB/s of each.
async fn round(m: Arc<dyn Mount>, name: &str, data: &Bytes) -> (f64, f64) {
    let mib = data.len() as f64 / (1u64 << 20) as f64;
    let t = Instant::now();
    let fh = put(&*m, name, data.clone()).await;
    let write = mib / t.elapsed().as_secs_f64();
    let f = m.open_path(name, nfs_rs::OPEN_READ).await.expect("open");
    let file = BufferedFile::new(m.clone(), f.fh.clone());
    let t = Instant::now();
    let mut back = Vec::with_capacity(data.len());
    const PIECE: usize = 16 << 20;
    while back.len() < data.len() {
        let len = PIECE.min(data.len() - back.len()) as u32;
        let piece = file.read_at(back.len() as u64, len).await.expect("read");
        assert!(!piece.is_empty(), "{name}: short file");
        back.extend_from_slice(&piece);
    }
    let read = mib / t.elapsed().as_secs_f64();
    assert!(back == data[..], "{name}: read back differs");
    file.close().await.expect("close");
    let _ = fh;
    m.remove_path(name).await.expect("remove");
    (write, read)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args.first().map_or(256, |a| a.parse().expect("MIB"));
    let rounds: usize = args.get(1).map_or(5, |a| a.parse().expect("ROUNDS"));
    let version = args.get(2).cloned().unwrap_or_else(|| "3".into());
    if skip_without_fuse() || skip_without_ganesha() {
        return;
    }
    let room = (mib as u64) << 21;
    let direct = MountGuard::with_pool_size(Mode::Direct, room.max(1 << 30), &["allow_other"]);
    let buffered = MountGuard::with_pool_size(Mode::Buffered, room.max(1 << 30), &["allow_other"]);
    let tmpfs = Tmpfs::new(room);
    let targets: [(&str, &Path); 3] = [
        ("pfnfs-direct", direct.path()),
        ("pfnfs-buffered", buffered.path()),
        ("tmpfs", tmpfs.path()),
    ];
    let exports: Vec<Export> = targets
        .iter()
        .map(|(name, path)| Export {
            path: path.to_path_buf(),
            pseudo: format!("/{name}"),
            stable_handles: false,
        })
        .collect();
    let _rpcbind = Rpcbind::ensure();
    let ganesha = Ganesha::start(&exports);
    let data = Bytes::from(pattern(1, mib << 20));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut writes = vec![Vec::new(); targets.len()];
    let mut reads = vec![Vec::new(); targets.len()];
    for r in 0..rounds {
        for k in 0..targets.len() {
            // Each round starts with another target.
            let i = (r + k) % targets.len();
            let (w, rd) = rt.block_on(async {
                let m: Arc<dyn Mount> = Arc::from(mount(&ganesha.url(i, &version, 0)).await);
                let out = round(m.clone(), &format!("bench-{r}"), &data).await;
                m.umount().await.ok();
                out
            });
            eprintln!(
                "round {r} {:<15} write {w:7.1} MiB/s  read {rd:7.1} MiB/s",
                targets[i].0
            );
            writes[i].push(w);
            reads[i].push(rd);
        }
    }
    let tmpfs_w = median(&mut writes[2].clone());
    let tmpfs_r = median(&mut reads[2].clone());
    println!(
        "NFSv{version} through nfs-ganesha on the loopback, {mib} MiB file, median of {rounds} rounds"
    );
    println!("| export | write MiB/s | x tmpfs | read MiB/s | x tmpfs |");
    println!("|---|---|---|---|---|");
    for (i, (name, _)) in targets.iter().enumerate() {
        let w = median(&mut writes[i]);
        let r = median(&mut reads[i]);
        println!(
            "| {name} | {w:.0} | {:.2} | {r:.0} | {:.2} |",
            w / tmpfs_w,
            r / tmpfs_r
        );
    }
}
