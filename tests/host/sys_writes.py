"""Run inside `damond exec` by tests/cli/test_exec.py: tries to write every writable file
under /sys/kernel/mm, /sys/kernel/debug, /sys/kernel/tracing, /sys/bus/event_source and
/sys/fs (cgroups). Each file is classified by the mount it is on: one of damond's (FUSE,
source `damond`) gets the value it already shows; any other must refuse the open with EROFS
(no write is ever attempted on it). Every mount at or below /sys must be read-only, damond's,
or exec's own tmpfs (`damond-*`). Prints `sysfs N` (sysfs files refused), `damond M`,
`refused-other K` (cgroup and other non-sysfs files refused), then one `BAD ...` line per
violation; finally stores `never` in THP enabled (damond's) and prints the read-back."""
import errno
import os

mounts = []
bad_mounts = []
with open("/proc/self/mountinfo") as f:
    for line in f:
        a = line.split()
        sep = a.index("-")
        mounts.append((a[4], a[sep + 1], a[sep + 2]))        # mountpoint, fstype, source
        if (a[4] == "/sys" or a[4].startswith("/sys/")) and "rw" in a[5].split(",") \
                and a[sep + 2] != "damond" and not a[sep + 2].startswith("damond-"):
            bad_mounts.append(f"BAD mount {a[4]}: {a[sep + 1]} ({a[sep + 2]}) writable")


def mount_of(path):
    best = None
    for mp, fstype, src in mounts:                         # the last (top) mount with the longest prefix
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best[0]):
                best = (mp, fstype, src)
    return best


counts = {"sysfs": 0, "damond": 0, "refused-other": 0}
bad = list(bad_mounts)
for base in ("/sys/kernel/mm", "/sys/kernel/debug", "/sys/kernel/tracing", "/sys/bus/event_source", "/sys/fs"):
    for dp, dns, fns in os.walk(base):
        for name in fns:
            p = os.path.join(dp, name)
            try:
                mode = os.stat(p).st_mode
            except OSError:
                continue
            if not mode & 0o222:
                continue
            mp, fstype, src = mount_of(p)
            if not (fstype.startswith("fuse") and src == "damond"):
                counts["sysfs" if fstype == "sysfs" else "refused-other"] += 1
                try:
                    fd = os.open(p, os.O_WRONLY)
                except OSError as e:
                    if e.errno != errno.EROFS:
                        bad.append(f"BAD {p}: open errno {e.errno}, not EROFS")
                    continue
                os.close(fd)
                bad.append(f"BAD {p}: a {fstype} ({src}) file opened for writing")
            else:
                counts["damond"] += 1
                try:
                    with open(p, "rb") as f:
                        cur = f.read(1 << 16).decode(errors="replace")
                except OSError:
                    cur = ""
                words = cur.split()
                val = next((w[1:-1] for w in words if w.startswith("[")), cur.strip())
                try:
                    fd = os.open(p, os.O_WRONLY)
                    try:
                        os.write(fd, (val + "\n").encode())
                    finally:
                        os.close(fd)
                except OSError:
                    pass                                    # damond refused the value: fine
print("sysfs", counts["sysfs"])
print("damond", counts["damond"])
print("refused-other", counts["refused-other"])
for b in bad:
    print(b)
thp = "/sys/kernel/mm/transparent_hugepage/enabled"
if mount_of(thp)[2] == "damond":
    with open(thp, "w") as f:
        f.write("never\n")
with open(thp) as f:
    print("thp", f.read().strip())
