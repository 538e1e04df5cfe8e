//! Decoding a request that arrived in a ring slot into typed arguments.
//!
//! fuser parses `/dev/fuse` requests itself and keeps that parser private, so requests on
//! the rings are decoded here, from the slot's header bytes and payload, into a
//! [`Request`]: one variant per operation, with the arguments the operation needs (names
//! split off the payload, flag words turned into options). Nothing here knows what an
//! operation means; a request that does not decode is [`DecodeError`], answered EINVAL.

use crate::abi::{self, fattr, op};

/// Who made a request and on which inode (`fuse_in_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub opcode: u32,
    pub unique: u64,
    /// The inode the request is about (the parent directory for name operations).
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// A time in a SETATTR request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    /// The receiver's clock now (`FATTR_*TIME_NOW`).
    Now,
    /// Seconds (two's complement: negative before 1970) and nanoseconds.
    At { secs: i64, nsecs: u32 },
}

/// SETATTR's fields, `None` where `valid` does not name them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Setattr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeArg>,
    pub mtime: Option<TimeArg>,
    pub ctime: Option<TimeArg>,
}

/// One decoded request; names and data borrow the slot's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Lookup {
        name: &'a [u8],
    },
    Getattr,
    Setattr(Setattr),
    Readlink,
    Symlink {
        name: &'a [u8],
        target: &'a [u8],
    },
    Mknod {
        name: &'a [u8],
        mode: u32,
        umask: u32,
        rdev: u32,
    },
    Mkdir {
        name: &'a [u8],
        mode: u32,
        umask: u32,
    },
    Unlink {
        name: &'a [u8],
    },
    Rmdir {
        name: &'a [u8],
    },
    /// RENAME and RENAME2 (`flags` 0 for RENAME).
    Rename {
        name: &'a [u8],
        new_parent: u64,
        new_name: &'a [u8],
        flags: u32,
    },
    Link {
        ino: u64,
        name: &'a [u8],
    },
    Open {
        flags: i32,
    },
    Read {
        offset: u64,
        size: u32,
    },
    Write {
        offset: u64,
        data: &'a [u8],
        write_flags: u32,
    },
    Statfs,
    Release,
    Flush,
    Fsync,
    Opendir,
    Readdir {
        offset: u64,
        size: u32,
    },
    Readdirplus {
        offset: u64,
        size: u32,
    },
    Releasedir,
    Fsyncdir,
    Setxattr {
        name: &'a [u8],
        value: &'a [u8],
        flags: i32,
    },
    Getxattr {
        name: &'a [u8],
        size: u32,
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a [u8],
    },
    Access {
        mask: i32,
    },
    Create {
        name: &'a [u8],
        mode: u32,
        umask: u32,
        flags: i32,
    },
    Fallocate {
        offset: u64,
        length: u64,
        mode: i32,
    },
    Lseek {
        offset: i64,
        whence: i32,
    },
    CopyFileRange {
        offset_in: u64,
        ino_out: u64,
        offset_out: u64,
        len: u64,
    },
    Destroy,
    /// FORGET, BATCH_FORGET, INTERRUPT, INIT: the kernel sends these over `/dev/fuse` only.
    DeviceOnly,
    /// An opcode pfnfs does not serve (answered ENOSYS).
    Unsupported,
}

/// A request whose arguments do not decode (a name without its NUL, a value shorter than
/// its stated size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub opcode: u32,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed FUSE request (opcode {})", self.opcode)
    }
}

impl std::error::Error for DecodeError {}

/// The header of a request (`in_header`: the slot's `fuse_in_header` bytes).
pub fn header(in_header: &[u8]) -> Header {
    let h: abi::InHeader = abi::read(in_header);
    Header {
        opcode: h.opcode,
        unique: h.unique,
        nodeid: h.nodeid,
        uid: h.uid,
        gid: h.gid,
        pid: h.pid,
    }
}

/// Decodes the request `opcode` from its fixed argument `op_in` and its `payload` (the
/// payload bytes the kernel wrote).
pub fn decode<'a>(
    opcode: u32,
    op_in: &[u8],
    payload: &'a [u8],
) -> Result<Request<'a>, DecodeError> {
    let bad = DecodeError { opcode };
    let one = || abi::name(payload).map(|(n, _)| n).ok_or(bad);
    let two = || {
        let (a, rest) = abi::name(payload).ok_or(bad)?;
        let (b, _) = abi::name(rest).ok_or(bad)?;
        Ok::<_, DecodeError>((a, b))
    };
    Ok(match opcode {
        op::LOOKUP => Request::Lookup { name: one()? },
        op::GETATTR => Request::Getattr,
        op::SETATTR => Request::Setattr(setattr(&abi::read(op_in))),
        op::READLINK => Request::Readlink,
        op::SYMLINK => {
            let (name, target) = two()?;
            Request::Symlink { name, target }
        }
        op::MKNOD => {
            let a: abi::MknodIn = abi::read(op_in);
            Request::Mknod {
                name: one()?,
                mode: a.mode,
                umask: a.umask,
                rdev: a.rdev,
            }
        }
        op::MKDIR => {
            let a: abi::MkdirIn = abi::read(op_in);
            Request::Mkdir {
                name: one()?,
                mode: a.mode,
                umask: a.umask,
            }
        }
        op::UNLINK => Request::Unlink { name: one()? },
        op::RMDIR => Request::Rmdir { name: one()? },
        op::RENAME | op::RENAME2 => {
            let (new_parent, flags) = if opcode == op::RENAME {
                (abi::read::<abi::RenameIn>(op_in).newdir, 0)
            } else {
                let a: abi::Rename2In = abi::read(op_in);
                (a.newdir, a.flags)
            };
            let (name, new_name) = two()?;
            Request::Rename {
                name,
                new_parent,
                new_name,
                flags,
            }
        }
        op::LINK => Request::Link {
            ino: abi::read::<abi::LinkIn>(op_in).oldnodeid,
            name: one()?,
        },
        op::OPEN => Request::Open {
            flags: abi::read::<abi::OpenIn>(op_in).flags as i32,
        },
        op::READ => {
            let a: abi::ReadIn = abi::read(op_in);
            Request::Read {
                offset: a.offset,
                size: a.size,
            }
        }
        op::WRITE => {
            let a: abi::WriteIn = abi::read(op_in);
            let data = payload.get(..a.size as usize).ok_or(bad)?;
            Request::Write {
                offset: a.offset,
                data,
                write_flags: a.write_flags,
            }
        }
        op::STATFS => Request::Statfs,
        op::RELEASE => Request::Release,
        op::FLUSH => Request::Flush,
        op::FSYNC => Request::Fsync,
        op::OPENDIR => Request::Opendir,
        op::READDIR | op::READDIRPLUS => {
            let a: abi::ReadIn = abi::read(op_in);
            let (offset, size) = (a.offset, a.size);
            if opcode == op::READDIR {
                Request::Readdir { offset, size }
            } else {
                Request::Readdirplus { offset, size }
            }
        }
        op::RELEASEDIR => Request::Releasedir,
        op::FSYNCDIR => Request::Fsyncdir,
        op::SETXATTR => {
            let a: abi::SetxattrIn = abi::read(op_in);
            let (name, rest) = abi::name(payload).ok_or(bad)?;
            let value = rest.get(..a.size as usize).ok_or(bad)?;
            Request::Setxattr {
                name,
                value,
                flags: a.flags as i32,
            }
        }
        op::GETXATTR => Request::Getxattr {
            name: one()?,
            size: abi::read::<abi::GetxattrIn>(op_in).size,
        },
        op::LISTXATTR => Request::Listxattr {
            size: abi::read::<abi::GetxattrIn>(op_in).size,
        },
        op::REMOVEXATTR => Request::Removexattr { name: one()? },
        op::ACCESS => Request::Access {
            mask: abi::read::<abi::AccessIn>(op_in).mask as i32,
        },
        op::CREATE => {
            let a: abi::CreateIn = abi::read(op_in);
            Request::Create {
                name: one()?,
                mode: a.mode,
                umask: a.umask,
                flags: a.flags as i32,
            }
        }
        op::FALLOCATE => {
            let a: abi::FallocateIn = abi::read(op_in);
            Request::Fallocate {
                offset: a.offset,
                length: a.length,
                mode: a.mode as i32,
            }
        }
        op::LSEEK => {
            let a: abi::LseekIn = abi::read(op_in);
            Request::Lseek {
                offset: a.offset as i64,
                whence: a.whence as i32,
            }
        }
        op::COPY_FILE_RANGE => {
            let a: abi::CopyFileRangeIn = abi::read(op_in);
            Request::CopyFileRange {
                offset_in: a.off_in,
                ino_out: a.nodeid_out,
                offset_out: a.off_out,
                len: a.len,
            }
        }
        op::DESTROY => Request::Destroy,
        op::FORGET | op::BATCH_FORGET | op::INTERRUPT | op::INIT => Request::DeviceOnly,
        _ => Request::Unsupported,
    })
}

fn setattr(a: &abi::SetattrIn) -> Setattr {
    let v = a.valid;
    let at = |secs: u64, nsecs: u32| TimeArg::At {
        secs: secs as i64,
        nsecs: nsecs.min(999_999_999),
    };
    let when = |set: u32, now: u32, secs: u64, nsecs: u32| {
        if v & now != 0 {
            Some(TimeArg::Now)
        } else if v & set != 0 {
            Some(at(secs, nsecs))
        } else {
            None
        }
    };
    Setattr {
        mode: (v & fattr::MODE != 0).then_some(a.mode),
        uid: (v & fattr::UID != 0).then_some(a.uid),
        gid: (v & fattr::GID != 0).then_some(a.gid),
        size: (v & fattr::SIZE != 0).then_some(a.size),
        atime: when(fattr::ATIME, fattr::ATIME_NOW, a.atime, a.atimensec),
        mtime: when(fattr::MTIME, fattr::MTIME_NOW, a.mtime, a.mtimensec),
        ctime: (v & fattr::CTIME != 0).then(|| at(a.ctime, a.ctimensec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn names_and_values_come_off_the_payload() {
        let r = decode(
            op::RENAME2,
            abi::Rename2In {
                newdir: 7,
                flags: 1,
                padding: 0,
            }
            .as_bytes(),
            b"a\0bc\0",
        );
        assert_eq!(
            r,
            Ok(Request::Rename {
                name: b"a",
                new_parent: 7,
                new_name: b"bc",
                flags: 1
            })
        );
        let r = decode(
            op::SETXATTR,
            abi::SetxattrIn { size: 2, flags: 1 }.as_bytes(),
            b"user.x\0vvv",
        );
        assert_eq!(
            r,
            Ok(Request::Setxattr {
                name: b"user.x",
                value: b"vv",
                flags: 1
            })
        );
    }

    #[test]
    fn malformed_requests_do_not_decode() {
        let e = Err(DecodeError { opcode: op::LOOKUP });
        assert_eq!(decode(op::LOOKUP, &[], b"no-nul"), e);
        let short = abi::SetxattrIn { size: 9, flags: 0 };
        assert!(decode(op::SETXATTR, short.as_bytes(), b"user.x\0v").is_err());
        let w = abi::WriteIn {
            size: 10,
            ..Default::default()
        };
        assert!(decode(op::WRITE, w.as_bytes(), b"12345").is_err());
        assert_eq!(
            decode(op::SYMLINK, &[], b"a\0b"),
            Err(DecodeError {
                opcode: op::SYMLINK
            })
        );
    }

    #[test]
    fn setattr_fields_follow_valid() {
        let a = abi::SetattrIn {
            valid: fattr::SIZE | fattr::MTIME | fattr::ATIME_NOW | fattr::ATIME,
            size: 5,
            mtime: (-2i64) as u64,
            mtimensec: 3,
            mode: 0o777,
            ..Default::default()
        };
        let Ok(Request::Setattr(s)) = decode(op::SETATTR, a.as_bytes(), &[]) else {
            panic!("setattr did not decode");
        };
        assert_eq!(s.size, Some(5));
        assert_eq!(s.mode, None, "mode not in valid");
        assert_eq!(s.atime, Some(TimeArg::Now), "NOW wins");
        assert_eq!(s.mtime, Some(TimeArg::At { secs: -2, nsecs: 3 }));
        assert_eq!(s.ctime, None);
    }

    #[test]
    fn device_only_and_unknown_opcodes() {
        assert_eq!(decode(op::FORGET, &[], &[]), Ok(Request::DeviceOnly));
        assert_eq!(decode(op::INIT, &[], &[]), Ok(Request::DeviceOnly));
        assert_eq!(decode(4242, &[], &[]), Ok(Request::Unsupported));
    }
}
