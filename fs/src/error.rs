//! Filesystem errors: what kind of failure, plus the context that explains it.
//!
//! The volume and everything under it say *what* went wrong ([`ErrorKind`]); which errno the
//! kernel sees is decided in one function at the session boundary
//! ([`crate::session::errno`]), never at the place the error is made. A failed system call
//! keeps the errno the operating system gave ([`ErrorKind::Os`]), so nothing is guessed from
//! a message or a `std::io::ErrorKind`.

use pfnfs_alloc::{AllocError, PoolError};
use pfnfs_extent::{ExtentError, ExtentIoError};

/// What kind of failure an operation met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such name or inode.
    NotFound,
    /// The name exists already.
    Exists,
    /// A directory was needed.
    NotDirectory,
    /// A directory where none may be.
    IsDirectory,
    /// The directory still has entries.
    NotEmpty,
    /// An argument is out of its domain.
    Invalid,
    /// The caller may not do this at all (ownership, sticky directories).
    NotPermitted,
    /// The permission bits or ACLs refuse the caller.
    AccessDenied,
    /// The pool (or its metadata log) has no room.
    NoSpace,
    /// Past the largest file size.
    FileTooLarge,
    /// What the pool holds is inconsistent, or an internal invariant failed.
    Corrupt,
    /// A size or length out of the range the call accepts (xattr names, reply buffers).
    OutOfRange,
    /// No such extended attribute.
    NoAttribute,
    /// A name longer than 255 bytes.
    NameTooLong,
    /// Too many hard links.
    TooManyLinks,
    /// An operation or mode pfnfs does not offer.
    Unsupported,
    /// Not offered for this kind of file (fallocate of a device node).
    NoDevice,
    /// The mount is read-only.
    ReadOnly,
    /// Across filesystems.
    CrossDevice,
    /// An offset with no data or hole after it (SEEK_DATA / SEEK_HOLE).
    NoSuchOffset,
    /// Not an open handle.
    BadHandle,
    /// A metadata record larger than the log takes.
    RecordTooLarge,
    /// A value that does not fit its type.
    Overflow,
    /// Left to the kernel (an operation the daemon declines to implement).
    NotImplemented,
    /// A system call failed with this errno (positive), kept as the operating system gave it.
    Os(i32),
}

/// An error: its kind, and what went wrong, for logs and messages.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct FsError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, in words (names the inode, the range, the cause).
    pub context: String,
}

/// Result of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// An error of `kind` with its context.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> FsError {
        FsError {
            kind,
            context: context.into(),
        }
    }

    /// A failed system call, keeping its errno (EIO when the error carries none).
    pub fn os(err: &std::io::Error, context: impl std::fmt::Display) -> FsError {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        FsError::new(ErrorKind::Os(errno), format!("{context}: {err}"))
    }
}

macro_rules! kind_constructors {
    ($($name:ident => $kind:ident),* $(,)?) => {
        $(
            #[doc = concat!("An [`ErrorKind::", stringify!($kind), "`] error.")]
            pub fn $name(context: impl Into<String>) -> FsError {
                FsError::new(ErrorKind::$kind, context)
            }
        )*
    };
}

kind_constructors! {
    not_found => NotFound,
    exists => Exists,
    not_directory => NotDirectory,
    is_directory => IsDirectory,
    not_empty => NotEmpty,
    invalid => Invalid,
    not_permitted => NotPermitted,
    access_denied => AccessDenied,
    no_space => NoSpace,
    file_too_large => FileTooLarge,
    corrupt => Corrupt,
    out_of_range => OutOfRange,
    no_attribute => NoAttribute,
    name_too_long => NameTooLong,
    too_many_links => TooManyLinks,
    unsupported => Unsupported,
    no_device => NoDevice,
    read_only => ReadOnly,
    cross_device => CrossDevice,
    no_such_offset => NoSuchOffset,
    bad_handle => BadHandle,
    record_too_large => RecordTooLarge,
    overflow => Overflow,
    not_implemented => NotImplemented,
}

impl From<crate::acl::AclError> for FsError {
    fn from(e: crate::acl::AclError) -> FsError {
        invalid(e.to_string())
    }
}

impl From<PoolError> for FsError {
    fn from(e: PoolError) -> FsError {
        match &e {
            PoolError::ReadOnly { .. } => read_only(e.to_string()),
            // Memory that failed under the pool: an I/O error, not an inconsistency.
            PoolError::Media { .. } | PoolError::BadFrames { .. } => {
                FsError::new(ErrorKind::Os(libc::EIO), e.to_string())
            }
            PoolError::NoRoom { .. } => no_space(e.to_string()),
            PoolError::Io { source, .. } => match source.raw_os_error() {
                Some(errno) => FsError::new(ErrorKind::Os(errno), e.to_string()),
                None => corrupt(e.to_string()),
            },
            _ => corrupt(e.to_string()),
        }
    }
}

impl From<AllocError> for FsError {
    fn from(e: AllocError) -> FsError {
        match e {
            AllocError::NoSpace { .. } => no_space(e.to_string()),
            AllocError::NoBacking { errno, .. } if errno == libc::ENOSPC => no_space(e.to_string()),
            AllocError::NoBacking { errno, .. } => {
                FsError::new(ErrorKind::Os(errno), e.to_string())
            }
            other => corrupt(other.to_string()),
        }
    }
}

impl From<ExtentError> for FsError {
    fn from(e: ExtentError) -> FsError {
        match e {
            ExtentError::Overflow => file_too_large(e.to_string()),
            other => corrupt(other.to_string()),
        }
    }
}

impl From<ExtentIoError> for FsError {
    fn from(e: ExtentIoError) -> FsError {
        match e {
            ExtentIoError::Pool(p) => p.into(),
            ExtentIoError::Alloc(a) => a.into(),
            ExtentIoError::Map(m) => m.into(),
            ExtentIoError::Overflow => file_too_large("byte range overflows"),
            other => corrupt(other.to_string()),
        }
    }
}
