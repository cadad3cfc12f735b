#!/usr/bin/env python3
"""Sync benchmark: csync vs csync2 vs rsync (daemon mode), 3 nodes on loopback.

Same machine, same run: node n1 (127.0.77.1) pushes to n2 (127.0.77.2) and
n3 (127.0.77.3); every tree lives on tmpfs (/dev/shm). Each tool gets its own
copy of the source tree, its own daemons and its own indexes, so no state
leaks from one tool to the next. Workloads (median wall time of RUNS runs):

  initial      first sync of FILES files of 1-4 KiB in FILES/100 directories
               (csync/csync2: `-x` with empty indexes = check + push)
  nochange     nothing changed, FILES files
  nochange100k nothing changed, 100,000 files (--skip-100k to leave out)
  one_changed  one file rewritten among FILES
  deletes      FILES/10 files deleted
  new_big      a new file of BIG MiB (random bytes)
  big_1mib     1 MiB rewritten in place in the middle of that file

plus: a silent peer (accepts TCP, never answers) in place of n3, and peak
RSS of `csync -x` (GNU time %M) during nochange100k and new_big. Every
timed run is followed by a tree comparison (diff -rq); a run whose trees
differ is reported as a failure instead of a time. Run from the repo root
(as root: rsync's daemon must write as root):

    python3 benches/sync_compare.py [--runs 5] [--quick] [--skip-100k]
        [--tools csync,csync2,rsync] [--json out.json] [--keep]

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

IPS = {1: "127.0.77.1", 2: "127.0.77.2", 3: "127.0.77.3"}
HANG_LIMIT = 10.0  # seconds we wait for csync2/rsync on a silent peer


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
            out, err = p.communicate(timeout=left if limit is not None else 1800)
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


# ---------------------------------------------------------------- clusters

class Cluster:
    """Three nodes of one tool: n1 (source) and daemons on n2, n3."""

    tool = "?"

    def __init__(self, base, bin_, port, src):
        self.base, self.bin, self.port = base, bin_, port
        self.trees = {n: os.path.join(base, f"n{n}") for n in (1, 2, 3)}
        self.daemons = {}
        os.makedirs(base)
        copy_tree(src, self.trees[1])
        for n in (2, 3):
            os.makedirs(self.trees[n])
        self.setup()

    def setup(self):
        pass

    def start_daemon(self, n):
        raise NotImplementedError

    def start_daemons(self):
        for n in (2, 3):
            self.daemons[n] = self.start_daemon(n)
        for n in (2, 3):
            wait_port(IPS[n], self.port)

    def stop_daemon(self, n):
        kill_group(self.daemons.pop(n, None))

    def stop(self):
        for n in list(self.daemons):
            self.stop_daemon(n)

    def reset_empty(self):
        """Peers empty, indexes forgotten (for the initial-sync workload)."""
        self.stop()
        for n in (2, 3):
            empty_dir(self.trees[n])
        self.forget_state()
        self.start_daemons()

    def forget_state(self):
        pass

    def verify(self):
        for n in (2, 3):
            ok, diff = same_trees(self.trees[1], self.trees[n])
            if not ok:
                return f"n{n} differs: {diff}"
        return None

    def daemon_hwm_kib(self):
        """Peak RSS (VmHWM) of the daemon processes, KiB, max over n2/n3."""
        best = None
        for p in self.daemons.values():
            try:
                with open(f"/proc/{p.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            v = int(line.split()[1])
                            best = v if best is None else max(best, v)
            except OSError:
                pass
        return best


class CsyncCluster(Cluster):
    tool = "csync"

    def setup(self):
        b = self.base
        self.ca = os.path.join(b, "ca")
        subprocess.run([self.bin, "--new-ca", self.ca], check=True, stdout=subprocess.DEVNULL)
        key = os.path.join(b, "group.key")
        subprocess.run([self.bin, "-k", key], check=True, stdout=subprocess.DEVNULL)
        cfg = (
            f"group bench {{ host n1@{IPS[1]} n2@{IPS[2]} n3@{IPS[3]}; key csync2.key; include %r%; }}\n"
            f"prefix r {{ on n1: {self.trees[1]}; on n2: {self.trees[2]}; on n3: {self.trees[3]}; }}\n"
        )
        self.sys, self.db = {}, {}
        for n in (1, 2, 3):
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
        for n in (1, 2, 3):
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
        cfg = (
            "nossl * *;\n"
            f"group bench {{ host {IPS[1]} {IPS[2]} {IPS[3]}; key csync2.key; include %r%; }}\n"
            f"prefix r {{ on {IPS[1]}: {self.trees[1]}; on {IPS[2]}: {self.trees[2]}; "
            f"on {IPS[3]}: {self.trees[3]}; }}\n"
        )
        self.sys, self.db = {}, {}
        for n in (1, 2, 3):
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
        return start([self.bin, "-N", IPS[n], "-D", self.db[n], "-p", str(self.port), "-ii"],
                     env=self.env(n), log_path=os.path.join(self.base, f"daemon{n}.log"))

    def forget_state(self):
        for n in (1, 2, 3):
            empty_dir(self.db[n])

    def sync_cmds(self, verbose=False, extra=()):
        return [[self.bin, "-N", IPS[1], "-D", self.db[1], "-p", str(self.port), "-x", *extra]]

    def env1(self):
        return self.env(1)

    def init_index(self):
        """Record the current state on every node without marking anything dirty."""
        for n in (1, 2, 3):
            subprocess.run([self.bin, "-N", IPS[n], "-D", self.db[n], "-cIr"], env=self.env(n),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def wire_bytes(results):
        return None


class RsyncCluster(Cluster):
    tool = "rsync"

    def setup(self):
        self.conf = {}
        for n in (2, 3):
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
                      "--address", IPS[n], "--port", str(self.port)])

    def sync_cmds(self, verbose=False, extra=()):
        return [[self.bin, "-a", "--delete", "--sockopts=TCP_NODELAY", *extra,
                 *(["--stats"] if verbose else []),
                 self.trees[1] + "/", f"rsync://{IPS[n]}:{self.port}/mod/"] for n in (2, 3)]

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
        rss_file = None
        if time_rss:
            rss_file = os.path.join(self.base, "rss.txt")
            cmds = [["/usr/bin/time", "-f", "%M", "-o", rss_file, *c] for c in cmds]
        lo0 = lo_bytes()
        dt, res = run_parallel(cmds, env=cl.env1(), limit=limit)
        lo1 = lo_bytes()
        rss = None
        if rss_file and os.path.exists(rss_file):
            with open(rss_file) as fh:
                nums = re.findall(r"^\d+$", fh.read(), re.M)
                rss = int(nums[-1]) if nums else None
        return {
            "s": dt,
            "rcs": [r[0] for r in res],
            "res": res,
            "lo": (lo1 - lo0) if lo0 is not None and lo1 is not None else None,
            "rss_kib": rss,
        }

    def timed_runs(self, cl, wl, prepare, verbose=False, time_rss=False):
        times, wires, los, rsss, errors = [], [], [], [], []
        for i in range(self.a.runs):
            prepare(i)
            r = self.sync(cl, verbose=verbose, time_rss=time_rss)
            bad = [rc for rc in r["rcs"] if rc != 0]
            if bad:
                msg = "; ".join((o + e).strip()[-300:] for _, o, e in r["res"])
                errors.append(f"exit {r['rcs']}: {msg}")
                log(f"    {cl.tool} {wl} run {i}: exit {r['rcs']}: {msg}")
                continue
            diff = cl.verify()
            if diff:
                errors.append(diff)
                log(f"    {cl.tool} {wl} run {i}: trees differ: {diff}")
                continue
            times.append(r["s"])
            w = cl.wire_bytes(r["res"])
            if w is not None:
                wires.append(w)
            if r["lo"] is not None:
                los.append(r["lo"])
            if r["rss_kib"] is not None:
                rsss.append(r["rss_kib"])
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
        hwm = cl.daemon_hwm_kib()
        if time_rss and hwm is not None:
            rec["daemon_hwm_kib"] = hwm
        self.record(wl, cl.tool, **rec)
        med = rec.get("median_s")
        log(f"  {cl.tool:6s} {wl:12s} median {med if med is not None else 'FAILED'}"
            f" runs {rec['runs']}" + (f" wire {rec.get('wire_bytes')}" if verbose else "")
            + (f" lo {rec.get('lo_bytes_min')}" if verbose else "")
            + (f" rss {rec.get('peak_rss_kib')} KiB" if time_rss else ""))
        return rec

    def untimed_sync(self, cl):
        r = self.sync(cl, limit=1800)
        if any(rc != 0 for rc in r["rcs"]):
            raise RuntimeError(f"{cl.tool}: untimed sync failed: {r['rcs']} "
                               + "; ".join((o + e)[-300:] for _, o, e in r["res"]))
        d = cl.verify()
        if d:
            raise RuntimeError(f"{cl.tool}: untimed sync left trees different: {d}")

    # -- the 10k suite for one tool
    def suite(self, cl, names):
        a = self.a
        cl.start_daemons()
        tool = cl.tool

        # 1. initial
        self.timed_runs(cl, "initial", lambda i: cl.reset_empty())
        if "median_s" not in self.results["initial"][tool]:
            # leave a synced state for the rest anyway
            cl.reset_empty()
            self.untimed_sync(cl)

        # 2. no change
        self.timed_runs(cl, "nochange", lambda i: None)

        # 4. one changed file
        def prep_one(i):
            p = os.path.join(cl.trees[1], self.rnd.choice(names))
            old = os.path.getsize(p)
            size = self.rnd.choice([s for s in range(1024, 4097, 7) if s != old])
            with open(p, "wb") as fh:
                fh.write(self.rnd.randbytes(size))
            t = self.next_mtime()
            os.utime(p, (t, t))
        self.timed_runs(cl, "one_changed", prep_one)

        # 5. deletes
        ndel = a.files // 10
        stash = os.path.join(self.base, f"stash-{tool}")

        def prep_del(i):
            if i > 0:  # put the deleted files back and sync them (untimed)
                subprocess.run(["cp", "-a", stash + "/.", cl.trees[1]], check=True)
                self.untimed_sync(cl)
            empty_dir(stash)
            victims = self.rnd.sample(names, ndel)
            for rel in victims:
                os.makedirs(os.path.dirname(os.path.join(stash, rel)), exist_ok=True)
                os.rename(os.path.join(cl.trees[1], rel), os.path.join(stash, rel))
        self.timed_runs(cl, "deletes", prep_del)
        subprocess.run(["cp", "-a", stash + "/.", cl.trees[1]], check=True)
        shutil.rmtree(stash)
        self.untimed_sync(cl)

        # 6. a new big file
        big = os.path.join(cl.trees[1], "big.bin")

        def prep_big(i):
            if os.path.exists(big):
                os.unlink(big)
                self.untimed_sync(cl)
            shutil.copy2(self.big_src, big)
        self.timed_runs(cl, "new_big", prep_big, verbose=True, time_rss=(tool == "csync"))

        # 7. 1 MiB changed in the middle of it
        size = os.path.getsize(big)

        def prep_mid(i):
            with open(big, "r+b") as fh:
                fh.seek(size // 2)
                fh.write(self.rnd.randbytes(1 << 20))
            t = self.next_mtime()
            os.utime(big, (t, t))
        self.timed_runs(cl, "big_1mib", prep_mid, verbose=True)
        os.unlink(big)
        self.untimed_sync(cl)

        # silent peer in place of n3
        if not a.skip_silent:
            self.silent(cl, names)
        cl.stop()

    def silent(self, cl, names):
        cl.stop_daemon(3)
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((IPS[3], cl.port))
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
            ok2, _ = same_trees(cl.trees[1], cl.trees[2])
            rec = {"s": round(r["s"], 3), "killed": killed, "rcs": r["rcs"],
                   "n2_synced": ok2}
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

    def nochange_big(self, cl):
        """No-change sync on the big tree: initial state made untimed."""
        cl.start_daemons()
        if cl.tool == "csync2":
            # a real first sync of 100k files takes csync2 minutes: copy the tree
            # to the peers and record it on every node with `-cIr` instead
            for n in (2, 3):
                os.rmdir(cl.trees[n])
                copy_tree(cl.trees[1], cl.trees[n])
            cl.init_index()
        else:
            self.untimed_sync(cl)
        self.timed_runs(cl, "nochange_100k", lambda i: None, time_rss=(cl.tool == "csync"))
        cl.stop()


def fmt_s(rec):
    if rec is None:
        return "-"
    if "median_s" not in rec:
        return "FAILED"
    s = f"{rec['median_s']:.3f}"
    if rec.get("failed_runs"):
        s += f" ({rec['failed_runs']} failed)"
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-100k", action="store_true")
    ap.add_argument("--skip-silent", action="store_true")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--big-mib", type=int, default=None)
    ap.add_argument("--tools", default="csync,csync2,rsync")
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--port", type=int, default=None, help="base TCP port (default: random)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    a.runs = a.runs or (3 if a.quick else 5)
    a.files = a.files or (2_000 if a.quick else 10_000)
    a.files_big = 20_000 if a.quick else 100_000
    a.big_mib = a.big_mib or (40 if a.quick else 200)
    tools = [t for t in a.tools.split(",") if t]

    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True)
    bins = {"csync": os.path.abspath("target/release/csync"),
            "csync2": shutil.which("csync2") or "/usr/sbin/csync2",
            "rsync": shutil.which("rsync")}
    for t in tools:
        if not bins.get(t) or not os.path.exists(bins[t]):
            sys.exit(f"{t} not found (apt-get install -y {t})")
    classes = {"csync": CsyncCluster, "csync2": Csync2Cluster, "rsync": RsyncCluster}
    port = a.port or random.Random().randrange(41000, 59000, 10)

    base = tempfile.mkdtemp(prefix="csync-sync-bench-", dir=a.dir)
    clusters = []
    t_start = time.time()
    try:
        b = Bench(a, base)
        log(f"building trees in {base} ...")
        src = os.path.join(base, "src10k")
        names = make_tree(src, a.files, 42)
        b.big_src = os.path.join(base, "big.src")
        with open(b.big_src, "wb") as fh:
            rnd = random.Random(5)
            for _ in range(a.big_mib):
                fh.write(rnd.randbytes(1 << 20))
        src_big = None
        if not a.skip_100k:
            src_big = os.path.join(base, "src100k")
            make_tree(src_big, a.files_big, 43)

        for k, t in enumerate(tools):
            log(f"== {t}")
            cl = classes[t](os.path.join(base, t), bins[t], port + k, src)
            clusters.append(cl)
            b.suite(cl, names)
            cl.stop()
            shutil.rmtree(cl.base, ignore_errors=True)
            if src_big:
                cl = classes[t](os.path.join(base, t + "-big"), bins[t], port + 5 + k, src_big)
                clusters.append(cl)
                b.nochange_big(cl)
                cl.stop()
                shutil.rmtree(cl.base, ignore_errors=True)

        # ---- report
        labels = [
            ("initial", f"initial sync, {a.files:,} files"),
            ("nochange", f"no change, {a.files:,} files"),
            ("nochange_100k", f"no change, {a.files_big:,} files"),
            ("one_changed", f"1 changed among {a.files:,}"),
            ("deletes", f"{a.files // 10:,} deletes among {a.files:,}"),
            ("new_big", f"new {a.big_mib} MiB file"),
            ("big_1mib", f"1 MiB changed in {a.big_mib} MiB"),
        ]
        R = b.results
        print()
        print(f"median of {a.runs} runs, seconds; n1 pushes to n2 and n3 (loopback, tmpfs)")
        hdr = "| workload | " + " | ".join(tools) + " | csync/rsync | csync/csync2 |"
        print(hdr)
        print("|" + "---|" * (len(tools) + 3))
        summary = {}
        for key, label in labels:
            if key not in R:
                continue
            row = R[key]
            cells = [fmt_s(row.get(t)) for t in tools]
            ratios = {}
            c = row.get("csync", {}).get("median_s")
            for other in ("rsync", "csync2"):
                o = row.get(other, {}).get("median_s")
                ratios[other] = round(c / o, 2) if c and o else None
            summary[key] = {"label": label, **{t: row.get(t) for t in tools},
                            "csync_over_rsync": ratios["rsync"],
                            "csync_over_csync2": ratios["csync2"]}
            rr = lambda x: "-" if x is None else f"{x:.2f}"
            print(f"| {label} | " + " | ".join(cells) + f" | {rr(ratios['rsync'])} | {rr(ratios['csync2'])} |")
        if "silent_peer" in R:
            sp = R["silent_peer"]
            cells = []
            for t in tools:
                x = sp.get(t)
                if x is None:
                    cells.append("-")
                elif x["killed"]:
                    cells.append(f"> {HANG_LIMIT:.0f} s (killed)")
                else:
                    cells.append(f"{x['s']:.2f} (exit {x['rcs']})")
            print("| silent peer (n3 accepts, never answers) | " + " | ".join(cells) + " | | |")
            summary["silent_peer"] = sp
        print()
        for key in ("new_big", "big_1mib"):
            if key in R:
                parts = []
                for t in tools:
                    x = R[key].get(t, {})
                    parts.append(f"{t}: tool-reported {x.get('wire_bytes', 'n/a')}, "
                                 f"loopback {x.get('lo_bytes_min', 'n/a')}")
                print(f"bytes ({key}, both peers): " + "; ".join(parts))
        for key in ("nochange_100k", "new_big"):
            x = R.get(key, {}).get("csync", {})
            if "peak_rss_kib" in x:
                print(f"csync -x peak RSS ({key}): {x['peak_rss_kib'] / 1024:.1f} MiB"
                      + (f"; daemon VmHWM {x['daemon_hwm_kib'] / 1024:.1f} MiB" if "daemon_hwm_kib" in x else ""))
        out = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "runs": a.runs, "files": a.files, "files_big": None if a.skip_100k else a.files_big,
            "big_mib": a.big_mib, "tools": tools,
            "versions": {t: subprocess.run([bins[t], "--version"] if t != "csync2" else ["true"],
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                                           ).stdout.decode().splitlines()[:1] for t in tools},
            "elapsed_s": round(time.time() - t_start, 1),
            "results": summary,
        }
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
