//! Thin wrappers over system calls std lacks. Each returns `io::Result` carrying the raw errno,
//! so tests can assert `errno(&err) == libc::EEXIST`.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The path as a C string (tests never use paths with NUL bytes).
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("string without NUL")
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn check_size(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// The raw errno of an error (0 if it has none).
pub fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

/// The errno of a result that must have failed.
pub fn expect_errno<T: std::fmt::Debug>(result: io::Result<T>, what: &str) -> i32 {
    match result {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => errno(&e),
    }
}

/// `open(2)` with raw flags and mode.
pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    let p = cpath(path);
    // SAFETY: valid C string; the returned fd is owned by the File.
    let fd =
        check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `renameat2(2)` with `RENAME_*` flags.
pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `fallocate(2)`.
pub fn fallocate(file: &File, mode: libc::c_int, offset: i64, len: i64) -> io::Result<()> {
    // SAFETY: plain system call on an open descriptor.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) }).map(drop)
}

/// `truncate(2)` of a path.
pub fn truncate(path: &Path, len: i64) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: p is a NUL-terminated path that outlives the call.
    check(unsafe { libc::truncate(p.as_ptr(), len) }).map(drop)
}

/// `pwritev(2)` of `bufs` at `offset`; returns the bytes written.
pub fn pwritev(file: &File, bufs: &[&[u8]], offset: i64) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: each iovec points into a live slice that the kernel only reads.
    check_size(unsafe {
        libc::pwritev(
            file.as_raw_fd(),
            iov.as_ptr(),
            iov.len() as libc::c_int,
            offset,
        )
    })
}

/// A `MAP_SHARED` read-write mapping of a file from offset 0, unmapped on drop.
#[derive(Debug)]
pub struct SharedMapping {
    ptr: *mut u8,
    len: usize,
}

impl SharedMapping {
    /// `mmap(len, PROT_READ|PROT_WRITE, MAP_SHARED)` of `file` (open for reading and writing)
    /// from offset 0.
    pub fn new(file: &File, len: usize) -> io::Result<SharedMapping> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) of an open descriptor;
        // nothing else aliases it, and it is unmapped exactly once in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The mapped bytes (a store past the file's end faults with SIGBUS, as for any program).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is our live mapping.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The mapped bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes this the only live reference from this
        // process (other mappings of the same file are separate address ranges: the kernel
        // keeps them coherent, which is what the tests check).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// `msync(MS_SYNC)`: the stores written back to the file.
    pub fn msync(&self) -> io::Result<()> {
        // SAFETY: msync of our own live mapping.
        check(unsafe { libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC) }).map(drop)
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in `new`; no slices of it outlive self.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

// SAFETY: the mapping is plain memory owned by this value; moving it to another thread moves
// the only handle to it (its slices borrow it, so none outlives the move).
unsafe impl Send for SharedMapping {}

/// Stores `byte` at `offset` through a `MAP_SHARED` mapping of `file` (opened for reading
/// and writing), writes the page back with `msync(MS_SYNC)` and unmaps it.
pub fn store_through_mapping(file: &File, offset: usize, byte: u8) -> io::Result<()> {
    let mut map = SharedMapping::new(file, offset + 1)?;
    map.as_mut_slice()[offset] = byte;
    map.msync()
}

/// `lseek(2)` with any whence (`SEEK_DATA`, `SEEK_HOLE`, ...).
pub fn lseek(file: &File, offset: i64, whence: libc::c_int) -> io::Result<i64> {
    // SAFETY: plain system call on an open descriptor.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `copy_file_range(2)` with explicit offsets.
pub fn copy_file_range(
    src: &File,
    src_off: i64,
    dst: &File,
    dst_off: i64,
    len: usize,
) -> io::Result<usize> {
    let (mut so, mut d) = (src_off, dst_off);
    // SAFETY: the offsets are valid pointers to our locals.
    check_size(unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, len, 0) as isize
    })
}

/// `lsetxattr(2)`.
pub fn setxattr(path: &Path, name: &str, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let (p, n) = (cpath(path), cstr(name));
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// `lgetxattr(2)` into a buffer of `buf_len` bytes (0 asks for the size); returns the length.
pub fn getxattr_len(path: &Path, name: &str, buf_len: usize) -> io::Result<usize> {
    let (p, n) = (cpath(path), cstr(name));
    let mut buf = vec![0u8; buf_len];
    let ptr = if buf_len == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: valid C strings and a buffer of buf_len bytes (or null with 0).
    check_size(unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), ptr, buf_len) })
}

/// The value of an extended attribute.
pub fn getxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (p, n) = (cpath(path), cstr(name));
    loop {
        let len = getxattr_len(path, name, 0)?;
        let mut buf = vec![0u8; len.max(1)];
        // SAFETY: as above.
        match check_size(unsafe {
            libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        }) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(e) if errno(&e) == libc::ERANGE => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `llistxattr(2)` into a buffer of `buf_len` bytes (0 asks for the size); returns the length.
pub fn listxattr_len(path: &Path, buf_len: usize) -> io::Result<usize> {
    let p = cpath(path);
    let mut buf = vec![0u8; buf_len];
    let ptr = if buf_len == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: valid C string and a buffer of buf_len bytes (or null with 0).
    check_size(unsafe { libc::llistxattr(p.as_ptr(), ptr, buf_len) })
}

/// The names of a path's extended attributes, sorted.
pub fn listxattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path);
    loop {
        let len = listxattr_len(path, 0)?;
        let mut buf = vec![0u8; len.max(1)];
        // SAFETY: as above.
        match check_size(unsafe {
            libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        }) {
            Ok(got) => {
                buf.truncate(got);
                let mut names: Vec<String> = buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                names.sort();
                return Ok(names);
            }
            Err(e) if errno(&e) == libc::ERANGE => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Every extended attribute of a path (not following symlinks).
pub fn list_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for name in listxattr(path)? {
        let value = getxattr(path, &name)?;
        out.insert(name, value);
    }
    Ok(out)
}

/// `lremovexattr(2)`.
pub fn removexattr(path: &Path, name: &str) -> io::Result<()> {
    let (p, n) = (cpath(path), cstr(name));
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) }).map(drop)
}

/// `mknod(2)`.
pub fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(p.as_ptr(), mode, dev) }).map(drop)
}

/// `makedev(3)`.
pub fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

/// A timespec for [`utimensat`]; use `libc::UTIME_NOW` / `libc::UTIME_OMIT` as `nsec` for
/// those special values.
pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// `utimensat(2)` on a path, optionally with `AT_SYMLINK_NOFOLLOW`.
pub fn utimensat(
    path: &Path,
    atime: libc::timespec,
    mtime: libc::timespec,
    nofollow: bool,
) -> io::Result<()> {
    let p = cpath(path);
    let times = [atime, mtime];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: valid C string and an array of two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

/// `lchown(2)`.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(p.as_ptr(), uid, gid) }).map(drop)
}

/// `statvfs(3)`.
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let p = cpath(path);
    // SAFETY: zeroed plain-data struct filled by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and struct.
    check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
    Ok(st)
}

/// An open directory stream (`opendir`/`readdir`), which unlike `std::fs::read_dir` shows
/// `.` and `..` and can be interleaved with changes to the directory.
pub struct DirStream(*mut libc::DIR);

impl DirStream {
    /// `opendir(3)`.
    pub fn open(path: &Path) -> io::Result<DirStream> {
        let p = cpath(path);
        // SAFETY: valid C string.
        let dir = unsafe { libc::opendir(p.as_ptr()) };
        if dir.is_null() {
            Err(io::Error::last_os_error())
        } else {
            Ok(DirStream(dir))
        }
    }

    /// The next entry's name and `d_type`, `None` at the end.
    pub fn next_entry(&mut self) -> io::Result<Option<(Vec<u8>, u8)>> {
        // SAFETY: errno is thread-local; readdir on our open stream.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: the stream is open.
        let ent = unsafe { libc::readdir(self.0) };
        if ent.is_null() {
            let err = io::Error::last_os_error();
            return if errno(&err) == 0 { Ok(None) } else { Err(err) };
        }
        // SAFETY: readdir returned a valid dirent with a NUL-terminated name.
        let (name, kind) = unsafe {
            (
                CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes().to_vec(),
                (*ent).d_type,
            )
        };
        Ok(Some((name, kind)))
    }

    /// Every remaining entry.
    pub fn collect_all(&mut self) -> io::Result<Vec<(Vec<u8>, u8)>> {
        let mut out = Vec::new();
        while let Some(e) = self.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream is open and closed exactly once.
        unsafe { libc::closedir(self.0) };
    }
}
