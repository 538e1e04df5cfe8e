//! POSIX access control lists, as Linux implements POSIX.1e draft 17.
//!
//! The kernel does the permission checks (FUSE_POSIX_ACL turns on default_permissions and
//! makes the kernel read the ACLs through getxattr and cache them); the daemon stores the two
//! ACLs of an inode as the extended attributes `system.posix_acl_access` and
//! `system.posix_acl_default`, in the kernel's wire format, and keeps them consistent with
//! the mode:
//!
//! - setting an access ACL sets the mode's permission bits from it (group bits from the
//!   mask when there is one); an ACL that the mode alone expresses is not stored;
//! - chmod rewrites the owner, mask (or group) and other entries of the access ACL;
//! - a new inode in a directory with a default ACL gets the requested mode intersected
//!   with that ACL (no umask), an access ACL when the result needs more than the mode, and,
//!   for a directory, the default ACL too. Without a default ACL the umask applies.
//!
//! # Wire format (`posix_acl_xattr`, little-endian)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | version, 2 |
//! | 4 + 8 i | 2 | entry i: tag (`USER_OBJ` 1, `USER` 2, `GROUP_OBJ` 4, `GROUP` 8, `MASK` 0x10, `OTHER` 0x20) |
//! | 6 + 8 i | 2 | entry i: permissions, `rwx` = 4, 2, 1 |
//! | 8 + 8 i | 4 | entry i: uid (`USER`), gid (`GROUP`), otherwise `u32::MAX` |
//!
//! # Invariants of a valid ACL (`posix_acl_valid`)
//! Entries in the order `USER_OBJ`, `USER`*, `GROUP_OBJ`, `GROUP`*, `MASK`?, `OTHER`,
//! exactly one of each `_OBJ` and `OTHER`, a `MASK` whenever there is a `USER` or `GROUP`
//! entry, and no permission bit other than `rwx`.

/// The access ACL's attribute name.
pub const ACCESS_XATTR: &[u8] = b"system.posix_acl_access";
/// The default ACL's attribute name (directories only).
pub const DEFAULT_XATTR: &[u8] = b"system.posix_acl_default";

/// The wire format's version.
pub const VERSION: u32 = 2;
/// Bytes of the header.
pub const HEADER_BYTES: usize = 4;
/// Bytes of one entry.
pub const ENTRY_BYTES: usize = 8;

/// Entry tags.
pub const USER_OBJ: u16 = 0x01;
pub const USER: u16 = 0x02;
pub const GROUP_OBJ: u16 = 0x04;
pub const GROUP: u16 = 0x08;
pub const MASK: u16 = 0x10;
pub const OTHER: u16 = 0x20;
/// The id of entries that name no user or group.
pub const UNDEFINED_ID: u32 = u32::MAX;

/// Why an ACL attribute value was refused (EINVAL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("ACL value of {0} bytes is not a header plus whole entries")]
    Length(usize),
    #[error("ACL version {0}, expected 2")]
    Version(u32),
    #[error("ACL has no entries")]
    Empty,
    #[error("ACL entry {index} has permission bits {perm:#x} beyond rwx")]
    Perm { index: usize, perm: u16 },
    #[error("ACL entry {index} has unknown tag {tag:#x}")]
    Tag { index: usize, tag: u16 },
    #[error("ACL entry {index} (tag {tag:#x}) is out of order or repeated")]
    Order { index: usize, tag: u16 },
    #[error("ACL lacks a required entry (owner, group, other, or a mask for named entries)")]
    Incomplete,
}

/// One entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclEntry {
    /// `USER_OBJ`, `USER`, `GROUP_OBJ`, `GROUP`, `MASK` or `OTHER`.
    pub tag: u16,
    /// `rwx` bits (4, 2, 1).
    pub perm: u16,
    /// uid or gid for `USER` and `GROUP`, else `UNDEFINED_ID`.
    pub id: u32,
}

/// A decoded, valid ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<AclEntry>,
}

impl Acl {
    /// Decodes and validates a wire-format value.
    pub fn decode(bytes: &[u8]) -> Result<Acl, AclError> {
        let body = bytes
            .len()
            .checked_sub(HEADER_BYTES)
            .filter(|n| n % ENTRY_BYTES == 0)
            .ok_or(AclError::Length(bytes.len()))?;
        let version = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if version != VERSION {
            return Err(AclError::Version(version));
        }
        if body == 0 {
            return Err(AclError::Empty);
        }
        let entries = bytes[HEADER_BYTES..]
            .chunks_exact(ENTRY_BYTES)
            .map(|e| {
                let tag = u16::from_le_bytes([e[0], e[1]]);
                let id = match tag {
                    USER | GROUP => u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                    _ => UNDEFINED_ID,
                };
                AclEntry {
                    tag,
                    perm: u16::from_le_bytes([e[2], e[3]]),
                    id,
                }
            })
            .collect();
        let acl = Acl { entries };
        acl.validate()?;
        Ok(acl)
    }

    /// The wire format (ids of entries that name nobody are written as `UNDEFINED_ID`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + ENTRY_BYTES * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    /// The minimal ACL a mode expresses: owner, group and other entries.
    pub fn from_mode(mode: u32) -> Acl {
        let e = |tag, shift: u32| AclEntry {
            tag,
            perm: ((mode >> shift) & 7) as u16,
            id: UNDEFINED_ID,
        };
        Acl {
            entries: vec![e(USER_OBJ, 6), e(GROUP_OBJ, 3), e(OTHER, 0)],
        }
    }

    /// An ACL from entries; validated.
    pub fn from_entries(entries: Vec<AclEntry>) -> Result<Acl, AclError> {
        let acl = Acl { entries };
        acl.validate()?;
        Ok(acl)
    }

    /// The entries in order.
    pub fn entries(&self) -> &[AclEntry] {
        &self.entries
    }

    /// Linux's `posix_acl_valid`: order, completeness, permission bits.
    fn validate(&self) -> Result<(), AclError> {
        // States: expecting USER_OBJ, in USER*, in GROUP*, after MASK, done.
        #[derive(PartialEq)]
        enum S {
            UserObj,
            Users,
            Groups,
            Other,
            Done,
        }
        let mut state = S::UserObj;
        let mut needs_mask = false;
        for (index, e) in self.entries.iter().enumerate() {
            if e.perm & !7 != 0 {
                return Err(AclError::Perm {
                    index,
                    perm: e.perm,
                });
            }
            let order = AclError::Order { index, tag: e.tag };
            state = match (e.tag, &state) {
                (USER_OBJ, S::UserObj) => S::Users,
                (USER, S::Users) => {
                    needs_mask = true;
                    S::Users
                }
                (GROUP_OBJ, S::Users) => S::Groups,
                (GROUP, S::Groups) => {
                    needs_mask = true;
                    S::Groups
                }
                (MASK, S::Groups) => S::Other,
                (OTHER, S::Other) => S::Done,
                (OTHER, S::Groups) if !needs_mask => S::Done,
                (OTHER, S::Groups) => return Err(AclError::Incomplete),
                (USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER, _) => return Err(order),
                (tag, _) => return Err(AclError::Tag { index, tag }),
            };
        }
        if state == S::Done {
            Ok(())
        } else {
            Err(AclError::Incomplete)
        }
    }

    fn find_mut(&mut self, tag: u16) -> Option<&mut AclEntry> {
        self.entries.iter_mut().find(|e| e.tag == tag)
    }

    fn perm_of(&self, tag: u16) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| e.perm as u32)
    }

    /// Linux's `posix_acl_equiv_mode`: the permission bits of `mode` (other bits kept) as the
    /// ACL sets them, and whether the mode alone expresses the ACL (no named entries, no
    /// mask).
    pub fn equiv_mode(&self, mode: u32) -> (u32, bool) {
        let mut bits = 0;
        let mut equiv = true;
        for e in &self.entries {
            let p = e.perm as u32 & 7;
            match e.tag {
                USER_OBJ => bits |= p << 6,
                GROUP_OBJ => bits |= p << 3,
                OTHER => bits |= p,
                _ => equiv = false,
            }
        }
        if let Some(m) = self.perm_of(MASK) {
            bits = (bits & !0o070) | ((m & 7) << 3);
        }
        ((mode & !0o777) | bits, equiv)
    }

    /// Linux's `posix_acl_create_masq`: intersects this ACL (a copy of the parent's default
    /// ACL) with the requested `mode` of a new inode, both ways. Returns the new mode and
    /// whether the ACL says more than the mode (then it is stored as the access ACL).
    pub fn create_masq(&mut self, mode: u32) -> (u32, bool) {
        let mut m = mode & 0o777;
        let mut not_equiv = false;
        for e in &mut self.entries {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((m >> 6) & 7) as u16;
                    m = (m & !0o700) | ((e.perm as u32) << 6);
                }
                OTHER => {
                    e.perm &= (m & 7) as u16;
                    m = (m & !0o007) | e.perm as u32;
                }
                USER | GROUP | MASK => not_equiv = true,
                _ => {}
            }
        }
        let group_tag = if self.perm_of(MASK).is_some() {
            MASK
        } else {
            GROUP_OBJ
        };
        if let Some(e) = self.find_mut(group_tag) {
            e.perm &= ((m >> 3) & 7) as u16;
            m = (m & !0o070) | ((e.perm as u32) << 3);
        }
        ((mode & !0o777) | m, not_equiv)
    }

    /// Linux's `posix_acl_chmod`: the owner, other and mask (or, without a mask, group)
    /// entries take the permission bits of `mode`; named entries stay.
    pub fn chmod(&mut self, mode: u32) {
        let group_tag = if self.perm_of(MASK).is_some() {
            MASK
        } else {
            GROUP_OBJ
        };
        for e in &mut self.entries {
            if e.tag == USER_OBJ {
                e.perm = ((mode >> 6) & 7) as u16;
            } else if e.tag == OTHER {
                e.perm = (mode & 7) as u16;
            } else if e.tag == group_tag {
                e.perm = ((mode >> 3) & 7) as u16;
            }
        }
    }
}

/// Extended attributes as (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// True for the two ACL attribute names.
pub fn is_acl_name(name: &[u8]) -> bool {
    name == ACCESS_XATTR || name == DEFAULT_XATTR
}

/// What a new inode gets from its parent: the mode to create it with and the ACL attributes
/// to store on it, from the parent's default ACL (`parent_default`, wire format) or, without
/// one, the umask. Symlinks get neither.
pub fn inherit(
    parent_default: Option<&[u8]>,
    mode: u32,
    umask: u32,
) -> Result<(u32, Xattrs), AclError> {
    let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
    if mode & libc::S_IFMT == libc::S_IFLNK {
        return Ok((mode, Vec::new()));
    }
    let Some(default) = parent_default else {
        return Ok((mode & !(umask & 0o777), Vec::new()));
    };
    let default = Acl::decode(default)?;
    let mut access = default.clone();
    let (mode, not_equiv) = access.create_masq(mode);
    let mut xattrs = Vec::new();
    if not_equiv {
        xattrs.push((ACCESS_XATTR.to_vec(), access.encode()));
    }
    if is_dir {
        xattrs.push((DEFAULT_XATTR.to_vec(), default.encode()));
    }
    Ok((mode, xattrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    #[test]
    fn minimal_acl_round_trips_and_is_equivalent() {
        let acl = Acl::from_mode(0o100640);
        let bytes = acl.encode();
        assert_eq!(bytes.len(), 4 + 3 * 8);
        assert_eq!(Acl::decode(&bytes).unwrap(), acl);
        assert_eq!(acl.equiv_mode(0o104000), (0o104640, true));
    }

    #[test]
    fn mask_sets_group_bits() {
        let acl = Acl::from_entries(vec![
            e(USER_OBJ, 7, UNDEFINED_ID),
            e(USER, 6, 1000),
            e(GROUP_OBJ, 7, UNDEFINED_ID),
            e(MASK, 4, UNDEFINED_ID),
            e(OTHER, 0, UNDEFINED_ID),
        ])
        .unwrap();
        assert_eq!(acl.equiv_mode(0o100000), (0o100740, false));
    }

    #[test]
    fn invalid_acls_are_refused() {
        let ok = Acl::from_mode(0o644).encode();
        assert_eq!(Acl::decode(&ok[..5]), Err(AclError::Length(5)));
        assert_eq!(Acl::decode(&ok[..4]), Err(AclError::Empty));
        let mut v1 = ok.clone();
        v1[0] = 1;
        assert_eq!(Acl::decode(&v1), Err(AclError::Version(1)));
        let mut perm = ok.clone();
        perm[6] = 8;
        assert!(matches!(Acl::decode(&perm), Err(AclError::Perm { .. })));
        let mut tag = ok.clone();
        tag[4] = 0x40;
        assert!(matches!(Acl::decode(&tag), Err(AclError::Tag { .. })));
        // Named user without a mask; other before group; two owners.
        let no_mask = vec![
            e(USER_OBJ, 7, UNDEFINED_ID),
            e(USER, 6, 1000),
            e(GROUP_OBJ, 5, UNDEFINED_ID),
            e(OTHER, 0, UNDEFINED_ID),
        ];
        assert_eq!(Acl::from_entries(no_mask), Err(AclError::Incomplete));
        let order = vec![
            e(USER_OBJ, 7, UNDEFINED_ID),
            e(OTHER, 0, UNDEFINED_ID),
            e(GROUP_OBJ, 5, UNDEFINED_ID),
        ];
        assert!(matches!(
            Acl::from_entries(order),
            Err(AclError::Order { .. })
        ));
        let twice = vec![
            e(USER_OBJ, 7, UNDEFINED_ID),
            e(USER_OBJ, 7, UNDEFINED_ID),
            e(GROUP_OBJ, 5, UNDEFINED_ID),
            e(OTHER, 0, UNDEFINED_ID),
        ];
        assert!(matches!(
            Acl::from_entries(twice),
            Err(AclError::Order { .. })
        ));
        let missing_other = vec![e(USER_OBJ, 7, UNDEFINED_ID), e(GROUP_OBJ, 5, UNDEFINED_ID)];
        assert_eq!(Acl::from_entries(missing_other), Err(AclError::Incomplete));
    }

    #[test]
    fn create_masq_intersects_both_ways() {
        // Default: u::rwx, u:1000:rwx, g::r-x, m::rwx, o::r-x; create with 0640.
        let mut acl = Acl::from_entries(vec![
            e(USER_OBJ, 7, UNDEFINED_ID),
            e(USER, 7, 1000),
            e(GROUP_OBJ, 5, UNDEFINED_ID),
            e(MASK, 7, UNDEFINED_ID),
            e(OTHER, 5, UNDEFINED_ID),
        ])
        .unwrap();
        let (mode, not_equiv) = acl.create_masq(0o100640);
        assert!(not_equiv);
        assert_eq!(mode, 0o100640);
        let perms: Vec<u16> = acl.entries().iter().map(|e| e.perm).collect();
        // The named entry and the group entry keep their bits; the mask limits them.
        assert_eq!(perms, vec![6, 7, 5, 4, 0]);
        // Without a mask the group entry is intersected; a minimal ACL stays equivalent.
        let mut min = Acl::from_mode(0o750);
        let (mode, not_equiv) = min.create_masq(0o40777);
        assert_eq!((mode, not_equiv), (0o40750, false));
    }

    #[test]
    fn chmod_rewrites_owner_mask_other() {
        let mut acl = Acl::from_entries(vec![
            e(USER_OBJ, 7, UNDEFINED_ID),
            e(USER, 7, 1000),
            e(GROUP_OBJ, 5, UNDEFINED_ID),
            e(MASK, 7, UNDEFINED_ID),
            e(OTHER, 5, UNDEFINED_ID),
        ])
        .unwrap();
        acl.chmod(0o640);
        let perms: Vec<u16> = acl.entries().iter().map(|e| e.perm).collect();
        assert_eq!(perms, vec![6, 7, 5, 4, 0]);
        let mut min = Acl::from_mode(0o777);
        min.chmod(0o751);
        assert_eq!(min, Acl::from_mode(0o751));
    }

    #[test]
    fn inherit_uses_umask_only_without_a_default_acl() {
        assert_eq!(inherit(None, 0o100666, 0o022).unwrap(), (0o100644, vec![]));
        assert_eq!(
            inherit(None, libc::S_IFLNK | 0o777, 0o022).unwrap(),
            (libc::S_IFLNK | 0o777, vec![])
        );
        let default = Acl::from_mode(0o750).encode();
        let (mode, x) = inherit(Some(&default), 0o40777, 0o077).unwrap();
        assert_eq!(mode, 0o40750);
        assert_eq!(x, vec![(DEFAULT_XATTR.to_vec(), default.clone())]);
        let (mode, x) = inherit(Some(&default), 0o100666, 0o077).unwrap();
        assert_eq!((mode, x), (0o100640, vec![]));
    }
}
