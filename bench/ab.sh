#!/usr/bin/env bash
# Two pfnfs builds side by side: for a change to a hot path, the old and the new binary in
# the same run, interleaved job by job, each on a fresh direct-mode mount of a fresh pool in
# /dev/shm, with the fio job files of this directory. Prints every figure and a summary
# (min-max and median per build, and new/old of the medians).
#
# usage: bench/ab.sh OLD_PFNFS NEW_PFNFS [ROUNDS] [OUT_DIR]
#
# Environment:
#   AB_JOBS      job names (default: randread-4k randwrite-4k seqread-1m seqwrite-1m)
#   AB_NUMJOBS   fio numjobs values (default: 1 2)
#   AB_PIN       a CPU list for fio (taskset), e.g. 0: on a small VM one-job figures of
#                4 KiB requests otherwise swing between two levels with where fio lands
#   AB_MOUNT     extra mount arguments, e.g. "-o io_uring"
#   SIZE, RUNTIME  fio's file size and run length (default 1G, 5 s)
# Needs root, fio and FUSE. Every mount is unmounted before the next starts.
set -euo pipefail

old=$1
new=$2
rounds=${3:-3}
out=${4:-$(mktemp -d /tmp/pfnfs-ab.XXXXXX)}
jobs_dir=$(cd "$(dirname "$0")/jobs" && pwd)
mkdir -p "$out"
results=$out/results.txt
: >"$results"
export SIZE=${SIZE:-1G} RUNTIME=${RUNTIME:-5} DIRECT=1
pin=()
[ -n "${AB_PIN:-}" ] && pin=(taskset -c "$AB_PIN")

one() { # build-tag binary job numjobs round
    local tag=$1 bin=$2 job=$3 nj=$4 round=$5 d
    d=$(mktemp -d /dev/shm/pfnfs-ab.XXXXXX)
    mkdir "$d/mnt"
    trap 'fusermount3 -u "$d/mnt" 2>/dev/null || true; rm -rf "$d"' RETURN
    "$bin" mkfs "$d/pool" --size 2G >/dev/null
    # shellcheck disable=SC2086
    "$bin" mount "$d/pool" "$d/mnt" --mode direct ${AB_MOUNT:-} >/dev/null
    export FILENAME=$d/mnt/fio.dat NUMJOBS=$nj
    # The file written in full, as pfnfs bench's earlier jobs leave it (not fallocated).
    dd if=/dev/zero of="$FILENAME" bs=1M count=$(($(numfmt --from=iec "$SIZE") >> 20)) \
        oflag=direct status=none
    "${pin[@]}" fio --output-format=json "$jobs_dir/$job.fio" >"$d/fio.json"
    python3 - "$d/fio.json" "$round" "$job" "$nj" "$tag" >>"$results" <<'PY'
import json, sys
path, rnd, job, nj, tag = sys.argv[1:]
j = json.load(open(path))["jobs"][0]
side = j["read"] if "read" in job else j["write"]
print(rnd, job, nj, tag, round(side["iops"]), round(side["bw_bytes"] / 2**30, 3))
PY
    "$bin" umount "$d/mnt" >/dev/null
}

for r in $(seq 1 "$rounds"); do
    for job in ${AB_JOBS:-randread-4k randwrite-4k seqread-1m seqwrite-1m}; do
        for nj in ${AB_NUMJOBS:-1 2}; do
            one old "$old" "$job" "$nj" "$r"
            one new "$new" "$job" "$nj" "$r"
        done
    done
done

cat "$results"
python3 - "$results" <<'PY'
import collections, statistics, sys
figures = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rnd, job, nj, tag, iops, gib = line.split()
    figures[(job, nj, tag)].append(float(gib) if "1m" in job else float(iops) / 1000)
print(f"\n{'job':14} {'nj':>2}  {'old min-max (median)':>26}  {'new min-max (median)':>26}  new/old")
for (job, nj) in sorted({(j, n) for j, n, _ in figures}):
    o, n = figures[(job, nj, "old")], figures[(job, nj, "new")]
    unit = "GiB/s" if "1m" in job else "kIOPS"
    mo, mn = statistics.median(o), statistics.median(n)
    print(f"{job:14} {nj:>2}  {min(o):7.2f}-{max(o):7.2f} ({mo:7.2f})  "
          f"{min(n):7.2f}-{max(n):7.2f} ({mn:7.2f})  {mn / mo:6.3f} {unit}")
PY
