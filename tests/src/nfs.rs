//! NFS export through nfs-ganesha, for the export test and the NFS throughput example:
//! ganesha (and rpcbind if none runs) as children of the caller, on ports of their own, and
//! the few client calls both need (nfs-rs, a userspace NFS client: this kernel has none).
//!
//! The configuration written is docs/NFS.md's, with the test's ports and recovery
//! directory, and without a grace period (there is no client state to reclaim). Only
//! processes a guard started are ended, by PID.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use nfs_rs::{Mount, NfsError};

use crate::send_signal;

/// The switch that lets the NFS tests pass as skipped where nfs-ganesha is not installed.
pub const SKIP_SWITCH: &str = "PFNFS_SKIP_WITHOUT_GANESHA";

/// Why ganesha cannot run here, if it cannot.
pub fn ganesha_missing() -> Option<String> {
    let installed = |bin: &str| {
        ["/usr/bin", "/usr/sbin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(bin).is_file())
    };
    if !installed("ganesha.nfsd") || !installed("rpcbind") || vfs_fsal().is_none() {
        return Some(
            "nfs-ganesha with its VFS FSAL and rpcbind are not installed \
             (apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind)"
                .into(),
        );
    }
    None
}

/// Where ganesha's VFS FSAL is, if installed.
fn vfs_fsal() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/ganesha",
        "/usr/lib/ganesha",
        "/usr/lib64/ganesha",
    ]
    .iter()
    .map(|d| Path::new(d).join("libfsalvfs.so"))
    .find(|p| p.is_file())
}

/// Whether an NFS test must be skipped: false where ganesha is installed; where it is not,
/// true (after printing why) if `PFNFS_SKIP_WITHOUT_GANESHA=1`, else a panic saying why.
pub fn skip_without_ganesha() -> bool {
    crate::skip_if_missing(ganesha_missing(), SKIP_SWITCH, "the NFS export tests")
}

/// A free TCP port on the loopback (taken again by ganesha a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// SIGTERM to our child, then SIGKILL if it has not exited within 30 s.
fn stop_child(child: &mut Child, what: &str) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    send_signal(child.id() as i32, "TERM");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{what} {} ignored SIGTERM; killing it", child.id());
    let _ = child.kill();
    let _ = child.wait();
}

/// rpcbind, which ganesha needs to register NFSv3: the one already running, or one this
/// guard started and stops.
pub struct Rpcbind {
    child: Option<Child>,
}

impl Rpcbind {
    fn running() -> bool {
        TcpStream::connect(("127.0.0.1", 111)).is_ok()
    }

    /// Makes sure an rpcbind answers on the loopback.
    pub fn ensure() -> Rpcbind {
        if Rpcbind::running() {
            return Rpcbind { child: None };
        }
        let child = Command::new("rpcbind")
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rpcbind");
        let rpcbind = Rpcbind { child: Some(child) };
        let start = Instant::now();
        while !Rpcbind::running() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "rpcbind does not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rpcbind
    }
}

impl Drop for Rpcbind {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            stop_child(child, "rpcbind");
        }
    }
}

/// One exported directory.
#[derive(Clone, Debug)]
pub struct Export {
    /// The directory (a mount point).
    pub path: PathBuf,
    /// Its NFSv4 pseudo path, such as `/pfnfs`.
    pub pseudo: String,
    /// `fsid_type = Major64`: handles that name no device number, so that they survive a
    /// remount of a FUSE filesystem (docs/NFS.md). At most one export of a server may
    /// have it among the filesystems whose device major is 0 (FUSE, tmpfs).
    pub stable_handles: bool,
}

/// nfs-ganesha serving `exports`, in the foreground as this guard's child.
pub struct Ganesha {
    dir: tempfile::TempDir,
    exports: Vec<Export>,
    nfs_port: u16,
    mnt_port: u16,
    child: Option<Child>,
}

impl Ganesha {
    /// Writes the configuration and starts serving; panics with ganesha's log if it does not.
    pub fn start(exports: &[Export]) -> Ganesha {
        let dir = tempfile::Builder::new()
            .prefix("pfnfs-ganesha-")
            .tempdir()
            .expect("tempdir");
        let mut g = Ganesha {
            nfs_port: free_port(),
            mnt_port: free_port(),
            exports: exports.to_vec(),
            dir,
            child: None,
        };
        std::fs::write(g.dir.path().join("ganesha.conf"), g.config()).expect("write config");
        g.run();
        g
    }

    /// Starts ganesha again after [`Ganesha::stop`], with the same configuration and ports.
    pub fn run(&mut self) {
        let d = self.dir.path();
        let child = Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-L")
            .arg(d.join("ganesha.log"))
            .arg("-f")
            .arg(d.join("ganesha.conf"))
            .arg("-p")
            .arg(d.join("ganesha.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ganesha.nfsd");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.log().contains("NFS SERVER INITIALIZED")
                && TcpStream::connect(("127.0.0.1", self.nfs_port)).is_ok()
            {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "ganesha.nfsd exited with {status}; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "ganesha.nfsd did not start serving; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops ganesha (SIGTERM, and waits for it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "ganesha.nfsd");
        }
    }

    /// Ganesha's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ganesha.log")).unwrap_or_default()
    }

    /// The nfs-rs URL of export `index` over NFS `version` (`3`, `4.0`, `4.1`) as
    /// `uid`/`gid`: NFSv3 mounts the path, NFSv4 the pseudo path.
    pub fn url(&self, index: usize, version: &str, uid: u32) -> String {
        let e = &self.exports[index];
        let path = if version == "3" {
            e.path.display().to_string()
        } else {
            e.pseudo.clone()
        };
        format!(
            "nfs://127.0.0.1{path}?version={version}&nfsport={}&mountport={}&uid={uid}&gid={uid}",
            self.nfs_port, self.mnt_port
        )
    }

    fn config(&self) -> String {
        let recovery = self.dir.path().join("recovery");
        let mut c = format!(
            "NFS_CORE_PARAM {{\n    Protocols = 3, 4;\n    Bind_Addr = 127.0.0.1;\n    \
             NFS_Port = {};\n    MNT_Port = {};\n    Enable_NLM = false;\n    \
             Enable_RQUOTA = false;\n}}\n\
             NFSv4 {{\n    Graceless = true;\n    RecoveryRoot = {};\n}}\n\
             LOG {{ Default_Log_Level = EVENT; }}\n",
            self.nfs_port,
            self.mnt_port,
            recovery.display()
        );
        for (i, e) in self.exports.iter().enumerate() {
            let fsid = if e.stable_handles {
                " fsid_type = Major64;"
            } else {
                ""
            };
            c.push_str(&format!(
                "EXPORT {{\n    Export_Id = {};\n    Path = {};\n    Pseudo = {};\n    \
                 Access_Type = RW;\n    Squash = No_Root_Squash;\n    Protocols = 3, 4;\n    \
                 Transports = TCP;\n    SecType = sys;\n    FSAL {{ Name = VFS;{fsid} }}\n}}\n",
                i + 1,
                e.path.display(),
                e.pseudo
            ));
        }
        c
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Mounts `url` with nfs-rs; panics naming the URL if that fails.
pub async fn mount(url: &str) -> Box<dyn Mount> {
    match nfs_rs::parse_url_and_mount(url).await {
        Ok(m) => m,
        Err(e) => panic!("NFS mount of {url}: {e}"),
    }
}

/// Writes `data` to a new file `path` through the export (UNSTABLE writes, up to 8 in
/// flight, then COMMIT), closes it, and returns its file handle.
pub async fn put(m: &dyn Mount, path: &str, data: Bytes) -> Bytes {
    let f = m.create_path(path, Some(0o644)).await.expect("create");
    let len = data.len() as u64;
    let n = nfs_rs::write_all(m, f.fh.clone(), 0, data)
        .await
        .unwrap_or_else(|e| panic!("write {path}: {e}"));
    assert_eq!(n, len, "{path}: bytes written");
    m.close(f.fh.clone()).await.expect("close");
    f.fh
}

/// The whole file behind `fh`, read in chunks of the mount's read size, one at a time.
pub async fn get(m: &dyn Mount, fh: &Bytes) -> Vec<u8> {
    let chunk = m.get_max_read_size();
    let mut out = Vec::new();
    loop {
        let b = m
            .read(fh.clone(), out.len() as u64, chunk)
            .await
            .unwrap_or_else(|e| panic!("read at {}: {e}", out.len()));
        if b.is_empty() {
            return out;
        }
        out.extend_from_slice(&b);
    }
}

/// The whole file at `path`.
pub async fn get_path(m: &dyn Mount, path: &str) -> Vec<u8> {
    let f = m.open_path(path, nfs_rs::OPEN_READ).await.expect("open");
    let data = get(m, &f.fh).await;
    m.close(f.fh).await.expect("close");
    data
}

/// Whether `e` is the NFS status `name` (`STALE`, `ACCES`, ...) of either protocol.
pub fn is_status(e: &NfsError, name: &str) -> bool {
    match e {
        NfsError::Nfs3(code) => format!("{code:?}") == format!("NFS3ERR_{name}"),
        NfsError::Nfs4(code) => format!("{code:?}") == format!("NFS4ERR_{name}"),
        _ => false,
    }
}
