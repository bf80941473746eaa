#!/usr/bin/env python3
"""uvmbench driver: uvmrt beside Linux kernel swap, RAM and the device limit.

Runs bench/uvmbench and bench/faultlat (from an existing build directory) on
four systems, runs fio for the device limit, and writes results.json,
report.md and plot.png.  See bench/README.md.  Python 3 standard library only.

Systems:
  ram       uvmbench --system=plain with no memory limit, kernel swap off.
  kswap     uvmbench --system=plain in a memory cgroup limited to B, with a
            swap file of the same size as uvmrt's, on the same filesystem,
            enabled with swapon for that run only.
  uvmrt     uvmbench --system=uvmrt with budget B and its swap file in the
            same directory; kernel swap off.
  uvmrt-it  the same as uvmrt, plus --in-thread-faults: faults are resolved
            on the touching thread, in a SIGBUS handler.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_VERIFY = 3
EXIT_INTERRUPTED = 130

CHILD_EXIT_SETUP = 2
CHILD_EXIT_VERIFY = 3

PAGE = 4096
MiB = 1 << 20
GiB = 1 << 30

# Attempts at a kernel-swap repetition that the OOM killer ends.
MAX_ATTEMPTS = 3

# CPUs used on average by other processes during a run above which the run
# is reported as disturbed.
BUSY_CPUS = 0.25

SYSTEM_NAMES = {"ram": "RAM", "kswap": "kernel swap", "uvmrt": "uvmrt", "uvmrt-it": "uvmrt in-thread"}

# The systems that run the runtime (uvmbench --system=uvmrt), and the short
# names their report columns use.
UVMRT_SYSTEMS = ("uvmrt", "uvmrt-it")
SHORT_NAMES = {"uvmrt": "uvmrt", "uvmrt-it": "in-thread", "kswap": "kswap"}
# The systems that page, in the order of their paging-bandwidth columns.
PAGER_SYSTEMS = ("uvmrt", "uvmrt-it", "kswap")
# faultlat's cases, in the order the report and the plot list them.
LATENCY_CASES = ("native", "zero-fill", "zero-fill-it", "swap-in", "swap-in-it", "reactivation",
                 "reactivation-it", "kernel-swap-in", "kernel-minor")

# Mode defaults; every one can be overridden on the command line.
MODES = {
    "smoke": dict(budget=8 * MiB, region_mult=4.0, reps=1, threads=[1, 2], ops=0,
                  samples=300, fio_runtime=1, fio_size=32 * MiB, latency_reps=1),
    "quick": dict(budget=64 * MiB, region_mult=4.0, reps=3, threads=[1, 2], ops=0,
                  samples=5000, fio_runtime=3, fio_size=256 * MiB, latency_reps=1),
    "full": dict(budget=1 * GiB, region_mult=4.0, reps=3, threads=None, ops=0,
                 samples=20000, fio_runtime=10, fio_size=4 * GiB, latency_reps=3),
}


class Interrupted(Exception):
    pass


class VerifyFailed(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def warn(msg):
    log("uvmbench: WARNING: " + msg)


def parse_size(s):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError("bad size %r (use e.g. 64M, 1G)" % s)
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    v = int(float(m.group(1)) * mult)
    if v <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return v


def parse_size_or_zero(s):
    return 0 if s.strip() == "0" else parse_size(s)


def parse_int_list(s):
    try:
        out = [int(x) for x in s.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError("bad list %r" % s)
    if not out or min(out) <= 0:
        raise argparse.ArgumentTypeError("bad list %r" % s)
    return out


def fmt_size(n):
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= div and n % div == 0:
            return "%d %s" % (n // div, unit)
    if n >= GiB:
        return "%.2f GiB" % (n / GiB)
    return "%.1f MiB" % (n / MiB)


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def which(prog):
    return shutil.which(prog, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin")


def run_quiet(cmd):
    """Runs a command; returns (rc, combined output)."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return p.returncode, p.stdout
    except OSError as e:
        return 127, str(e)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---------------------------------------------------------------------------
# Host facts.

def mount_of(path):
    """(mount point, fstype, source) of the filesystem holding path."""
    path = os.path.realpath(path)
    best = ("/", "unknown", "unknown")
    for line in read_text("/proc/self/mountinfo").splitlines():
        parts = line.split()
        try:
            sep = parts.index("-")
        except ValueError:
            continue
        mp = parts[4].replace("\\040", " ")
        fstype, source = parts[sep + 1], parts[sep + 2]
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best[0]):
            best = (mp, fstype, source)
    return best


def host_swaps():
    """Active swap areas: list of (path, size_kib, used_kib)."""
    out = []
    for line in read_text("/proc/swaps").splitlines()[1:]:
        p = line.split()
        if len(p) >= 4:
            out.append((p[0].replace("\\040", " "), int(p[2]), int(p[3])))
    return out


def host_cpu_seconds():
    """(busy, steal): CPU time the whole host has spent running tasks so far,
    and the time the hypervisor has taken from this guest (from /proc/stat)."""
    f = read_text("/proc/stat").splitlines()[0].split()
    # user nice system idle iowait irq softirq steal ...
    ticks = [int(x) for x in f[1:]] + [0] * 8
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:7]) - ticks[3] - ticks[4]) / hz, ticks[7] / hz


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def meminfo():
    m = {}
    for line in read_text("/proc/meminfo").splitlines():
        k, _, v = line.partition(":")
        m[k] = int(v.split()[0]) * 1024 if v.split() else 0
    return m


def lscpu():
    out = {}
    rc, text = run_quiet(["lscpu"])
    if rc == 0:
        for line in text.splitlines():
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def disk_of(source):
    """Describes the block device behind a mount source such as /dev/vda1."""
    if not source.startswith("/dev/"):
        return {"device": source}
    info = {"device": source}
    rc, text = run_quiet(["lsblk", "-ndo", "PKNAME", source])
    parent = text.strip() if rc == 0 and text.strip() else os.path.basename(source)
    rc, text = run_quiet(["lsblk", "-J", "-d", "-o", "NAME,MODEL,SIZE,ROTA,TRAN,TYPE", "/dev/" + parent])
    if rc == 0:
        try:
            d = json.loads(text)["blockdevices"][0]
            info.update({k: d.get(k) for k in ("name", "model", "size", "rota", "tran", "type")})
        except (ValueError, KeyError, IndexError):
            pass
    sched = read_text("/sys/block/%s/queue/scheduler" % parent).strip()
    if sched:
        info["scheduler"] = sched
    return info


def machine_description(swap_dir):
    cpu = lscpu()
    mi = meminfo()
    mp, fstype, source = mount_of(swap_dir)
    os_name = ""
    for line in read_text("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
    thp = read_text("/sys/kernel/mm/transparent_hugepage/enabled").strip()
    return {
        "cpu_model": cpu.get("Model name", platform.processor()),
        "cpus": os.cpu_count(),
        "threads_per_core": cpu.get("Thread(s) per core", ""),
        "hypervisor": cpu.get("Hypervisor vendor", ""),
        "ram_bytes": mi.get("MemTotal", 0),
        "kernel": platform.release(),
        "os": os_name,
        "swap_dir": os.path.realpath(swap_dir),
        "swap_fs": fstype,
        "swap_mount": mp,
        "disk": disk_of(source),
        "thp": re.search(r"\[(\w+)\]", thp).group(1) if "[" in thp else thp,
        "swappiness": read_text("/proc/sys/vm/swappiness").strip(),
        "page_cluster": read_text("/proc/sys/vm/page-cluster").strip(),
        "zswap": read_text("/sys/module/zswap/parameters/enabled").strip() or "absent",
        "host_swap": [s[0] for s in host_swaps()],
        "fio": run_quiet(["fio", "--version"])[1].strip() if which("fio") else "absent",
    }


# ---------------------------------------------------------------------------
# Memory cgroups.

class Cgroup:
    """One memory cgroup, v2 or v1, that limits a child to `limit` bytes."""

    def __init__(self, path, version, limit, allow_zswap):
        self.path = path
        self.version = version
        os.mkdir(path)
        try:
            if version == 2:
                write_text(os.path.join(path, "memory.max"), str(limit))
                swap_max = os.path.join(path, "memory.swap.max")
                if os.path.exists(swap_max):
                    write_text(swap_max, "max")
                zswap_max = os.path.join(path, "memory.zswap.max")
                if not allow_zswap and os.path.exists(zswap_max):
                    write_text(zswap_max, "0")
            else:
                write_text(os.path.join(path, "memory.limit_in_bytes"), str(limit))
                # memory.memsw.limit_in_bytes stays unlimited: swap is not capped.
        except OSError:
            self.remove()
            raise

    def procs_file(self):
        return os.path.join(self.path, "cgroup.procs")

    def stats(self):
        """Peak usage and OOM kills, where the kernel reports them."""
        s = {}
        if self.version == 2:
            peak = read_text(os.path.join(self.path, "memory.peak")).strip()
            if peak.isdigit():
                s["peak_bytes"] = int(peak)
            for line in read_text(os.path.join(self.path, "memory.events")).splitlines():
                k, _, v = line.partition(" ")
                if k in ("max", "oom", "oom_kill"):
                    s[k] = int(v)
        else:
            peak = read_text(os.path.join(self.path, "memory.max_usage_in_bytes")).strip()
            if peak.isdigit():
                s["peak_bytes"] = int(peak)
            fail = read_text(os.path.join(self.path, "memory.failcnt")).strip()
            if fail.isdigit():
                s["failcnt"] = int(fail)
            for line in read_text(os.path.join(self.path, "memory.oom_control")).splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    s["oom_kill"] = int(v)
        return s

    def remove(self):
        """Kills what is left inside and removes the cgroup."""
        if not os.path.isdir(self.path):
            return
        for _ in range(50):
            pids = [int(p) for p in read_text(self.procs_file()).split()]
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        warn("could not remove cgroup %s; remove it with: rmdir %s" % (self.path, self.path))


def cgroup_setup(parent_override):
    """Where to make memory cgroups: (version, parent dir) or (None, reason)."""
    if os.geteuid() != 0:
        return None, "not running as root (creating a memory cgroup and swapon need root)"
    if parent_override:
        if os.path.exists(os.path.join(parent_override, "cgroup.controllers")):
            return (2, parent_override), None
        if os.path.exists(os.path.join(parent_override, "memory.limit_in_bytes")):
            return (1, parent_override), None
        return None, "--cgroup-parent %s is not a memory cgroup" % parent_override
    # cgroup v2 with the memory controller at /sys/fs/cgroup.
    root = "/sys/fs/cgroup"
    if "memory" in read_text(os.path.join(root, "cgroup.controllers")).split():
        sub = os.path.join(root, "cgroup.subtree_control")
        if "memory" not in read_text(sub).split():
            try:
                write_text(sub, "+memory")
            except OSError as e:
                return None, "cannot enable the memory controller in %s: %s" % (sub, e)
        return (2, root), None
    # cgroup v1: the memory hierarchy, below this process's own cgroup so that
    # limits set on it still apply.
    for line in read_text("/proc/self/mountinfo").splitlines():
        parts = line.split()
        sep = parts.index("-") if "-" in parts else -1
        if sep < 0 or parts[sep + 1] != "cgroup":
            continue
        if "memory" not in parts[sep + 3].split(","):
            continue
        mnt = parts[4]
        own = "/"
        for cl in read_text("/proc/self/cgroup").splitlines():
            _, ctrls, path = cl.split(":", 2)
            if "memory" in ctrls.split(","):
                own = path
        parent = os.path.normpath(mnt + "/" + own)
        if os.path.exists(os.path.join(parent, "memory.limit_in_bytes")):
            return (1, parent), None
    return None, "no memory cgroup controller (neither cgroup v2 memory nor v1 memory is mounted)"


# ---------------------------------------------------------------------------
# The kernel swap file.

class SwapFile:
    def __init__(self, path, size):
        self.path = path
        self.size = size
        self.active = False
        self._create(zero=False)

    def _create(self, zero):
        if os.path.exists(self.path):
            os.unlink(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if mount_of(self.path)[1] == "btrfs":
                run_quiet(["chattr", "+C", self.path])  # swap files on btrfs must be NOCOW
            if zero:
                chunk = b"\0" * MiB
                left = self.size
                while left > 0:
                    left -= os.write(fd, chunk[:min(left, MiB)])
                os.fsync(fd)
            else:
                os.posix_fallocate(fd, 0, self.size)
        finally:
            os.close(fd)
        rc, out = run_quiet([which("mkswap") or "mkswap", self.path])
        if rc != 0:
            raise RuntimeError("mkswap %s failed: %s" % (self.path, out.strip()))
        self.zeroed = zero

    def on(self):
        rc, out = run_quiet([which("swapon") or "swapon", "-p", "32767", self.path])
        if rc != 0 and not self.zeroed:
            # Some filesystems refuse fallocated swap files: write it out.
            log("uvmbench: swapon refused the fallocated file (%s); writing it out in full" % out.strip())
            self._create(zero=True)
            rc, out = run_quiet([which("swapon") or "swapon", "-p", "32767", self.path])
        if rc != 0:
            raise RuntimeError("swapon %s failed: %s" % (self.path, out.strip()))
        self.active = True

    def off(self):
        if self.is_active():
            rc, out = run_quiet([which("swapoff") or "swapoff", self.path])
            if rc != 0:
                warn("swapoff %s failed: %s" % (self.path, out.strip()))
                return False
        self.active = False
        return True

    def is_active(self):
        real = os.path.realpath(self.path)
        return any(os.path.realpath(p) == real for p, _, _ in host_swaps())


def clean_stale(cg_parent, swap_dir):
    """Removes leftovers of earlier runs that were killed with SIGKILL."""
    for path, _, _ in host_swaps():
        m = re.search(r"/uvmbench-work-(\d+)/kswap\.img$", path)
        if m and not pid_alive(int(m.group(1))):
            log("uvmbench: removing a stale swap file from an earlier run: %s" % path)
            run_quiet([which("swapoff") or "swapoff", path])
            try:
                os.unlink(path)
            except OSError:
                pass
    if cg_parent and os.path.isdir(cg_parent):
        for name in os.listdir(cg_parent):
            m = re.fullmatch(r"uvmbench-(\d+)-\d+", name)
            if m and not pid_alive(int(m.group(1))):
                log("uvmbench: removing a stale cgroup from an earlier run: %s" % name)
                try:
                    os.rmdir(os.path.join(cg_parent, name))
                except OSError as e:
                    warn("could not remove %s: %s" % (name, e))
    for name in os.listdir(swap_dir):
        m = re.fullmatch(r"uvmbench-work-(\d+)", name)
        if m and not pid_alive(int(m.group(1))):
            log("uvmbench: removing a stale work directory from an earlier run: %s"
                % os.path.join(swap_dir, name))
            shutil.rmtree(os.path.join(swap_dir, name), ignore_errors=True)


# ---------------------------------------------------------------------------
# Running the programs.

class Harness:
    def __init__(self, args):
        self.args = args
        self.child = None
        self.cgroups = []
        self.swap = None
        self.workdir = None
        self.cg = None  # (version, parent) or None
        self.cg_seq = 0
        self.notes = []
        self.failures = []
        self.runs = []
        self.latency_runs = []
        self.fio = {}
        self.last_other_cpus = 0.0
        self.last_steal_cpus = 0.0
        self.kswap_limit = args.budget
        self.overhead = None
        self.step = 0
        self.steps = 0
        self.t_start = time.time()

    # -- cleanup -------------------------------------------------------------

    def cleanup(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # finish cleaning up first
        if self.child and self.child.poll() is None:
            try:
                self.child.kill()
                self.child.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for cg in self.cgroups:
            cg.remove()
        self.cgroups = []
        if self.swap:
            self.swap.off()
            if self.swap.is_active():
                warn("swap file %s is still active; run: swapoff %s && rm %s"
                     % (self.swap.path, self.swap.path, self.swap.path))
            else:
                try:
                    os.unlink(self.swap.path)
                except OSError:
                    pass
            self.swap = None
        if self.workdir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
            if os.path.exists(self.workdir):
                warn("could not remove %s" % self.workdir)

    # -- progress ------------------------------------------------------------

    def progress(self, what):
        self.step += 1
        el = time.time() - self.t_start
        eta = ""
        if self.step > 1:
            per = el / (self.step - 1)
            eta = ", about %ds left" % int(per * (self.steps - self.step + 1))
        log("[%d/%d %ds%s] %s" % (self.step, self.steps, int(el), eta, what))

    # -- child processes -----------------------------------------------------

    def spawn(self, cmd, cgroup=None, label=""):
        """Runs cmd (in cgroup, if given), echoing phase results as they come.

        Returns (rc, list of parsed JSON lines)."""
        if cgroup:
            cmd = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', cgroup.procs_file()] + cmd
        lines = []
        raw = []
        (busy0, steal0), t0, own0 = host_cpu_seconds(), time.time(), children_cpu_seconds()
        self.child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            for line in self.child.stdout:
                raw.append(line)
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                lines.append(rec)
                if rec.get("type") == "phase":
                    w = rec["workload"] + (" T=%d" % rec["threads"] if rec["workload"] == "rand-rmw" else "")
                    log("      %-14s %8.3fs  %10.0f ops/s" % (w, rec["elapsed_s"], rec["ops_per_s"]))
                elif rec.get("type") == "latency":
                    log("      %-16s p50 %8.2fus  p99 %8.2fus  (%d samples)"
                        % (rec["case"], rec["p50_us"], rec["p99_us"], rec["samples"]))
            rc = self.child.wait()
            wall = time.time() - t0
            busy1, steal1 = host_cpu_seconds()
            other = (busy1 - busy0) - (children_cpu_seconds() - own0)
            self.last_other_cpus = max(0.0, other / wall) if wall > 0 else 0.0
            self.last_steal_cpus = max(0.0, (steal1 - steal0) / wall) if wall > 0 else 0.0
        finally:
            if self.child.poll() is None:
                self.child.kill()
                self.child.wait()
            self.child = None
        if self.args.out:
            rawdir = os.path.join(self.args.out, "raw")
            os.makedirs(rawdir, exist_ok=True)
            write_text(os.path.join(rawdir, label + ".jsonl"), "".join(raw))
        return rc, lines

    def new_cgroup(self, limit=None):
        version, parent = self.cg
        self.cg_seq += 1
        path = os.path.join(parent, "uvmbench-%d-%d" % (os.getpid(), self.cg_seq))
        cg = Cgroup(path, version, self.kswap_limit if limit is None else limit, self.args.allow_zswap)
        self.cgroups.append(cg)
        return cg

    def drop_cgroup(self, cg):
        cg.remove()
        self.cgroups.remove(cg)

    def check_child(self, rc, what):
        if rc == CHILD_EXIT_VERIFY:
            raise VerifyFailed("%s: DATA VERIFICATION FAILED (see the message above)" % what)
        if rc < 0 and -rc == signal.SIGINT:
            raise Interrupted()
        if rc != 0:
            reason = "exit status %d" % rc if rc >= 0 else "killed by signal %d" % -rc
            self.failures.append("%s failed (%s)" % (what, reason))
            log("uvmbench: ERROR: %s failed (%s)" % (what, reason))
            return False
        return True

    # -- measurements ----------------------------------------------------------

    def bench_cmd(self, system):
        """uvmbench's command line for a system ("plain" for ram or kswap)."""
        a = self.args
        prog = "uvmrt" if system in UVMRT_SYSTEMS else "plain"
        cmd = [a.uvmbench, "--system=" + prog, "--workload=all",
               "--budget=%d" % a.budget, "--region-mult=%g" % a.region_mult,
               "--threads=" + ",".join(map(str, a.threads)),
               "--cluster-pages=%d" % a.cluster_pages, "--seed=%d" % a.seed]
        if a.ops:
            cmd.append("--ops=%d" % a.ops)
        if not a.no_progress:
            cmd.append("--progress")
        if prog == "uvmrt":
            cmd += ["--swap-dir=" + self.uvmrt_swap_dir(), "--swap-bytes=%d" % self.swap_bytes]
            if a.allow_buffered_swap:
                cmd.append("--allow-buffered-swap")
            if system == "uvmrt-it":
                cmd.append("--in-thread-faults")
        return cmd

    def uvmrt_swap_dir(self):
        d = os.path.join(self.workdir, "uvmrt")
        os.makedirs(d, exist_ok=True)
        return d

    def measure_overhead(self):
        """Sets the kernel-swap cgroup limit to B plus what the same process
        needs besides the region's data, measured: uvmrt keeps B of region
        data resident on top of its process's own memory, so the kernel gets
        the same."""
        a = self.args
        if a.cgroup_slack is not None:
            self.overhead = a.cgroup_slack
        else:
            self.progress("kernel swap: measuring the process's memory outside its region")
            cg = self.new_cgroup(limit=1 << 50)
            try:
                cmd = self.bench_cmd("plain")
                cmd = [c for c in cmd if not c.startswith("--workload=")] + ["--workload=none"]
                rc, _ = self.spawn(cmd, cg, "kswap-overhead")
                peak = cg.stats().get("peak_bytes")
            finally:
                self.drop_cgroup(cg)
            if rc != 0 or not peak:
                raise RuntimeError("could not measure the process's memory outside its region "
                                   "(exit %d, peak %s)" % (rc, peak))
            self.overhead = peak
        self.overhead = (self.overhead + PAGE - 1) // PAGE * PAGE
        self.kswap_limit = a.budget + self.overhead
        log("      cgroup limit = B + %s = %s" % (fmt_size(self.overhead) if self.overhead % MiB == 0
                                                   else "%.1f MiB" % (self.overhead / MiB),
                                                   "%.1f MiB" % (self.kswap_limit / MiB)))

    def run_workloads(self, system, rep, attempt=1):
        label = "%s-rep%d%s" % (system, rep, "" if attempt == 1 else "-try%d" % attempt)
        prog = "uvmrt" if system in UVMRT_SYSTEMS else "plain"
        where = {"ram": ", no limit, kernel swap off",
                 "kswap": ", in a memory cgroup of %.1f MiB with kernel swap on" % (self.kswap_limit / MiB),
                 "uvmrt": ", budget %s, kernel swap off" % fmt_size(self.args.budget),
                 "uvmrt-it": " --in-thread-faults, budget %s, kernel swap off" % fmt_size(self.args.budget),
                 }[system]
        self.progress("rep %d/%d%s: %s (uvmbench --system=%s%s)" % (
            rep, self.args.reps, "" if attempt == 1 else ", attempt %d" % attempt, SYSTEM_NAMES[system],
            prog, where))
        cg = None
        t0 = time.time()
        try:
            if system == "kswap":
                cg = self.new_cgroup()
                self.swap.on()
            rc, lines = self.spawn(self.bench_cmd(system), cg, label)
            cgstats = cg.stats() if cg else {}
        finally:
            if system == "kswap":
                self.swap.off()
            if cg:
                self.drop_cgroup(cg)
        what = "%s rep %d" % (SYSTEM_NAMES[system], rep)
        oom = bool(cgstats.get("oom_kill"))
        if oom:
            # The kernel could not keep the process within its limit: a fact
            # about kernel swap on this host, reported; the rep is tried again.
            msg = ("%s: the kernel's OOM killer killed the workload in its memory cgroup (attempt %d)"
                   % (what, attempt))
            self.notes.append(msg)
            warn(msg)
            ok = False
        else:
            ok = self.check_child(rc, what)
        self.runs.append({
            "system": system, "rep": rep, "attempt": attempt, "ok": ok, "exit": rc, "oom_kill": oom,
            "wall_s": time.time() - t0,
            "phases": [r for r in lines if r.get("type") == "phase"],
            "other": [r for r in lines if r.get("type") in ("prepare", "verify", "done", "config")],
            "cgroup": cgstats,
            "other_cpus": round(self.last_other_cpus, 3),
            "steal_cpus": round(self.last_steal_cpus, 3),
        })
        if oom:
            if attempt < MAX_ATTEMPTS:
                self.steps += 1
                return self.run_workloads(system, rep, attempt + 1)
            if self.args.mode != "smoke":
                self.failures.append("%s: OOM-killed %d times" % (what, attempt))
        return ok

    def run_latency(self, rep, have_uvmrt, have_kswap):
        a = self.args
        common = ["--budget=%d" % a.budget, "--region-mult=%g" % a.region_mult,
                  "--samples=%d" % a.samples, "--seed=%d" % (a.seed + rep)]
        self.progress("rep %d: fault latency (native%s%s)" % (
            rep, ", uvmrt" if have_uvmrt else "", ", kernel swap" if have_kswap else ""))
        rc, lines = self.spawn([a.faultlat, "--system=plain", "--cases=native"] + common,
                               None, "faultlat-native-rep%d" % rep)
        if self.check_child(rc, "faultlat native"):
            self.latency_runs += lines
        if have_uvmrt:
            cmd = [a.faultlat, "--system=uvmrt", "--cases=zero-fill,swap-in,reactivation",
                   "--swap-dir=" + self.uvmrt_swap_dir(), "--cluster-pages=%d" % a.cluster_pages] + common
            if a.allow_buffered_swap:
                cmd.append("--allow-buffered-swap")
            rc, lines = self.spawn(cmd, None, "faultlat-uvmrt-rep%d" % rep)
            if self.check_child(rc, "faultlat uvmrt"):
                self.latency_runs += lines
            if "uvmrt-it" in self.systems_run:
                rc, lines = self.spawn(cmd + ["--in-thread-faults"], None, "faultlat-uvmrt-it-rep%d" % rep)
                if self.check_child(rc, "faultlat uvmrt in-thread"):
                    self.latency_runs += lines
        if have_kswap:
            cg = self.new_cgroup()
            try:
                self.swap.on()
                rc, lines = self.spawn([a.faultlat, "--system=plain",
                                        "--cases=kernel-swap-in,kernel-minor"] + common,
                                       cg, "faultlat-kswap-rep%d" % rep)
                cg_oom = bool(cg.stats().get("oom_kill"))
            finally:
                self.swap.off()
                self.drop_cgroup(cg)
            if cg_oom:
                msg = "faultlat kernel swap rep %d: the kernel's OOM killer killed it in its cgroup" % rep
                self.notes.append(msg)
                warn(msg)
            elif self.check_child(rc, "faultlat kernel swap"):
                self.latency_runs += lines

    def run_fio(self):
        a = self.args
        fio = which("fio")
        if not fio:
            self.notes.append("fio is not installed (apt-get install fio): no device limit measured")
            return
        path = os.path.join(self.workdir, "fio.dat")
        cbs = a.cluster_pages * PAGE
        jobs = [
            ("seq-write", "write", cbs, 32),
            ("seq-read", "read", cbs, 32),
            ("rand-read-4k-qd1", "randread", PAGE, 1),
            ("rand-read-4k-qd32", "randread", PAGE, 32),
        ]
        # Write the whole file once first, so that no read below hits an
        # unwritten extent (which a filesystem answers with zeros, no I/O).
        self.progress("fio: writing the %s test file" % fmt_size(a.fio_size))
        p = subprocess.run([fio, "--name=layout", "--filename=" + path, "--size=%d" % a.fio_size,
                            "--ioengine=io_uring", "--direct=1", "--rw=write", "--bs=1m", "--iodepth=16",
                            "--end_fsync=1", "--output-format=json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode < 0 and -p.returncode == signal.SIGINT:
            raise Interrupted()
        if p.returncode != 0:
            msg = (p.stderr or p.stdout).strip().splitlines()
            self.failures.append("fio could not write its test file: %s" % (msg[-1] if msg else p.returncode))
            log("uvmbench: ERROR: fio failed:\n%s" % p.stderr.strip())
            return
        for name, rw, bs, qd in jobs:
            self.progress("fio %s: bs=%s iodepth=%d, %ds" % (name, fmt_size(bs), qd, a.fio_runtime))
            cmd = [fio, "--name=" + name, "--filename=" + path, "--size=%d" % a.fio_size,
                   "--ioengine=io_uring", "--direct=1", "--rw=" + rw, "--bs=%d" % bs,
                   "--iodepth=%d" % qd, "--numjobs=1", "--time_based", "--runtime=%d" % a.fio_runtime,
                   "--randrepeat=0", "--lat_percentiles=1", "--output-format=json"]
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if p.returncode < 0 and -p.returncode == signal.SIGINT:
                raise Interrupted()
            if p.returncode != 0:
                msg = (p.stderr or p.stdout).strip().splitlines()
                self.failures.append("fio %s failed: %s" % (name, msg[-1] if msg else p.returncode))
                log("uvmbench: ERROR: fio %s failed:\n%s" % (name, p.stderr.strip()))
                continue
            try:
                j = json.loads(p.stdout[p.stdout.index("{"):])
                job = j["jobs"][0]
                side = job["write"] if rw == "write" else job["read"]
                # lat: from submission to completion, as an application sees it.
                pct = side.get("lat_ns", {}).get("percentile", {}) or \
                    side.get("clat_ns", {}).get("percentile", {})
                r = {"rw": rw, "bs": bs, "iodepth": qd,
                     "bw_bytes_s": side["bw_bytes"], "iops": side["iops"],
                     "lat_p50_us": pct.get("50.000000", 0) / 1000.0,
                     "lat_p99_us": pct.get("99.000000", 0) / 1000.0,
                     "lat_mean_us": side.get("lat_ns", {}).get("mean", 0) / 1000.0}
            except (ValueError, KeyError, IndexError) as e:
                self.failures.append("fio %s: unreadable output (%s)" % (name, e))
                continue
            self.fio[name] = r
            log("      %-18s %9.1f MiB/s %9.0f IOPS  p50 %.1fus p99 %.1fus" % (
                name, r["bw_bytes_s"] / MiB, r["iops"], r["lat_p50_us"], r["lat_p99_us"]))
        try:
            os.unlink(path)
        except OSError:
            pass

    def self_test(self):
        """Proves that verification catches corruption: must exit 3."""
        self.progress("self-test: a corrupted page must fail verification")
        cmd = [self.args.uvmbench, "--system=plain", "--budget=1M", "--region-mult=2",
               "--workload=seq-write,seq-read", "--inject-error"]
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != CHILD_EXIT_VERIFY or "DATA MISMATCH" not in p.stderr:
            self.failures.append("self-test: uvmbench --inject-error exited %d, not %d"
                                 % (p.returncode, CHILD_EXIT_VERIFY))
        else:
            log("      ok: corruption detected (exit %d)" % p.returncode)

    # -- main ------------------------------------------------------------------

    def main(self):
        a = self.args
        self.machine = machine_description(a.swap_dir)
        self.swap_bytes = int(a.region_mult * (a.budget // PAGE)) * PAGE
        region = self.swap_bytes

        # What can run here.
        feats = subprocess.run([a.uvmbench, "--features"], stdout=subprocess.PIPE, text=True)
        # have_uvmrt: some system that runs the runtime is wanted and built.
        wanted = [s for s in UVMRT_SYSTEMS if s in a.systems]
        have_uvmrt = bool(wanted)
        if have_uvmrt and '"uvmrt":true' not in feats.stdout.replace(" ", ""):
            have_uvmrt = False
            msg = ("%s: skipped: %s was built without the runtime (the uvmrt target did not "
                   "exist when it was configured)" % (" and ".join(SYSTEM_NAMES[s] for s in wanted),
                                                      a.uvmbench))
            self.notes.append(msg)
            warn(msg)
            if a.require_uvmrt:
                self.failures.append(msg)
        have_in_thread = have_uvmrt and "uvmrt-it" in a.systems
        if have_in_thread and platform.machine() not in ("x86_64", "amd64"):
            have_in_thread = False
            msg = ("uvmrt in-thread: skipped: the runtime resolves faults in-thread on x86-64 only "
                   "(this host is %s)" % platform.machine())
            self.notes.append(msg)
            warn(msg)
        have_kswap = "kswap" in a.systems
        self.cg, reason = cgroup_setup(a.cgroup_parent)
        if have_kswap:
            if not self.cg:
                have_kswap = False
                msg = "kernel swap: skipped: " + reason
                self.notes.append(msg)
                warn(msg)
            elif not which("swapon") or not which("mkswap"):
                have_kswap = False
                msg = "kernel swap: skipped: swapon/mkswap not found (util-linux)"
                self.notes.append(msg)
                warn(msg)
        clean_stale(self.cg[1] if self.cg else None, a.swap_dir)

        if self.machine["host_swap"]:
            msg = ("the host already has swap enabled (%s): it stays on for every measurement, "
                   "and RAM and uvmrt runs (both modes) may be disturbed by it; the kernel-swap runs add "
                   "their own swap file at the highest priority" % ", ".join(self.machine["host_swap"]))
            self.notes.append(msg)
            warn(msg)
        else:
            log("uvmbench: the host has no swap enabled; kernel swap is on only during "
                "kernel-swap runs")
        if self.machine["zswap"] in ("Y", "1") and have_kswap:
            msg = "zswap is enabled: the kernel compresses swapped pages in RAM before they reach the disk"
            if self.cg and self.cg[0] == 2 and not a.allow_zswap:
                msg += " (turned off in the benchmark cgroup with memory.zswap.max=0)"
            self.notes.append(msg)
            warn(msg)

        load1 = float(read_text("/proc/loadavg", "0").split()[0])
        if load1 > 0.5 * (os.cpu_count() or 1):
            warn("the host is busy (load average %.2f on %d CPUs): results will be disturbed"
                 % (load1, os.cpu_count() or 1))
        fs = self.machine["swap_fs"]
        if fs in ("tmpfs", "ramfs", "devtmpfs", "overlay", "squashfs", "zram"):
            raise SystemExit("uvmbench: the swap directory %s is on %s, which is not a disk; "
                             "pass --swap-dir on a real filesystem" % (a.swap_dir, fs))
        # uvmrt's swap file is an unnamed file that goes with its process: the
        # uvmrt runs, one after another, need room for one at a time.
        need = region * ((1 if have_kswap else 0) + (1 if have_uvmrt else 0)) + (
            0 if a.no_fio else a.fio_size) + 64 * MiB
        free = shutil.disk_usage(a.swap_dir).free
        if free < need:
            raise SystemExit("uvmbench: %s has %s free; this run needs %s (swap files and the fio "
                             "file); use a smaller --budget or another --swap-dir"
                             % (a.swap_dir, fmt_size(free), fmt_size(need)))
        ram_need = region + 256 * MiB
        if meminfo().get("MemAvailable", ram_need) < ram_need and "ram" in a.systems:
            warn("the RAM measurement needs %s but only %s is available"
                 % (fmt_size(ram_need), fmt_size(meminfo().get("MemAvailable", 0))))

        self.workdir = os.path.join(os.path.realpath(a.swap_dir), "uvmbench-work-%d" % os.getpid())
        os.makedirs(self.workdir)
        os.makedirs(a.out, exist_ok=True)

        if have_kswap:
            try:
                self.swap = SwapFile(os.path.join(self.workdir, "kswap.img"), self.swap_bytes)
                self.swap.on()  # a trial, so that a refusal is known before any run
                self.swap.off()
            except (RuntimeError, OSError) as e:
                have_kswap = False
                msg = "kernel swap: skipped: %s" % e
                self.notes.append(msg)
                warn(msg)
                if self.swap:
                    self.swap.off()
                self.swap = None
        systems = [s for s in ("ram", "kswap", "uvmrt", "uvmrt-it") if s in a.systems and
                   (s != "uvmrt" or have_uvmrt) and (s != "uvmrt-it" or have_in_thread) and
                   (s != "kswap" or have_kswap)]
        have_uvmrt = any(s in UVMRT_SYSTEMS for s in systems)
        self.systems_run = systems
        self.steps = (a.reps * len(systems) + (0 if a.no_latency else a.latency_reps)
                      + (1 if have_kswap and a.cgroup_slack is None else 0)
                      + (0 if a.no_fio else 5) + (1 if a.mode == "smoke" else 0))
        log("uvmbench: %s mode: B=%s, region %g x B = %s, %d reps, threads %s, swap dir %s (%s)" % (
            a.mode, fmt_size(a.budget), a.region_mult, fmt_size(region), a.reps,
            ",".join(map(str, a.threads)), a.swap_dir, fs))
        log("uvmbench: results go to %s" % a.out)

        if a.mode == "smoke":
            self.self_test()
        if have_kswap:
            self.measure_overhead()
        for rep in range(1, a.reps + 1):
            for s in systems:
                self.run_workloads(s, rep)
        if not a.no_latency:
            for rep in range(1, a.latency_reps + 1):
                self.run_latency(rep, have_uvmrt, have_kswap)
        if not a.no_fio:
            self.run_fio()

        self.cleanup()
        self.report(have_uvmrt, have_kswap, systems)
        return EXIT_FAIL if self.failures else EXIT_OK

    # -- results ---------------------------------------------------------------

    def summarize(self, systems):
        """Medians over repetitions, per system and workload."""
        keys = []
        per = {}
        for run in self.runs:
            if not run["ok"]:
                continue
            for ph in run["phases"]:
                w = ph["workload"]
                key = "%s T=%d" % (w, ph["threads"]) if w == "rand-rmw" else w
                if key not in keys:
                    keys.append(key)
                per.setdefault((run["system"], key), []).append(ph)
        out = {}
        for (system, key), phs in per.items():
            el = [p["elapsed_s"] for p in phs]
            d = {"reps": len(phs), "elapsed_s": statistics.median(el), "elapsed_all_s": el,
                 "ops": phs[0]["ops"], "threads": phs[0]["threads"]}
            d["ops_per_s"] = d["ops"] / d["elapsed_s"] if d["elapsed_s"] > 0 else 0
            for k in ("majflt", "minflt", "pswpin", "pswpout", "maxrss_kib"):
                d[k] = statistics.median([p["kernel"][k] for p in phs])
            d["swapout_bytes_s"] = statistics.median(
                [p["kernel"]["pswpout"] * PAGE / p["elapsed_s"] for p in phs if p["elapsed_s"] > 0])
            d["swapin_bytes_s"] = statistics.median(
                [p["kernel"]["pswpin"] * PAGE / p["elapsed_s"] for p in phs if p["elapsed_s"] > 0])
            if "uvmrt" in phs[0]:
                u = {}
                for k in phs[0]["uvmrt"]:
                    u[k] = statistics.median([p["uvmrt"][k] for p in phs])
                d["uvmrt"] = u
                ps = [p["uvmrt"].get("pagesize", PAGE) or PAGE for p in phs]
                d["swapout_bytes_s"] = statistics.median(
                    [p["uvmrt"]["pgswapout"] * s / p["elapsed_s"] for p, s in zip(phs, ps)])
                d["swapin_bytes_s"] = statistics.median(
                    [p["uvmrt"]["pgswapin"] * s / p["elapsed_s"] for p, s in zip(phs, ps)])
            out.setdefault(key, {})[system] = d
        for key, row in out.items():
            for system in UVMRT_SYSTEMS:
                u = row.get(system)
                if u:
                    for base in ("kswap", "ram"):
                        if base in row and row[base]["elapsed_s"] > 0:
                            row.setdefault("ratios", {})[system + "/" + base] = (
                                u["elapsed_s"] / row[base]["elapsed_s"])
            if "uvmrt-it" in row and "uvmrt" in row and row["uvmrt"]["elapsed_s"] > 0:
                row.setdefault("ratios", {})["uvmrt-it/uvmrt"] = (
                    row["uvmrt-it"]["elapsed_s"] / row["uvmrt"]["elapsed_s"])
        return keys, out

    def summarize_latency(self):
        per = {}
        for r in self.latency_runs:
            if r.get("type") == "latency" and r.get("samples", 0) > 0:
                per.setdefault(r["case"], []).append(r)
        out = {}
        for case, rs in per.items():
            out[case] = {"system": rs[0]["system"], "runs": len(rs),
                         "samples": sum(r["samples"] for r in rs)}
            for k in ("p50_us", "p90_us", "p99_us", "mean_us", "max_us"):
                out[case][k] = statistics.median([r[k] for r in rs])
        return out

    def sanity_notes(self):
        """Notes on anything that makes the numbers less trustworthy."""
        busy = [(r["other_cpus"], "%s rep %d" % (SYSTEM_NAMES[r["system"]], r["rep"])) for r in self.runs
                if r.get("other_cpus", 0) > BUSY_CPUS]
        if busy:
            self.notes.append(
                "other processes kept the CPUs busy during %d of %d runs (up to %.1f CPUs on average "
                "during %s): those times are disturbed; rerun on an idle host"
                % (len(busy), len(self.runs), max(busy)[0], max(busy)[1]))
        stolen = [(r["steal_cpus"], "%s rep %d" % (SYSTEM_NAMES[r["system"]], r["rep"]))
                  for r in self.runs if r.get("steal_cpus", 0) > BUSY_CPUS]
        if stolen:
            self.notes.append(
                "the hypervisor took CPU time from this VM (steal) during %d of %d runs (up to %.1f "
                "CPUs on average during %s): those times are disturbed; rerun when the host is quieter"
                % (len(stolen), len(self.runs), max(stolen)[0], max(stolen)[1]))
        for run in self.runs:
            if not run["ok"]:
                continue
            name = "%s rep %d" % (SYSTEM_NAMES[run["system"]], run["rep"])
            if run["system"] in ("ram",) + UVMRT_SYSTEMS:
                sw = sum(p["kernel"]["pswpin"] + p["kernel"]["pswpout"] for p in run["phases"])
                if sw:
                    self.notes.append("%s: the kernel swapped %d pages during the run (other activity "
                                      "on the host, or host swap): its times may be disturbed" % (name, sw))
            if run["system"] == "kswap" and not sum(p["kernel"]["pswpout"] for p in run["phases"]):
                self.failures.append("%s: nothing was swapped out, so the memory limit did not apply; "
                                     "the numbers are RAM's, not kernel swap's" % name)
            if run["system"] in UVMRT_SYSTEMS:
                cfg = [r for r in run["other"] if r.get("type") == "config"]
                in_thread = bool(cfg and cfg[0].get("in_thread_faults"))
                if cfg and in_thread != (run["system"] == "uvmrt-it"):
                    self.failures.append("%s: uvmbench ran with in_thread_faults %s, not %s" % (
                        name, str(in_thread).lower(), str(not in_thread).lower()))
                if not sum(p["uvmrt"].get("pgswapout", 0) for p in run["phases"] if "uvmrt" in p):
                    self.failures.append("%s: uvmrt wrote nothing to swap although the region is "
                                         "larger than the budget" % name)
                err = sum(p["uvmrt"].get("swapouterr", 0) + p["uvmrt"].get("swapinerr", 0)
                          for p in run["phases"] if "uvmrt" in p)
                if err:
                    self.failures.append("%s: uvmrt reported %d swap I/O errors" % (name, err))

    def report(self, have_uvmrt, have_kswap, systems):
        a = self.args
        self.sanity_notes()
        keys, summary = self.summarize(systems)
        latency = self.summarize_latency()
        results = {
            "meta": {
                "mode": a.mode, "command": " ".join(shlex.quote(x) for x in
                                                     [os.environ.get("UVMBENCH_PROG", sys.argv[0])] + sys.argv[1:]),
                "started": datetime.datetime.fromtimestamp(self.t_start).isoformat(timespec="seconds"),
                "duration_s": round(time.time() - self.t_start, 1),
                "budget_bytes": a.budget, "region_mult": a.region_mult,
                "region_bytes": self.swap_bytes, "swap_bytes": self.swap_bytes,
                "reps": a.reps, "threads": a.threads, "cluster_pages": a.cluster_pages,
                "ops": a.ops or self.swap_bytes // PAGE, "samples": a.samples,
                "cgroup": ({"version": self.cg[0], "parent": self.cg[1], "limit_bytes": self.kswap_limit,
                            "overhead_bytes": self.overhead} if self.cg and have_kswap else None),
                "systems": systems, "notes": self.notes, "failures": self.failures,
            },
            "machine": self.machine,
            "workloads": {k: summary[k] for k in keys},
            "latency": latency,
            "fio": self.fio,
            "runs": self.runs,
            "latency_runs": self.latency_runs,
        }
        write_text(os.path.join(a.out, "results.json"), json.dumps(results, indent=1) + "\n")
        md = render_markdown(results, keys)
        write_text(os.path.join(a.out, "report.md"), md)
        png = None
        if not a.no_plot:
            png = plot(a.out, results, keys)
        print(md)
        if a.keep_out:
            log("uvmbench: wrote %s, %s%s" % (os.path.join(a.out, "results.json"),
                                             os.path.join(a.out, "report.md"),
                                             ", " + png if png else ""))
        if a.docs:
            update_docs(a.docs, md, png)
        if self.failures:
            log("uvmbench: FAILED:\n  " + "\n  ".join(self.failures))


# ---------------------------------------------------------------------------
# Markdown.

def f_s(x):
    return "%.3f" % x if x < 10 else "%.1f" % x


def f_ratio(x):
    return "%.2f" % x if x < 100 else "%.0f" % x


def f_n(x):
    return "%d" % round(x)


def f_mibs(x):
    return "%.1f" % (x / MiB)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out) + "\n"


def render_markdown(res, keys):
    m, meta, w = res["machine"], res["meta"], res["workloads"]
    systems = meta["systems"]
    disk = m["disk"]
    disk_s = " ".join(str(disk.get(k)) for k in ("name", "model", "size") if disk.get(k))
    if disk.get("rota") is not None:
        disk_s += ", %s" % ("rotational" if disk.get("rota") in (True, "1", 1) else "non-rotational")
    lines = []
    lines.append("### Machine\n")
    lines.append(table(["", ""], [
        ["CPU", "%s, %s logical CPUs%s" % (m["cpu_model"], m["cpus"],
                                          ", %s guest" % m["hypervisor"] if m["hypervisor"] else "")],
        ["RAM", fmt_size(m["ram_bytes"]) if m["ram_bytes"] % MiB == 0 else "%.1f GiB" % (m["ram_bytes"] / GiB)],
        ["Kernel", "%s (%s)" % (m["kernel"], m["os"])],
        ["Swap directory", "%s on %s (%s)" % (m["swap_dir"], m["swap_fs"], m["swap_mount"])],
        ["Disk", disk_s or disk.get("device", "?")],
        ["Kernel settings", "THP %s, swappiness %s, page-cluster %s, zswap %s, host swap %s" % (
            m["thp"], m["swappiness"], m["page_cluster"], m["zswap"],
            ", ".join(m["host_swap"]) or "none")],
        ["Memory cgroup", ("v%d, %s = B + %.1f MiB (the process's own memory outside its region, "
                           "measured) = %.1f MiB" % (
                               meta["cgroup"]["version"],
                               "memory.max" if meta["cgroup"]["version"] == 2 else "memory.limit_in_bytes",
                               meta["cgroup"]["overhead_bytes"] / MiB, meta["cgroup"]["limit_bytes"] / MiB)
                           if meta["cgroup"] else "none")],
        ["fio", m["fio"]],
    ]))
    uvm_systems = [s for s in systems if s in UVMRT_SYSTEMS]
    pagers = [SYSTEM_NAMES[s] for s in PAGER_SYSTEMS if s in systems]
    if len(pagers) < 2:
        pagers_s = pagers[0] if pagers else "both uvmrt and kernel swap"
    else:
        pagers_s = ("both " if len(pagers) == 2 else "") + ", ".join(pagers[:-1]) + " and " + pagers[-1]
    lines.append("\n### Configuration\n")
    lines.append("`%s` (%s mode, %.0f s): budget B = %s, region = %g x B = %s, %d repetitions, "
                 "rand-rmw threads %s, %d operations per random phase, swap cluster %d pages, "
                 "swap file %s for %s.\n" % (
                     meta["command"], meta["mode"], meta["duration_s"], fmt_size(meta["budget_bytes"]),
                     meta["region_mult"], fmt_size(meta["region_bytes"]), meta["reps"],
                     ",".join(map(str, meta["threads"])), meta["ops"], meta["cluster_pages"],
                     fmt_size(meta["swap_bytes"]), pagers_s))

    lines.append("\n### Workloads: median time in seconds\n")
    # Each system's time; each uvmrt system's ratios right after its time.
    bases = [(b, SYSTEM_NAMES[b]) for b in ("kswap", "ram") if b in systems]
    hdr = ["workload"]
    for s in systems:
        hdr.append(SYSTEM_NAMES[s] + " (s)")
        if s in UVMRT_SYSTEMS:
            hdr += ["%s / %s" % (SHORT_NAMES[s], name) for _, name in bases]
    rows = []
    for k in keys:
        r = [k]
        rat = w[k].get("ratios", {})
        for s in systems:
            d = w[k].get(s)
            if not d:
                r.append("-")
            elif d["reps"] > 1:
                r.append("%s (%s-%s)" % (f_s(d["elapsed_s"]), f_s(min(d["elapsed_all_s"])),
                                         f_s(max(d["elapsed_all_s"]))))
            else:
                r.append(f_s(d["elapsed_s"]))
            if s in UVMRT_SYSTEMS:
                for b, _ in bases:
                    key = "%s/%s" % (s, b)
                    r.append(f_ratio(rat[key]) if key in rat else "-")
        rows.append(r)
    lines.append(table(hdr, rows))
    lines.append("\nMedian seconds over the repetitions, (fastest-slowest) in brackets. Ratios are of "
                 "median times: below 1 means %s took less time. Throughput in operations (pages) "
                 "per second is in results.json.\n"
                 % ("uvmrt (in the in-thread columns, uvmrt in-thread)" if len(uvm_systems) > 1
                    else SYSTEM_NAMES[uvm_systems[0]] if uvm_systems else "uvmrt"))

    lines.append("\n### Fault counts (medians per phase)\n")
    # With uvmrt systems: one row per workload and uvmrt system, the kernel
    # swap and RAM columns repeated on each.
    hdr = ["system", "workload"] if uvm_systems else ["workload"]
    if uvm_systems:
        hdr += ["uvmrt faults", "zfill", "swapin", "react", "around", "wp", "pgswapin", "pgswapout",
                "pageouts", "uvmrt majflt"]
    if "kswap" in systems:
        hdr += ["kswap majflt", "pswpin", "pswpout"]
    if "ram" in systems:
        hdr += ["RAM majflt"]
    rows = []
    for k in keys:
        for us in uvm_systems or [None]:
            r = [SYSTEM_NAMES[us], k] if us else [k]
            if us:
                d = w[k].get(us)
                u = d.get("uvmrt", {}) if d else {}
                r += [f_n(u[f]) if f in u else "-" for f in (
                    "faults", "flt_zfill", "flt_swapin", "flt_react", "flt_around", "flt_wp", "pgswapin",
                    "pgswapout", "pdpageouts")]
                r.append(f_n(d["majflt"]) if d else "-")
            if "kswap" in systems:
                d = w[k].get("kswap")
                r += [f_n(d[f]) if d else "-" for f in ("majflt", "pswpin", "pswpout")]
            if "ram" in systems:
                d = w[k].get("ram")
                r.append(f_n(d["majflt"]) if d else "-")
            rows.append(r)
    lines.append(table(hdr, rows))
    lines.append("\nuvmrt counters are the runtime's uvmexp deltas (pages)%s; majflt is the process's "
                 "own getrusage count; pswpin/pswpout are /proc/vmstat deltas (pages, system-wide).%s\n"
                 % (", of the run named in the system column" if uvm_systems else "",
                    " The kernel swap and RAM columns do not depend on the system column: they repeat "
                    "on each row of a workload." if len(uvm_systems) > 1 and
                    ("kswap" in systems or "ram" in systems) else ""))

    peak = []
    rss_explained = False
    for s in systems:
        vals = [r["other"][-1]["kernel"]["maxrss_kib"] * 1024 for r in res["runs"]
                if r["system"] == s and r["ok"] and r["other"] and r["other"][-1].get("type") == "done"]
        cgp = [r["cgroup"].get("peak_bytes") for r in res["runs"] if r["system"] == s and r["cgroup"]]
        kr = [max([p.get("kernel_resident_bytes", 0) for p in r["phases"]] + [0]) for r in res["runs"]
              if r["system"] == s and r["ok"]]
        if vals:
            txt = "%s: peak RSS %s" % (SYSTEM_NAMES[s], "%.0f MiB" % (statistics.median(vals) / MiB))
            if cgp and all(cgp):
                txt += ", cgroup peak %.0f MiB" % (statistics.median(cgp) / MiB)
            if s in UVMRT_SYSTEMS and kr and max(kr):
                if not rss_explained:
                    txt += " (RSS counts each frame once per view: the application's and the runtime's)"
                    rss_explained = True
                txt += "; backing frames at phase ends at most %.0f MiB" % (statistics.median(kr) / MiB)
            peak.append(txt)
    if peak:
        lines.append("\nMemory use (medians; B = %s): " % fmt_size(meta["budget_bytes"])
                     + "; ".join(peak) + ".\n")

    lines.append("\n### Paging bandwidth (MiB/s, medians) beside the device\n")
    bw_systems = [s for s in PAGER_SYSTEMS if s in systems]
    hdr = ["workload"]
    for s in bw_systems:
        hdr += [SHORT_NAMES[s] + " pageout", SHORT_NAMES[s] + " swap-in"]
    rows = []
    for k in keys:
        r = [k]
        for s in bw_systems:
            d = w[k].get(s)
            r += [f_mibs(d["swapout_bytes_s"]), f_mibs(d["swapin_bytes_s"])] if d else ["-", "-"]
        rows.append(r)
    lines.append(table(hdr, rows))
    fio = res["fio"]
    if fio:
        lines.append("\nDevice limit (fio, io_uring, O_DIRECT, same filesystem):\n\n")
        rows = []
        for name, r in fio.items():
            rows.append([name, fmt_size(r["bs"]), str(r["iodepth"]), f_mibs(r["bw_bytes_s"]),
                         f_n(r["iops"]), "%.1f" % r["lat_p50_us"], "%.1f" % r["lat_p99_us"]])
        lines.append(table(["fio job", "block", "QD", "MiB/s", "IOPS", "p50 us", "p99 us"], rows))
        lines.append("\nPaging bandwidth is pages moved x 4 KiB / phase time (phase time includes "
                     "the computation), so it is a lower bound of what the pager sustained.\n")

    lat = res["latency"]
    if lat:
        lines.append("\n### Fault service latency (us)\n")
        desc = {
            "native": "plain anonymous memory, first write (kernel page fault)",
            "zero-fill": "uvmrt: first write to a never-touched page",
            "zero-fill-it": "uvmrt in-thread: the same",
            "swap-in": "uvmrt: read of a non-resident page, read back from swap",
            "swap-in-it": "uvmrt in-thread: the same",
            "reactivation": "uvmrt: read of a resident page the daemon had unmapped",
            "reactivation-it": "uvmrt in-thread: the same",
            "kernel-swap-in": "kernel swap: read that took a major fault",
            "kernel-minor": "kernel swap: read that took a minor fault (swap cache hit)",
        }
        rows = []
        for c in list(LATENCY_CASES) + [c for c in lat if c not in LATENCY_CASES]:
            if c in lat:
                d = lat[c]
                rows.append([c, desc.get(c, ""), "%.2f" % d["p50_us"], "%.2f" % d["p99_us"],
                             "%.2f" % d["mean_us"], str(d["samples"])])
        if "rand-read-4k-qd1" in fio:
            r = fio["rand-read-4k-qd1"]
            rows.append(["device 4 KiB read", "fio randread QD1, submission to completion",
                         "%.2f" % r["lat_p50_us"], "%.2f" % r["lat_p99_us"], "%.2f" % r["lat_mean_us"], "-"])
        lines.append(table(["case", "what", "p50", "p99", "mean", "samples"], rows))

    if meta["notes"] or meta["failures"]:
        lines.append("\n### Notes\n")
        for n in meta["notes"]:
            lines.append("- " + n + "\n")
        for f in meta["failures"]:
            lines.append("- FAILED: " + f + "\n")
    return "".join(lines)


# ---------------------------------------------------------------------------
# Plot (gnuplot, Debian package gnuplot-nox).

def plot(out, res, keys):
    gp = which("gnuplot")
    if not gp:
        warn("gnuplot is not installed (apt-get install gnuplot-nox): no plot")
        return None
    systems = res["meta"]["systems"]
    w = res["workloads"]
    d1 = os.path.join(out, "plot-times.dat")
    with open(d1, "w") as f:
        f.write("workload " + " ".join('"%s"' % SYSTEM_NAMES[s] for s in systems) + "\n")
        for k in keys:
            f.write('"%s" ' % k + " ".join(
                ("%.6f" % w[k][s]["elapsed_s"]) if s in w[k] else "NaN" for s in systems) + "\n")
    bw_cols = [(s, d) for s in PAGER_SYSTEMS if s in systems for d in ("swapout", "swapin")]
    d2 = os.path.join(out, "plot-bw.dat")
    with open(d2, "w") as f:
        f.write("workload " + " ".join('"%s %s"' % (SHORT_NAMES[s], "pageout" if d == "swapout" else "swap-in")
                                       for s, d in bw_cols) + "\n")
        for k in keys:
            f.write('"%s" ' % k + " ".join(
                ("%.3f" % (w[k][s]["%s_bytes_s" % d] / MiB)) if s in w[k] else "NaN" for s, d in bw_cols) + "\n")
    lat = res["latency"]
    d3 = os.path.join(out, "plot-lat.dat")
    with open(d3, "w") as f:
        f.write("case p50 p99\n")
        for c in LATENCY_CASES:
            if c in lat:
                f.write('"%s" %.3f %.3f\n' % (c, lat[c]["p50_us"], lat[c]["p99_us"]))
        if "rand-read-4k-qd1" in res["fio"]:
            r = res["fio"]["rand-read-4k-qd1"]
            f.write('"fio 4K QD1" %.3f %.3f\n' % (r["lat_p50_us"], r["lat_p99_us"]))
    fio_lines = []
    for name, lbl in (("seq-write", "fio seq write"), ("seq-read", "fio seq read")):
        if name in res["fio"]:
            fio_lines.append((res["fio"][name]["bw_bytes_s"] / MiB, lbl))
    png = os.path.join(out, "plot.png")
    m = res["meta"]
    title = "uvmrt vs kernel swap vs RAM: B=%s, region %g x B, %s" % (
        fmt_size(m["budget_bytes"]), m["region_mult"], res["machine"]["cpu_model"])
    s = []
    s.append("set terminal pngcairo size 1100,1400 font 'sans,10'")
    s.append("set output '%s'" % png)
    s.append("set multiplot layout 3,1 title \"%s\"" % title.replace('"', "'"))
    s.append("set style data histograms")
    s.append("set style histogram clustered gap 1")
    s.append("set style fill solid 0.8 border -1")
    s.append("set key outside right top vertical autotitle columnhead")
    s.append("set grid ytics")
    s.append("set xtics nomirror")
    s.append("set lmargin 10")
    s.append("set rmargin 24")
    s.append("set title 'Median time per workload (s, log scale; lower is better)'")
    s.append("set logscale y")
    s.append("set yrange [*:*]")
    s.append("plot for [i=2:%d] '%s' using i:xtic(1)" % (len(systems) + 1, d1))
    s.append("set title 'Paging bandwidth (MiB/s, log scale); dashed: fio device limit'")
    top = max([v for v, _ in fio_lines] + [w[k][sy]["%s_bytes_s" % d] / MiB for k in keys
                                            for sy, d in bw_cols if sy in w[k]] + [1.0])
    s.append("set yrange [1:%f]" % (top * 2))
    arrows = []
    for i, (v, lbl) in enumerate(fio_lines):
        arrows.append("set arrow %d from graph 0, first %f to graph 1, first %f nohead dt 2 lw 2 lc %d"
                      % (i + 1, v, v, i + 6))
        arrows.append("set label %d '%s %.0f MiB/s' at graph 0.02, first %f offset 0,0.7" % (i + 1, lbl, v, v))
    s += arrows
    if bw_cols:
        s.append("plot for [i=2:%d] '%s' using i:xtic(1)" % (len(bw_cols) + 1, d2))
    else:
        s.append("plot '%s' using 0:(0) notitle" % d2)
    s.append("unset arrow")
    s.append("unset label")
    s.append("set title 'Fault service latency (us, log scale)'")
    s.append("set yrange [*:*]")
    s.append("plot '%s' using 2:xtic(1) title 'p50', '' using 3 title 'p99'" % d3)
    s.append("unset multiplot")
    script = os.path.join(out, "plot.gp")
    write_text(script, "\n".join(s) + "\n")
    rc, text = run_quiet([gp, script])
    if rc != 0 or not os.path.exists(png):
        warn("gnuplot failed: %s" % text.strip())
        return None
    return png


def update_docs(path, md, png):
    """Replaces the results block of docs/performance.md."""
    begin, end = "<!-- BEGIN uvmbench results -->", "<!-- END uvmbench results -->"
    text = read_text(path)
    block = begin + "\n" + md.rstrip() + "\n" + end
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text(path, text)
    log("uvmbench: updated %s" % path)


# ---------------------------------------------------------------------------

def parse_args(argv):
    here = os.path.dirname(os.path.realpath(__file__))
    repo = os.path.dirname(here)
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="uvmrt beside Linux kernel swap, RAM and the device limit (see bench/README.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  bench/run --build-dir build --quick\n"
               "  bench/run --build-dir build --swap-dir /mnt/nvme/uvmbench\n"
               "  bench/run --build-dir build --smoke\n")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="under 5 minutes on a 2-core VM (B=64M, 3 reps)")
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke",
                      help="seconds; proves that everything works (B=8M, 1 rep)")
    mode.add_argument("--full", action="store_const", dest="mode", const="full",
                      help="the default: B=1G, 3 reps; needs --swap-dir")
    p.add_argument("--build-dir", default=os.path.join(repo, "build"),
                   help="CMake build directory holding bench/uvmbench and bench/faultlat")
    p.add_argument("--swap-dir", help="directory on the filesystem to page to (full mode: required; "
                   "quick/smoke: default /var/tmp)")
    p.add_argument("--out", help="results directory (default: uvmbench-results/<mode>-<time>)")
    p.add_argument("--docs", help="also write the report into this markdown file, between the "
                   "'BEGIN/END uvmbench results' markers (e.g. docs/performance.md)")
    p.add_argument("--budget", type=parse_size, help="resident budget B (e.g. 64M, 1G)")
    p.add_argument("--region-mult", type=float, help="region size as a multiple of B (default 4)")
    p.add_argument("--reps", type=int, help="repetitions per system (at least 3 for a table of medians)")
    p.add_argument("--threads", type=parse_int_list, help="rand-rmw thread counts, e.g. 1,2,4")
    p.add_argument("--ops", type=int, help="operations per rand-rmw/hotcold phase (default: pages in region)")
    p.add_argument("--cluster-pages", type=int, default=16, help="uvmrt swap cluster, and fio's "
                   "sequential block size, in pages (default 16)")
    p.add_argument("--samples", type=int, help="fault-latency samples per case")
    p.add_argument("--latency-reps", type=int, help="fault-latency repetitions")
    p.add_argument("--fio-runtime", type=int, help="seconds per fio job")
    p.add_argument("--fio-size", type=parse_size, help="fio file size")
    p.add_argument("--systems", default="ram,kswap,uvmrt,uvmrt-it",
                   help="subset of ram,kswap,uvmrt,uvmrt-it (uvmrt-it: uvmrt with --in-thread-faults)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-fio", action="store_true", help="skip the device measurement")
    p.add_argument("--no-latency", action="store_true", help="skip the fault-latency microbenchmark")
    p.add_argument("--no-plot", action="store_true", help="skip the gnuplot PNG")
    p.add_argument("--no-progress", action="store_true", help="no per-phase progress from the workload")
    p.add_argument("--require-uvmrt", action="store_true", help="fail if the build lacks uvmrt")
    p.add_argument("--allow-zswap", action="store_true",
                   help="leave zswap on for the kernel-swap cgroup (cgroup v2)")
    p.add_argument("--allow-buffered-swap", action="store_true",
                   help="let uvmrt fall back to buffered I/O where O_DIRECT is refused")
    p.add_argument("--cgroup-parent", help="make the memory cgroups under this directory")
    p.add_argument("--cgroup-slack", type=parse_size_or_zero,
                   help="kernel-swap cgroup limit = B + this (default: the process's memory outside "
                   "its region, measured; 0 for exactly B)")
    a = p.parse_args(argv)
    a.mode = a.mode or "full"
    d = MODES[a.mode]
    for k in ("budget", "region_mult", "reps", "threads", "ops", "samples", "fio_runtime", "fio_size",
              "latency_reps"):
        if getattr(a, k) is None:
            setattr(a, k, d[k])
    if a.threads is None:
        n, a.threads = os.cpu_count() or 1, []
        t = 1
        while t <= n:
            a.threads.append(t)
            t *= 2
    if a.swap_dir is None:
        if a.mode == "full":
            p.error("full mode needs --swap-dir (a directory on the disk to measure), "
                    "or use --quick / --smoke")
        a.swap_dir = "/var/tmp"
    if not os.path.isdir(a.swap_dir):
        p.error("--swap-dir %s is not a directory" % a.swap_dir)
    if a.region_mult <= 1:
        p.error("--region-mult must be above 1 (the region must not fit in B)")
    if a.reps < 1:
        p.error("--reps must be at least 1")
    a.systems = [s for s in a.systems.split(",") if s]
    for s in a.systems:
        if s not in SYSTEM_NAMES:
            p.error("unknown system %r (use ram, kswap, uvmrt, uvmrt-it)" % s)
    a.build_dir = os.path.realpath(a.build_dir)
    a.uvmbench = os.path.join(a.build_dir, "bench", "uvmbench")
    a.faultlat = os.path.join(a.build_dir, "bench", "faultlat")
    for prog in (a.uvmbench, a.faultlat):
        if not os.access(prog, os.X_OK):
            p.error("%s not found; build it first: cmake --build %s --target uvmbench faultlat"
                    % (prog, a.build_dir))
    a.keep_out = True
    if a.out is None:
        if a.mode == "smoke":
            # Smoke runs prove that things work; their results go away afterwards.
            a.out = tempfile.mkdtemp(prefix="uvmbench-smoke-")
            a.keep_out = False
        else:
            a.out = os.path.join("uvmbench-results", "%s-%s" % (
                a.mode, datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
    a.out = os.path.realpath(a.out)
    return a


def main(argv):
    args = parse_args(argv)
    h = Harness(args)

    def on_signal(signum, _frame):
        raise Interrupted()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        return h.main()
    except Interrupted:
        log("\nuvmbench: interrupted; cleaning up")
        return EXIT_INTERRUPTED
    except VerifyFailed as e:
        log("uvmbench: FAILED: %s" % e)
        return EXIT_VERIFY
    except (RuntimeError, OSError) as e:
        log("uvmbench: ERROR: %s" % e)
        return EXIT_FAIL
    finally:
        h.cleanup()
        if not args.keep_out:
            shutil.rmtree(args.out, ignore_errors=True)
        if h.workdir and not os.path.exists(h.workdir):
            log("uvmbench: cleaned up (swap file off and removed, cgroups removed, %s removed)"
                % h.workdir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
