#!/usr/bin/env python3
"""Sync benchmark: csync vs csync2 vs rsync (daemon mode), n1 pushing to N peers on loopback.

Same machine, same run: node n1 (127.0.77.1) pushes to PEERS peers
(127.0.77.2 .. 127.0.77.PEERS+1, default 2). Trees live on the real disk by
default (--dir, default /var/tmp; --tmpfs puts them on /dev/shm); the
filesystem used is printed. Each tool gets its own copy of the source tree,
its own daemons and its own indexes, so no state leaks from one tool to the
next. Three modes:

main (default): median wall time of RUNS runs of
  initial      first sync of FILES files of 1-4 KiB in FILES/100 directories
               (csync/csync2: `-x` with empty indexes = check + push)
  nochange     nothing changed, FILES files
  one_changed  one file rewritten among FILES
  deletes      FILES/10 files deleted
  new_big      a new file of BIG MiB (random bytes)
  big_1mib     1 MiB rewritten in place in the middle of that file
  plus a silent peer (accepts TCP, never answers) in place of the last peer,
  and a markdown table: workload | csync | rsync | csync/rsync | csync2.

--scale: initial sync of FILES files to 2, 4 and 8 peers (--scale-peers),
  csync and rsync alternating run by run (csync2 is left out); a table
  peers | csync | rsync | csync/rsync | growth of each relative to 2 peers.

--big100k: initial sync of BIG_FILES files (default 100,000) to PEERS peers,
  csync and rsync alternating (median of BIG_RUNS runs), then a no-change
  sync of the same tree; peak RSS of `csync -x` and of the rsync clients
  (GNU time %M) and the peak RSS (VmHWM) of each csync daemon. csync2, if in
  --tools, runs the initial sync once (it takes minutes).

Every timed run is followed by a tree comparison (diff -rq); a run whose
trees differ, or whose tool exits non-zero, is reported as a failure instead
of a time. Run from the repo root (as root: rsync's daemon must write as root):

    python3 benches/sync_compare.py [--runs 5] [--tmpfs] [--peers 2]
        [--tools csync,csync2,rsync] [--json out.json] [--keep]
    python3 benches/sync_compare.py --scale [--files 10000] [--tools csync,rsync]
    python3 benches/sync_compare.py --big100k [--big-files 100000] [--big-runs 3]

--quick: 3 runs, 2,000 files, 20,000 for the "100k" case, a 40 MiB file.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HANG_LIMIT = 10.0  # seconds we wait for csync2/rsync on a silent peer


def ip(n):
    """Node n's address: n1 is 127.0.77.1, the peers 127.0.77.2 and up."""
    return f"127.0.77.{n}"


def fs_info(path):
    """The filesystem holding `path`, from /proc/mounts (longest mount point prefix)."""
    path = os.path.realpath(path)
    best = None
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                f = line.split()
                if len(f) < 3:
                    continue
                mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), f[1])
                if path == mnt or path.startswith(mnt.rstrip("/") + "/"):
                    if best is None or len(mnt) >= len(best["mount"]):
                        best = {"type": f[2], "mount": mnt, "device": f[0]}
    except OSError:
        pass
    return dict(best or {"type": "?", "mount": "?", "device": "?"}, dir=path)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def lo_bytes():
    """Bytes received on the loopback interface (all traffic on lo, headers included)."""
    try:
        with open("/proc/net/dev") as fh:
            for line in fh:
                if line.strip().startswith("lo:"):
                    return int(line.split(":", 1)[1].split()[0])
    except OSError:
        pass
    return None


def wait_port(addr, port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((addr, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {addr}:{port} after {timeout} s")


def kill_group(p, grace=3.0):
    if p is None or p.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def start(cmd, env=None, log_path=None):
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run_parallel(cmds, env=None, limit=None):
    """Start every command at once; return (seconds until all ended, [(rc, out, err)]).
    With limit: kill whatever still runs after `limit` seconds (rc None)."""
    t0 = time.perf_counter()
    ps = [subprocess.Popen(c, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True) for c in cmds]
    res = []
    for p in ps:
        left = None if limit is None else max(0.0, limit - (time.perf_counter() - t0))
        try:
            out, err = p.communicate(timeout=left if limit is not None else 3600)
            res.append((p.returncode, out.decode(errors="replace"), err.decode(errors="replace")))
        except subprocess.TimeoutExpired:
            kill_group(p, grace=1.0)
            out, err = p.communicate()
            res.append((None, out.decode(errors="replace"), err.decode(errors="replace")))
    return time.perf_counter() - t0, res


# ---------------------------------------------------------------- trees

def make_tree(root, files, seed):
    rnd = random.Random(seed)
    dirs = max(1, files // 100)
    names = []
    for d in range(dirs):
        dp = os.path.join(root, f"d{d:04d}")
        os.makedirs(dp)
        for f in range(files // dirs):
            rel = f"d{d:04d}/f{f:03d}.txt"
            with open(os.path.join(root, rel), "wb") as fh:
                fh.write(rnd.randbytes(rnd.randint(1024, 4096)))
            names.append(rel)
    return names


def copy_tree(src, dst):
    subprocess.run(["cp", "-a", src, dst], check=True)


def same_trees(a, b):
    r = subprocess.run(["diff", "-rq", "--no-dereference", a, b],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return r.returncode == 0, r.stdout.decode(errors="replace")[:400]


def empty_dir(d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)


# Where trees go instead of being deleted while the bench runs (None: delete).
GRAVEYARD = None


def bury(d):
    """Removes tree `d` now, or, on a disk, moves it aside to be deleted when
    the bench ends. This machine's ext4 has no journal, and its inode
    allocator skips every inode freed in the last 60 s (5 min while its
    inode-table block is dirty), scanning past each of them on every create
    (`recently_deleted()` in fs/ext4/ialloc.c). A tree deleted between runs
    made the next run's creates pay for it: up to 28 % of all CPU in a
    profile of an 8-peer run, landing on whichever tool's trees shared block
    groups with it (rsync took 0.76 s in one run and 2.2 s in the next). A
    fresh server does not carry that, so the bench frees nothing until the
    end: moving a tree aside (a rename) frees no inode."""
    global GRAVEYARD
    if GRAVEYARD is None or not os.path.exists(d):
        shutil.rmtree(d, ignore_errors=True)
        return
    os.makedirs(GRAVEYARD, exist_ok=True)
    os.rename(d, os.path.join(GRAVEYARD, f"{len(os.listdir(GRAVEYARD))}"))


def forget_deleted_inodes(source):
    """After a tree was deleted on a journal-less ext4 (this machine's disk),
    every file created in the next minutes pays for it: the inode allocator
    skips each free inode whose inode-table block is still cached and that was
    freed less than 60 s ago (5 min if the block is dirty), scanning past all
    of them on every create (`recently_deleted()` in fs/ext4/ialloc.c: 75 %
    of a receiver's CPU in profiles). Fresh servers do not carry that, and it
    fell on whichever tool's trees happened to share block groups with the
    trees just deleted. So, as root: write everything back, drop the clean
    cache (the allocator then treats those inodes as written out), and read
    the source tree back in so that every tool starts from a warm source, as
    in the other rows. A no-op on tmpfs and without root."""
    if os.geteuid() != 0 or fs_info(source)["type"] in ("tmpfs", "ramfs"):
        return
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("1")
    except OSError:
        return
    for dirpath, _, files in os.walk(source):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                while fh.read(1 << 20):
                    pass


# ---------------------------------------------------------------- clusters

class Cluster:
    """One tool's nodes: n1 (source) and a daemon on each peer n2 .. n(peers+1)."""

    tool = "?"

    def __init__(self, base, bin_, port, src, peers=2):
        self.base, self.bin, self.port = base, bin_, port
        self.peers = list(range(2, peers + 2))
        self.nodes = [1] + self.peers
        self.trees = {n: os.path.join(base, f"n{n}") for n in self.nodes}
        self.daemons = {}
        os.makedirs(base)
        copy_tree(src, self.trees[1])
        for n in self.peers:
            os.makedirs(self.trees[n])
        self.setup()

    def setup(self):
        pass

    def start_daemon(self, n):
        raise NotImplementedError

    def start_daemons(self):
        for n in self.peers:
            self.daemons[n] = self.start_daemon(n)
        for n in self.peers:
            wait_port(ip(n), self.port)

    def stop_daemon(self, n):
        kill_group(self.daemons.pop(n, None))

    def stop(self):
        for n in list(self.daemons):
            self.stop_daemon(n)

    def reset_empty(self):
        """Peers empty, indexes forgotten (for the initial-sync workload)."""
        self.stop()
        for n in self.peers:
            bury(self.trees[n])
            os.makedirs(self.trees[n])
        self.forget_state()
        forget_deleted_inodes(self.trees[1])
        self.start_daemons()

    def forget_state(self):
        pass

    def verify(self):
        for n in self.peers:
            ok, diff = same_trees(self.trees[1], self.trees[n])
            if not ok:
                return f"n{n} differs: {diff}"
        return None

    def reset_hwm(self):
        """Reset the daemons' VmHWM to their current RSS (Linux >= 4.0, `5 > clear_refs`),
        so that the next reading is the peak of the next run alone."""
        for p in self.daemons.values():
            try:
                with open(f"/proc/{p.pid}/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass

    def daemon_hwm_each(self):
        """Peak RSS (VmHWM) of each running daemon process, KiB: {node: kib}."""
        out = {}
        for n, p in self.daemons.items():
            try:
                with open(f"/proc/{p.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            out[n] = int(line.split()[1])
            except OSError:
                pass
        return out


class CsyncCluster(Cluster):
    tool = "csync"

    def setup(self):
        b = self.base
        self.ca = os.path.join(b, "ca")
        subprocess.run([self.bin, "--new-ca", self.ca], check=True, stdout=subprocess.DEVNULL)
        key = os.path.join(b, "group.key")
        subprocess.run([self.bin, "-k", key], check=True, stdout=subprocess.DEVNULL)
        hosts = " ".join(f"n{n}@{ip(n)}" for n in self.nodes)
        ons = " ".join(f"on n{n}: {self.trees[n]};" for n in self.nodes)
        cfg = (
            f"group bench {{ host {hosts}; key csync2.key; include %r%; }}\n"
            f"prefix r {{ {ons} }}\n"
        )
        self.sys, self.db = {}, {}
        for n in self.nodes:
            s = self.sys[n] = os.path.join(b, f"sys{n}")
            self.db[n] = os.path.join(b, f"db{n}")
            os.makedirs(self.db[n])
            subprocess.run([self.bin, "--new-cert", f"n{n}", "--ca", self.ca, "--out", s],
                           check=True, stdout=subprocess.DEVNULL)
            shutil.copy(key, os.path.join(s, "csync2.key"))
            os.chmod(os.path.join(s, "csync2.key"), 0o600)
            with open(os.path.join(s, "csync2.cfg"), "w") as fh:
                fh.write(cfg)

    def env(self, n):
        return dict(os.environ, CSYNC2_SYSTEM_DIR=self.sys[n])

    def start_daemon(self, n):
        return start([self.bin, "-N", f"n{n}", "-D", self.db[n], "-p", str(self.port), "-ii"],
                     env=self.env(n), log_path=os.path.join(self.base, f"daemon{n}.log"))

    def forget_state(self):
        for n in self.nodes:
            empty_dir(self.db[n])

    def sync_cmds(self, verbose=False, extra=()):
        return [[self.bin, "-N", "n1", "-D", self.db[1], "-p", str(self.port),
                 "-xv" if verbose else "-x", *extra]]

    def env1(self):
        return self.env(1)

    @staticmethod
    def wire_bytes(results):
        tot = 0
        found = False
        for _, out, err in results:
            for m in re.finditer(r"(\d+) bytes of content sent", out + err):
                tot += int(m.group(1))
                found = True
        return tot if found else None


class Csync2Cluster(Cluster):
    """csync2 2.0: host names are the IP literals, so `-N` (name and bind address)
    and the server's forward-lookup check of the peer name need no /etc/hosts."""
    tool = "csync2"

    def setup(self):
        b = self.base
        key = os.path.join(b, "group.key")
        subprocess.run([self.bin, "-k", key], check=True)
        hosts = " ".join(ip(n) for n in self.nodes)
        ons = " ".join(f"on {ip(n)}: {self.trees[n]};" for n in self.nodes)
        cfg = (
            "nossl * *;\n"
            f"group bench {{ host {hosts}; key csync2.key; include %r%; }}\n"
            f"prefix r {{ {ons} }}\n"
        )
        self.sys, self.db = {}, {}
        for n in self.nodes:
            s = self.sys[n] = os.path.join(b, f"sys{n}")
            self.db[n] = os.path.join(b, f"db{n}")
            os.makedirs(s)
            os.makedirs(self.db[n])
            shutil.copy(key, os.path.join(s, "csync2.key"))
            with open(os.path.join(s, "csync2.cfg"), "w") as fh:
                fh.write(cfg)

    def env(self, n):
        return dict(os.environ, CSYNC2_SYSTEM_DIR=self.sys[n])

    def start_daemon(self, n):
        return start([self.bin, "-N", ip(n), "-D", self.db[n], "-p", str(self.port), "-ii"],
                     env=self.env(n), log_path=os.path.join(self.base, f"daemon{n}.log"))

    def forget_state(self):
        for n in self.nodes:
            empty_dir(self.db[n])

    def sync_cmds(self, verbose=False, extra=()):
        return [[self.bin, "-N", ip(1), "-D", self.db[1], "-p", str(self.port), "-x", *extra]]

    def env1(self):
        return self.env(1)

    def init_index(self):
        """Record the current state on every node without marking anything dirty."""
        for n in self.nodes:
            subprocess.run([self.bin, "-N", ip(n), "-D", self.db[n], "-cIr"], env=self.env(n),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def wire_bytes(results):
        return None


class RsyncCluster(Cluster):
    tool = "rsync"

    def setup(self):
        self.conf = {}
        for n in self.peers:
            c = self.conf[n] = os.path.join(self.base, f"rsyncd{n}.conf")
            with open(c, "w") as fh:
                fh.write(
                    f"pid file = {self.base}/rsyncd{n}.pid\n"
                    f"log file = {self.base}/rsyncd{n}.log\n"
                    "use chroot = no\nuid = 0\ngid = 0\n"
                    "socket options = TCP_NODELAY\n"
                    f"[mod]\npath = {self.trees[n]}\nread only = no\n"
                )

    def start_daemon(self, n):
        return start([self.bin, "--daemon", "--no-detach", f"--config={self.conf[n]}",
                      "--address", ip(n), "--port", str(self.port)])

    def sync_cmds(self, verbose=False, extra=()):
        return [[self.bin, "-a", "--delete", "--sockopts=TCP_NODELAY", *extra,
                 *(["--stats"] if verbose else []),
                 self.trees[1] + "/", f"rsync://{ip(n)}:{self.port}/mod/"] for n in self.peers]

    def env1(self):
        return None

    @staticmethod
    def wire_bytes(results):
        tot, found = 0, False
        for _, out, _ in results:
            for m in re.finditer(r"Total bytes (?:sent|received): ([\d,]+)", out):
                tot += int(m.group(1).replace(",", ""))
                found = True
        return tot if found else None


# ---------------------------------------------------------------- runner

def mib(kib):
    return None if kib is None else round(kib / 1024, 1)


class Bench:
    def __init__(self, a, base):
        self.a, self.base = a, base
        self.results = {}  # workload -> tool -> dict
        self.rnd = random.Random(7)
        self.mtime_base = int(time.time()) - 86400
        self.mtime_k = 0

    def record(self, wl, tool, **kv):
        self.results.setdefault(wl, {})[tool] = kv

    def next_mtime(self):
        # distinct whole seconds, in the past: size+mtime checks (rsync) cannot miss an edit
        self.mtime_k += 1
        return self.mtime_base + 10 * self.mtime_k

    def sync(self, cl, verbose=False, extra=(), time_rss=False, limit=None):
        cmds = cl.sync_cmds(verbose, extra)
        rss_files = []
        if time_rss:
            wrapped = []
            for k, c in enumerate(cmds):
                f = os.path.join(self.base, f"rss-{cl.tool}-{k}.txt")
                if os.path.exists(f):
                    os.unlink(f)
                rss_files.append(f)
                wrapped.append(["/usr/bin/time", "-f", "%M", "-o", f, *c])
            cmds = wrapped
        lo0 = lo_bytes()
        dt, res = run_parallel(cmds, env=cl.env1(), limit=limit)
        lo1 = lo_bytes()
        rss = None
        for f in rss_files:  # max over the client processes (one per peer for rsync)
            if os.path.exists(f):
                with open(f) as fh:
                    nums = re.findall(r"^\d+$", fh.read(), re.M)
                if nums:
                    rss = max(rss or 0, int(nums[-1]))
        return {
            "s": dt,
            "rcs": [r[0] for r in res],
            "res": res,
            "lo": (lo1 - lo0) if lo0 is not None and lo1 is not None else None,
            "rss_kib": rss,
        }

    def measure(self, cl, wl, i, verbose=False, time_rss=False, limit=None):
        """One timed run, checked: a dict with "s" (seconds) or "error"."""
        if time_rss:
            cl.reset_hwm()
        r = self.sync(cl, verbose=verbose, time_rss=time_rss, limit=limit)
        out = {"hwm": cl.daemon_hwm_each() if time_rss else {}}
        bad = [rc for rc in r["rcs"] if rc != 0]
        if bad:
            msg = "; ".join((o + e).strip()[-300:] for _, o, e in r["res"])
            out["error"] = f"exit {r['rcs']}: {msg}"
            log(f"    {cl.tool} {wl} run {i}: exit {r['rcs']}: {msg}")
            return out
        diff = cl.verify()
        if diff:
            out["error"] = diff
            log(f"    {cl.tool} {wl} run {i}: trees differ: {diff}")
            return out
        out.update(s=r["s"], wire=cl.wire_bytes(r["res"]), lo=r["lo"], rss=r["rss_kib"])
        return out

    def summarize(self, cl, wl, ms, verbose=False, time_rss=False):
        times = [m["s"] for m in ms if "s" in m]
        errors = [m["error"] for m in ms if "error" in m]
        wires = [m["wire"] for m in ms if m.get("wire") is not None]
        los = [m["lo"] for m in ms if m.get("lo") is not None]
        rsss = [m["rss"] for m in ms if m.get("rss") is not None]
        hwm = {}
        for m in ms:
            for n, v in m["hwm"].items():
                hwm[n] = max(hwm.get(n, 0), v)
        rec = {"runs": [round(t, 4) for t in times]}
        if times:
            rec["median_s"] = round(statistics.median(times), 4)
        if errors:
            rec["errors"] = errors[:3]
            rec["failed_runs"] = len(errors)
        if wires:
            rec["wire_bytes"] = int(statistics.median(wires))
        if los and verbose:
            rec["lo_bytes_min"] = min(los)
        if rsss:
            rec["peak_rss_kib"] = max(rsss)
        # the daemons' VmHWM means something for csync only (one process, threads);
        # rsync's and csync2's daemons fork a child per connection
        if time_rss and hwm and cl.tool == "csync":
            rec["daemon_hwm_kib"] = max(hwm.values())
            rec["daemon_hwm_kib_each"] = {f"n{n}": v for n, v in sorted(hwm.items())}
        self.record(wl, cl.tool, **rec)
        med = rec.get("median_s")
        log(f"  {cl.tool:6s} {wl:14s} median {med if med is not None else 'FAILED'}"
            f" runs {rec['runs']}" + (f" wire {rec.get('wire_bytes')}" if verbose else "")
            + (f" lo {rec.get('lo_bytes_min')}" if verbose else "")
            + (f" rss {rec.get('peak_rss_kib')} KiB" if time_rss else "")
            + (f" daemons {rec['daemon_hwm_kib_each']} KiB" if "daemon_hwm_kib_each" in rec else ""))
        return rec

    def timed_runs(self, cl, wl, prepare, verbose=False, time_rss=False, runs=None, limit=None):
        ms = []
        for i in range(runs or self.a.runs):
            prepare(i)
            ms.append(self.measure(cl, wl, i, verbose=verbose, time_rss=time_rss, limit=limit))
        return self.summarize(cl, wl, ms, verbose=verbose, time_rss=time_rss)

    def interleaved(self, clusters, wl, prepare, runs, time_rss=False):
        """The same workload for several tools, alternating run by run (the order
        flips every run) so that a busy spell on the machine hits every tool."""
        ms = {cl.tool: [] for cl in clusters}
        for i in range(runs):
            order = clusters if i % 2 == 0 else clusters[::-1]
            for cl in order:
                prepare(cl, i)
                ms[cl.tool].append(self.measure(cl, wl, i, time_rss=time_rss, limit=3600))
        return {cl.tool: self.summarize(cl, wl, ms[cl.tool], time_rss=time_rss) for cl in clusters}

    def untimed_sync(self, cl):
        r = self.sync(cl, limit=3600)
        if any(rc != 0 for rc in r["rcs"]):
            raise RuntimeError(f"{cl.tool}: untimed sync failed: {r['rcs']} "
                               + "; ".join((o + e)[-300:] for _, o, e in r["res"]))
        d = cl.verify()
        if d:
            raise RuntimeError(f"{cl.tool}: untimed sync left trees different: {d}")

    # -- the main suite: every workload for every tool, the tools alternating
    def suite(self, clusters, names):
        """Each workload runs for every tool in turn, run by run (the order flips
        every run, as in `interleaved`), so that a busy spell of the shared
        machine, or the file system's state, falls on every tool alike. (One
        tool's whole suite after the other's let the first tool's initial syncs
        meet a disk full of inodes freed moments before by the tree it had just
        deleted, which this ext4 is slow to allocate around.)"""
        a = self.a
        runs = a.runs
        for cl in clusters:
            cl.start_daemons()

        def each(wl, prepare, verbose=False, rss_for=()):
            ms = {cl.tool: [] for cl in clusters}
            for i in range(runs):
                order = clusters if i % 2 == 0 else clusters[::-1]
                for cl in order:
                    prepare(cl, i)
                    ms[cl.tool].append(self.measure(cl, wl, i, verbose=verbose,
                                                    time_rss=cl.tool in rss_for))
            for cl in clusters:
                self.summarize(cl, wl, ms[cl.tool], verbose=verbose, time_rss=cl.tool in rss_for)

        # 1. initial
        each("initial", lambda cl, i: cl.reset_empty())
        for cl in clusters:
            if "median_s" not in self.results["initial"][cl.tool]:
                # leave a synced state for the rest anyway
                cl.reset_empty()
                self.untimed_sync(cl)

        # 2. no change
        each("nochange", lambda cl, i: None)

        # 3. one changed file
        def prep_one(cl, i):
            p = os.path.join(cl.trees[1], self.rnd.choice(names))
            old = os.path.getsize(p)
            size = self.rnd.choice([s for s in range(1024, 4097, 7) if s != old])
            with open(p, "wb") as fh:
                fh.write(self.rnd.randbytes(size))
            t = self.next_mtime()
            os.utime(p, (t, t))
        each("one_changed", prep_one)

        # 4. deletes
        ndel = a.files // 10

        def stash(cl):
            return os.path.join(self.base, f"stash-{cl.tool}")

        def prep_del(cl, i):
            if i > 0:  # put the deleted files back and sync them (untimed)
                subprocess.run(["cp", "-a", stash(cl) + "/.", cl.trees[1]], check=True)
                self.untimed_sync(cl)
            empty_dir(stash(cl))
            victims = self.rnd.sample(names, ndel)
            for rel in victims:
                os.makedirs(os.path.dirname(os.path.join(stash(cl), rel)), exist_ok=True)
                os.rename(os.path.join(cl.trees[1], rel), os.path.join(stash(cl), rel))
        each("deletes", prep_del)
        for cl in clusters:
            subprocess.run(["cp", "-a", stash(cl) + "/.", cl.trees[1]], check=True)
            shutil.rmtree(stash(cl))
            self.untimed_sync(cl)

        # 5. a new big file
        def big(cl):
            return os.path.join(cl.trees[1], "big.bin")

        def prep_big(cl, i):
            if os.path.exists(big(cl)):
                os.unlink(big(cl))
                self.untimed_sync(cl)
            shutil.copy2(self.big_src, big(cl))
        each("new_big", prep_big, verbose=True, rss_for=("csync",))

        # 6. 1 MiB changed in the middle of it
        def prep_mid(cl, i):
            size = os.path.getsize(big(cl))
            with open(big(cl), "r+b") as fh:
                fh.seek(size // 2)
                fh.write(self.rnd.randbytes(1 << 20))
            t = self.next_mtime()
            os.utime(big(cl), (t, t))
        each("big_1mib", prep_mid, verbose=True)
        for cl in clusters:
            os.unlink(big(cl))
            self.untimed_sync(cl)

        # silent peer in place of the last peer
        if not a.skip_silent:
            for cl in clusters:
                self.silent(cl, names)
        for cl in clusters:
            cl.stop()

    def silent(self, cl, names):
        last = cl.peers[-1]
        cl.stop_daemon(last)
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((ip(last), cl.port))
        ls.listen(64)
        held = []

        def accept_forever():
            while True:
                try:
                    c, _ = ls.accept()
                except OSError:
                    return
                held.append(c)  # never read, never write, never close
        threading.Thread(target=accept_forever, daemon=True).start()
        try:
            p = os.path.join(cl.trees[1], names[0])
            with open(p, "ab") as fh:
                fh.write(b"x")
            t = self.next_mtime()
            os.utime(p, (t, t))
            limit = 30.0 if cl.tool == "csync" else HANG_LIMIT
            r = self.sync(cl, limit=limit)
            killed = any(rc is None for rc in r["rcs"])
            others = all(same_trees(cl.trees[1], cl.trees[n])[0] for n in cl.peers[:-1])
            rec = {"s": round(r["s"], 3), "killed": killed, "rcs": r["rcs"],
                   "silent": f"n{last}", "others_synced": others}
            if cl.tool == "csync":
                tail = "".join(o + e for _, o, e in r["res"]).strip().splitlines()
                rec["message"] = tail[-1][:200] if tail else ""
            self.record("silent_peer", cl.tool, **rec)
            log(f"  {cl.tool:6s} silent peer: {rec}")
        finally:
            try:
                ls.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            ls.close()
            for c in held:
                c.close()


def fmt_s(rec):
    if rec is None:
        return "-"
    if "median_s" not in rec:
        return "FAILED"
    s = f"{rec['median_s']:.3f}"
    if rec.get("failed_runs"):
        s += f" ({rec['failed_runs']} failed)"
    return s


def ratio(x, y):
    return round(x / y, 2) if x and y else None


def fmt_r(x):
    return "-" if x is None else f"{x:.2f}"


def med(R, wl, tool):
    return (R.get(wl, {}).get(tool) or {}).get("median_s")


# ---------------------------------------------------------------- modes

def run_main(a, b, base, bins, classes, tools, port, fs, clusters):
    log(f"building trees in {base} ...")
    src = os.path.join(base, "src")
    names = make_tree(src, a.files, 42)
    b.big_src = os.path.join(base, "big.src")
    with open(b.big_src, "wb") as fh:
        rnd = random.Random(5)
        for _ in range(a.big_mib):
            fh.write(rnd.randbytes(1 << 20))
    mine = []
    for k, t in enumerate(tools):
        cl = classes[t](os.path.join(base, t), bins[t], port + k, src, peers=a.peers)
        clusters.append(cl)
        mine.append(cl)
    log("== " + ", ".join(tools) + " (alternating run by run)")
    b.suite(mine, names)
    for cl in mine:
        cl.stop()
        bury(cl.base)
    shutil.rmtree(src, ignore_errors=True)
    os.unlink(b.big_src)

    labels = [
        ("initial", f"initial sync, {a.files:,} files of 1–4 KiB"),
        ("nochange", f"no change, {a.files:,} files"),
        ("one_changed", f"1 changed among {a.files:,}"),
        ("deletes", f"{a.files // 10:,} deletes among {a.files:,}"),
        ("new_big", f"new {a.big_mib} MiB file"),
        ("big_1mib", f"1 MiB changed in {a.big_mib} MiB"),
    ]
    R = b.results
    with2 = "csync2" in tools
    print()
    print(f"## main: median of {a.runs} runs, seconds; n1 pushes to {a.peers} peers on loopback; "
          f"trees on {fs['type']} ({fs['dir']})")
    print()
    print("| workload | csync | rsync | csync/rsync |" + (" csync2 |" if with2 else ""))
    print("|---|---|---|---|" + ("---|" if with2 else ""))
    summary = {}
    for key, label in labels:
        if key not in R:
            continue
        row = R[key]
        rr = ratio(med(R, key, "csync"), med(R, key, "rsync"))
        r2 = ratio(med(R, key, "csync"), med(R, key, "csync2"))
        summary[key] = {"label": label, **{t: row.get(t) for t in tools},
                        "csync_over_rsync": rr, "csync_over_csync2": r2}
        print(f"| {label} | {fmt_s(row.get('csync'))} | {fmt_s(row.get('rsync'))} | {fmt_r(rr)} |"
              + (f" {fmt_s(row.get('csync2'))} |" if with2 else ""))
    if "silent_peer" in R:
        sp = R["silent_peer"]
        cells = {}
        for t in ("csync", "rsync", "csync2"):
            x = sp.get(t)
            if x is None:
                cells[t] = "-"
            elif x["killed"]:
                cells[t] = f"> {HANG_LIMIT:.0f} s (killed)"
            else:
                cells[t] = f"{x['s']:.2f} (exit {x['rcs']}, others synced: {'yes' if x['others_synced'] else 'no'})"
        print(f"| silent peer in place of n{a.peers + 1} | {cells['csync']} | {cells['rsync']} | |"
              + (f" {cells['csync2']} |" if with2 else ""))
        summary["silent_peer"] = sp
    print()
    for key in ("new_big", "big_1mib"):
        if key in R:
            parts = []
            for t in tools:
                x = R[key].get(t, {})
                parts.append(f"{t}: tool-reported {x.get('wire_bytes', 'n/a')}, "
                             f"loopback {x.get('lo_bytes_min', 'n/a')}")
            print(f"bytes ({key}, all peers): " + "; ".join(parts))
    x = R.get("new_big", {}).get("csync", {})
    if "peak_rss_kib" in x:
        print(f"csync -x peak RSS (new_big): {mib(x['peak_rss_kib'])} MiB"
              + ("; daemons' VmHWM " + ", ".join(f"{n} {mib(v)}" for n, v in x["daemon_hwm_kib_each"].items())
                 + " MiB" if "daemon_hwm_kib_each" in x else ""))
    return summary


def run_scale(a, b, base, bins, classes, tools, port, fs, clusters):
    if "csync2" in tools:
        log("note: --scale leaves csync2 out (csync and rsync only)")
    tools = [t for t in tools if t in ("csync", "rsync")]
    log(f"building a {a.files:,}-file tree in {base} ...")
    src = os.path.join(base, "src-scale")
    make_tree(src, a.files, 44)
    for pi, P in enumerate(a.scale_peers):
        log(f"== {P} peers")
        cls = []
        for k, t in enumerate(tools):
            cl = classes[t](os.path.join(base, f"{t}-p{P}"), bins[t], port + 20 + 4 * pi + k, src, peers=P)
            clusters.append(cl)
            cls.append(cl)
            cl.start_daemons()
        b.interleaved(cls, f"scale_p{P}", lambda cl, i: cl.reset_empty(), a.runs)
        for cl in cls:
            cl.stop()
            bury(cl.base)
    shutil.rmtree(src, ignore_errors=True)

    R = b.results
    p0 = a.scale_peers[0]
    print()
    print(f"## scale: initial sync of {a.files:,} files of 1–4 KiB to P peers, median of {a.runs} runs, "
          f"seconds; trees on {fs['type']} ({fs['dir']}); rsync pushes to all peers in parallel")
    print()
    print(f"| peers | csync | rsync | csync/rsync | csync growth vs {p0} | rsync growth vs {p0} |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for P in a.scale_peers:
        wl = f"scale_p{P}"
        c, r = med(R, wl, "csync"), med(R, wl, "rsync")
        gc, gr = ratio(c, med(R, f"scale_p{p0}", "csync")), ratio(r, med(R, f"scale_p{p0}", "rsync"))
        summary[str(P)] = {"csync": R.get(wl, {}).get("csync"), "rsync": R.get(wl, {}).get("rsync"),
                           "csync_over_rsync": ratio(c, r), "csync_growth": gc, "rsync_growth": gr}
        print(f"| {P} | {fmt_s(R.get(wl, {}).get('csync'))} | {fmt_s(R.get(wl, {}).get('rsync'))} | "
              f"{fmt_r(ratio(c, r))} | {fmt_r(gc)} | {fmt_r(gr)} |")
    last = summary[str(a.scale_peers[-1])]
    if last["csync_growth"] and last["rsync_growth"]:
        ok = last["csync_growth"] <= last["rsync_growth"]
        print(f"\ncsync's time grows {'no faster' if ok else 'FASTER'} than rsync's from {p0} to "
              f"{a.scale_peers[-1]} peers ({last['csync_growth']:.2f}x vs {last['rsync_growth']:.2f}x)")
    return summary


def run_big(a, b, base, bins, classes, tools, port, fs, clusters):
    log(f"building a {a.big_files:,}-file tree in {base} ...")
    src = os.path.join(base, "src-big")
    make_tree(src, a.big_files, 43)
    fast = [t for t in tools if t in ("csync", "rsync")]
    cls = []
    for k, t in enumerate(fast):
        cl = classes[t](os.path.join(base, f"{t}-big"), bins[t], port + 60 + k, src, peers=a.peers)
        clusters.append(cl)
        cls.append(cl)
        cl.start_daemons()
    if cls:
        log("== initial (alternating)")
        b.interleaved(cls, "initial_big", lambda cl, i: cl.reset_empty(), a.big_runs, time_rss=True)
        log("== no change (alternating)")
        # the trees are in sync after the last initial run
        b.interleaved(cls, "nochange_big", lambda cl, i: None, a.big_runs, time_rss=True)
    for cl in cls:
        cl.stop()
        bury(cl.base)
    if "csync2" in tools:
        log("== csync2, once")
        cl = classes["csync2"](os.path.join(base, "csync2-big"), bins["csync2"], port + 68, src, peers=a.peers)
        clusters.append(cl)
        cl.start_daemons()
        # ~16 ms per file on ext4 (2,000 files: 33 s): 100,000 files may take most of an hour
        b.timed_runs(cl, "initial_big", lambda i: None, time_rss=True, runs=1, limit=4 * 3600)
        b.timed_runs(cl, "nochange_big", lambda i: None, time_rss=True, runs=1)
        cl.stop()
        shutil.rmtree(cl.base, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)

    R = b.results
    with2 = "csync2" in tools
    print()
    print(f"## big: {a.big_files:,} files of 1–4 KiB to {a.peers} peers, seconds (median of {a.big_runs} "
          f"runs; csync2 one run); trees on {fs['type']} ({fs['dir']})")
    print()
    print("| workload | csync | rsync | csync/rsync |" + (" csync2 |" if with2 else ""))
    print("|---|---|---|---|" + ("---|" if with2 else ""))
    summary = {}
    for wl, label in (("initial_big", f"initial sync, {a.big_files:,} files"),
                      ("nochange_big", f"no change, {a.big_files:,} files")):
        row = R.get(wl, {})
        rr = ratio(med(R, wl, "csync"), med(R, wl, "rsync"))
        summary[wl] = {"label": label, **{t: row.get(t) for t in tools}, "csync_over_rsync": rr}
        print(f"| {label} | {fmt_s(row.get('csync'))} | {fmt_s(row.get('rsync'))} | {fmt_r(rr)} |"
              + (f" {fmt_s(row.get('csync2'))} |" if with2 else ""))

    def rss_cell(wl, t):
        v = (R.get(wl, {}).get(t) or {}).get("peak_rss_kib")
        return "-" if v is None else f"{mib(v)} MiB"

    def hwm_cell(wl):
        e = (R.get(wl, {}).get("csync") or {}).get("daemon_hwm_kib_each")
        return "-" if not e else ", ".join(f"{n} {mib(v)}" for n, v in e.items()) + " MiB"

    for wl, what in (("initial_big", "initial sync"), ("nochange_big", "no change")):
        print(f"| peak RSS of the client, {what} (`csync -x` / each `rsync`) | {rss_cell(wl, 'csync')} | "
              f"{rss_cell(wl, 'rsync')} | |" + (f" {rss_cell(wl, 'csync2')} |" if with2 else ""))
        print(f"| peak RSS (VmHWM) of each csync daemon, {what} | {hwm_cell(wl)} | | |"
              + (" |" if with2 else ""))
    print("\n(target: ≤ 64 MiB for `csync -x` and for each daemon)")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", action="store_true",
                    help="initial sync of FILES files to 2, 4, 8 peers, csync vs rsync (instead of the main suite)")
    ap.add_argument("--big100k", action="store_true",
                    help="initial + no-change sync of BIG_FILES files, with peak RSS (instead of the main suite)")
    ap.add_argument("--runs", type=int, default=None, help="runs per workload (median; default 5, --quick 3)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-silent", action="store_true")
    ap.add_argument("--skip-100k", action="store_true", help=argparse.SUPPRESS)  # now the --big100k mode
    ap.add_argument("--files", type=int, default=None, help="files in the main and scale trees (default 10,000)")
    ap.add_argument("--big-mib", type=int, default=None, help="size of the big file (default 200)")
    ap.add_argument("--big-files", type=int, default=None, help="files for --big100k (default 100,000)")
    ap.add_argument("--big-runs", type=int, default=None, help="runs for --big100k (default 3, csync2 once)")
    ap.add_argument("--peers", type=int, default=2, help="peers for the main suite and --big100k (default 2)")
    ap.add_argument("--scale-peers", default="2,4,8", help="peer counts for --scale (default 2,4,8)")
    ap.add_argument("--tools", default="csync,csync2,rsync")
    ap.add_argument("--dir", default=None, help="where the trees go (default /var/tmp, the real disk)")
    ap.add_argument("--tmpfs", action="store_true", help="put the trees on tmpfs (/dev/shm) instead")
    ap.add_argument("--no-build", action="store_true", help="use target/release/csync as it is")
    ap.add_argument("--port", type=int, default=None, help="base TCP port (default: random)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    a.runs = a.runs or (3 if a.quick else 5)
    a.files = a.files or (2_000 if a.quick else 10_000)
    a.big_files = a.big_files or (20_000 if a.quick else 100_000)
    a.big_runs = a.big_runs or (1 if a.quick else 3)
    a.big_mib = a.big_mib or (40 if a.quick else 200)
    a.scale_peers = [int(x) for x in a.scale_peers.split(",") if x]
    if a.tmpfs and a.dir:
        sys.exit("--tmpfs and --dir: choose one")
    a.dir = "/dev/shm" if a.tmpfs else (a.dir or "/var/tmp")
    if a.peers < 1 or a.peers > 200 or any(p < 1 or p > 200 for p in a.scale_peers):
        sys.exit("peers: 1 to 200")
    tools = [t for t in a.tools.split(",") if t]
    modes = [m for m, on in (("scale", a.scale), ("big100k", a.big100k)) if on] or ["main"]
    if "main" in modes and a.peers != 2 and "csync2" in tools:
        log(f"note: csync2 pushes to its {a.peers} peers one after the other")
    if not os.path.exists("/usr/bin/time"):
        sys.exit("peak RSS needs GNU time (/usr/bin/time): apt-get install -y time")

    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], check=True)
    bins = {"csync": os.path.abspath("target/release/csync"),
            "csync2": shutil.which("csync2") or "/usr/sbin/csync2",
            "rsync": shutil.which("rsync")}
    for t in tools:
        if not bins.get(t) or not os.path.exists(bins[t]):
            sys.exit(f"{t} not found (apt-get install -y {t})")
    classes = {"csync": CsyncCluster, "csync2": Csync2Cluster, "rsync": RsyncCluster}
    port = a.port or random.Random().randrange(41000, 59000, 100)

    base = tempfile.mkdtemp(prefix="csync-sync-bench-", dir=a.dir)
    fs = fs_info(base)
    fs["dir"] = a.dir
    log(f"trees in {base}: {fs['type']} ({fs['device']} on {fs['mount']})")
    if fs["type"] not in ("tmpfs", "ramfs"):
        global GRAVEYARD
        GRAVEYARD = os.path.join(base, "graveyard")
    clusters = []
    t_start = time.time()
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "modes": modes,
        "filesystem": fs,
        "runs": a.runs, "files": a.files, "peers": a.peers, "big_mib": a.big_mib,
        "tools": tools,
        "versions": {t: subprocess.run([bins[t], "--version"] if t != "csync2" else ["true"],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                                       ).stdout.decode().splitlines()[:1] for t in tools},
    }
    try:
        b = Bench(a, base)
        args = (a, b, base, bins, classes, tools, port, fs, clusters)
        if "main" in modes:
            out["results"] = run_main(*args)
        if "scale" in modes:
            out["scale_peers"] = a.scale_peers
            out["scale"] = run_scale(*args)
        if "big100k" in modes:
            out.update(big_files=a.big_files, big_runs=a.big_runs)
            out["big"] = run_big(*args)
        out["elapsed_s"] = round(time.time() - t_start, 1)
        print()
        print(json.dumps(out, indent=2))
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(out, fh, indent=2)
    finally:
        for cl in clusters:
            cl.stop()
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
