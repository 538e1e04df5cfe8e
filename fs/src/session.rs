//! The session: one typed method per FUSE operation, between a transport and the
//! [`Volume`](crate::volume::Volume), and the one place an error becomes an errno.

use crate::error::{ErrorKind, FsError};

/// The errno the kernel sees for `e`: the only place a kind of failure is given its errno.
pub fn errno(e: &FsError) -> i32 {
    match e.kind {
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::Exists => libc::EEXIST,
        ErrorKind::NotDirectory => libc::ENOTDIR,
        ErrorKind::IsDirectory => libc::EISDIR,
        ErrorKind::NotEmpty => libc::ENOTEMPTY,
        ErrorKind::Invalid => libc::EINVAL,
        ErrorKind::NotPermitted => libc::EPERM,
        ErrorKind::AccessDenied => libc::EACCES,
        ErrorKind::NoSpace => libc::ENOSPC,
        ErrorKind::FileTooLarge => libc::EFBIG,
        ErrorKind::Corrupt => libc::EIO,
        ErrorKind::OutOfRange => libc::ERANGE,
        ErrorKind::NoAttribute => libc::ENODATA,
        ErrorKind::NameTooLong => libc::ENAMETOOLONG,
        ErrorKind::TooManyLinks => libc::EMLINK,
        ErrorKind::Unsupported => libc::EOPNOTSUPP,
        ErrorKind::NoDevice => libc::ENODEV,
        ErrorKind::ReadOnly => libc::EROFS,
        ErrorKind::CrossDevice => libc::EXDEV,
        ErrorKind::NoSuchOffset => libc::ENXIO,
        ErrorKind::BadHandle => libc::EBADF,
        ErrorKind::RecordTooLarge => libc::E2BIG,
        ErrorKind::Overflow => libc::EOVERFLOW,
        ErrorKind::NotImplemented => libc::ENOSYS,
        ErrorKind::Os(errno) if errno > 0 => errno,
        ErrorKind::Os(_) => libc::EIO,
    }
}
