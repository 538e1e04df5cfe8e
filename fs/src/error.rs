//! Filesystem errors: an errno plus a message, converted to the kernel's errno in exactly one
//! place (the FUSE adapter).

use pfnfs_alloc::{AllocError, PoolError};
use pfnfs_extent::{ExtentError, ExtentIoError};

/// An error with the errno the kernel will see.
#[derive(Debug, thiserror::Error)]
#[error("{msg} (errno {errno})")]
pub struct FsError {
    /// The raw errno (positive).
    pub errno: i32,
    /// What went wrong, for logs.
    pub msg: String,
}

/// Result of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// An error with `errno` and a message.
    pub fn new(errno: i32, msg: impl Into<String>) -> FsError {
        FsError {
            errno,
            msg: msg.into(),
        }
    }
}

macro_rules! errno_helpers {
    ($($name:ident => $errno:ident),* $(,)?) => {
        $(
            #[doc = concat!("An `", stringify!($errno), "` error.")]
            pub fn $name(msg: impl Into<String>) -> FsError {
                FsError::new(libc::$errno, msg)
            }
        )*
    };
}

errno_helpers! {
    enoent => ENOENT,
    eexist => EEXIST,
    enotdir => ENOTDIR,
    eisdir => EISDIR,
    enotempty => ENOTEMPTY,
    einval => EINVAL,
    eperm => EPERM,
    eacces => EACCES,
    enospc => ENOSPC,
    efbig => EFBIG,
    eio => EIO,
    erange => ERANGE,
    enodata => ENODATA,
    enametoolong => ENAMETOOLONG,
    emlink => EMLINK,
    eopnotsupp => EOPNOTSUPP,
    erofs => EROFS,
    exdev => EXDEV,
    enxio => ENXIO,
    ebadf => EBADF,
    e2big => E2BIG,
    eoverflow => EOVERFLOW,
}

impl From<crate::acl::AclError> for FsError {
    fn from(e: crate::acl::AclError) -> FsError {
        FsError::new(libc::EINVAL, e.to_string())
    }
}

impl From<PoolError> for FsError {
    fn from(e: PoolError) -> FsError {
        match e {
            PoolError::ReadOnly { .. } => FsError::new(libc::EROFS, e.to_string()),
            other => FsError::new(libc::EIO, other.to_string()),
        }
    }
}

impl From<AllocError> for FsError {
    fn from(e: AllocError) -> FsError {
        match e {
            AllocError::NoSpace { .. } => FsError::new(libc::ENOSPC, e.to_string()),
            other => FsError::new(libc::EIO, other.to_string()),
        }
    }
}

impl From<ExtentError> for FsError {
    fn from(e: ExtentError) -> FsError {
        match e {
            ExtentError::Overflow => FsError::new(libc::EFBIG, e.to_string()),
            other => FsError::new(libc::EIO, other.to_string()),
        }
    }
}

impl From<ExtentIoError> for FsError {
    fn from(e: ExtentIoError) -> FsError {
        match e {
            ExtentIoError::Pool(p) => p.into(),
            ExtentIoError::Alloc(a) => a.into(),
            ExtentIoError::Map(m) => m.into(),
            ExtentIoError::Overflow => FsError::new(libc::EFBIG, "byte range overflows"),
            other => FsError::new(libc::EIO, other.to_string()),
        }
    }
}
