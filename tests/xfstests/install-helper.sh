#!/bin/sh
# Builds the pfnfs binary, installs it as /usr/local/bin/pfnfs and links
# /sbin/mount.fuse.pfnfs to it: mount(8) runs that helper for `mount -t fuse.pfnfs` (the way
# xfstests mounts with FSTYP=fuse FUSE_SUBTYP=.pfnfs) and for `mount -o remount MOUNTPOINT`
# of a pfnfs mount; without it mount(8) falls back to mount.fuse3, which runs pfnfs from
# /usr/local/bin. Builds nothing else: xfstests is yours to build.
#
# usage: tests/xfstests/install-helper.sh [--worktree] [--root DIR]
#
#   default     build a clean export of the repository's HEAD commit (git archive), so
#               uncommitted edits in the checkout are not what you test
#   --worktree  build the checkout as it is, uncommitted edits included
#   --root DIR  install into DIR/bin instead of /usr/local/bin (and leave /sbin alone:
#               the command to link the helper is printed)
#
# Environment: CARGO_TARGET_DIR (default /tmp/pfnfs-target) keeps this build apart from
# the checkout's target/; PFNFS_SRC_DIR (default /tmp/pfnfs-src) is where HEAD is exported.
# Needs cargo, git and (as root, to install and mount) fuse3.
set -eu

root=/usr/local
from=head
while [ $# -gt 0 ]; do
    case $1 in
    --worktree) from=worktree ;;
    --root) root=$2; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "install-helper.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

repo=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/pfnfs-target}

if [ "$from" = head ]; then
    src=${PFNFS_SRC_DIR:-/tmp/pfnfs-src}
    rm -rf "$src"
    mkdir -p "$src"
    git -C "$repo" archive HEAD | tar -x -C "$src"
    echo "install-helper: building pfnfs from HEAD $(git -C "$repo" rev-parse --short HEAD) (exported to $src)"
else
    src=$repo
    echo "install-helper: building pfnfs from the work tree $repo"
fi

cargo install --locked --path "$src/mount-tool" --root "$root" --force

echo "install-helper: installed $root/bin/pfnfs"
if [ "$root" = /usr/local ]; then
    ln -sf "$root/bin/pfnfs" /sbin/mount.fuse.pfnfs
    echo "install-helper: linked /sbin/mount.fuse.pfnfs -> $root/bin/pfnfs"
else
    echo "install-helper: to make it mount(8)'s helper: ln -sf $root/bin/pfnfs /sbin/mount.fuse.pfnfs"
fi
