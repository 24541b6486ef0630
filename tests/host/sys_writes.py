"""Run inside `damond exec` by tests/cli/test_exec.py: tries to write every writable file
under /sys/kernel/mm and /sys/kernel/debug. Each write stores the value the file already
shows (so a guard failure could not change anything), and each file is classified by the
mount it is on: a sysfs file must refuse the open with EROFS, any other must be damond's
(FUSE, source `damond`). Prints `sysfs N`, `damond M`, then one `BAD ...` line per
violation; finally stores `never` in THP enabled (damond's) and prints the read-back."""
import errno
import os

mounts = []
with open("/proc/self/mountinfo") as f:
    for line in f:
        a = line.split()
        sep = a.index("-")
        mounts.append((a[4], a[sep + 1], a[sep + 2]))        # mountpoint, fstype, source


def mount_of(path):
    best = None
    for mp, fstype, src in mounts:                         # the last (top) mount with the longest prefix
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best[0]):
                best = (mp, fstype, src)
    return best


counts = {"sysfs": 0, "damond": 0}
bad = []
for base in ("/sys/kernel/mm", "/sys/kernel/debug"):
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
            try:
                with open(p) as f:
                    cur = f.read()
            except OSError:
                cur = ""
            words = cur.split()
            val = next((w[1:-1] for w in words if w.startswith("[")), cur.strip())
            if fstype == "sysfs":
                counts["sysfs"] += 1
                try:
                    fd = os.open(p, os.O_WRONLY)
                except OSError as e:
                    if e.errno != errno.EROFS:
                        bad.append(f"BAD {p}: open errno {e.errno}, not EROFS")
                    continue
                os.close(fd)
                bad.append(f"BAD {p}: a sysfs file opened for writing")
            elif fstype.startswith("fuse") and src == "damond":
                counts["damond"] += 1
                try:
                    fd = os.open(p, os.O_WRONLY)
                    try:
                        os.write(fd, (val + "\n").encode())
                    finally:
                        os.close(fd)
                except OSError:
                    pass                                    # damond refused the value: fine
            else:
                bad.append(f"BAD {p}: on {fstype} ({src}), neither refused sysfs nor damond")
print("sysfs", counts["sysfs"])
print("damond", counts["damond"])
for b in bad:
    print(b)
thp = "/sys/kernel/mm/transparent_hugepage/enabled"
if mount_of(thp)[2] == "damond":
    with open(thp, "w") as f:
        f.write("never\n")
with open(thp) as f:
    print("thp", f.read().strip())
