"""A slow store never stalls dispatch: AddHandler, RemoveHandler and
ListHandlers run on handlerd's control thread, not on the completion-queue
threads that serve Dispatch.

The disk is made slow honestly: handlerd runs with an LD_PRELOAD shim
(compiled here with the system C compiler) that makes every fsync and
fdatasync sleep SLOW_FSYNC_MS first, so each SQLite commit (WAL,
synchronous=FULL) takes at least that long. While a flood of AddHandler
calls commits, Dispatch latency must stay far below one commit; and a
SIGTERM while AddHandler calls wait for their commits still answers each of
them, and what was acknowledged is in the database after a restart.

Run by CTest as `/usr/bin/python3 tests/integration/test_slow_store.py`
with HANDLERD_BIN and HD_PY_GEN set (see CMakeLists.txt).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_slow_store")

SLOW = hd_harness.SLOW
SLOW_FSYNC_MS = int(200 * SLOW)
# Two queue threads: as many as concurrent AddHandler calls could block
# if they ran there, fewer than the flood below.
CQ_THREADS = 2
FLOOD_THREADS = 4
FLOOD_S = 3.0 * SLOW
# Dispatch's p99 while the store is slow: far below one commit.
P99_BOUND_MS = SLOW_FSYNC_MS / 4.0
RPC_TIMEOUT = 30.0 * SLOW

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow_disk(void) {
  const char *ms = getenv("HD_SLOW_FSYNC_MS");
  long n = ms ? atol(ms) : 0;
  struct timespec ts = {n / 1000, (n % 1000) * 1000000L};
  while (n > 0 && nanosleep(&ts, &ts) != 0)
    ;
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real)
    real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  slow_disk();
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real)
    real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  slow_disk();
  return real(fd);
}
"""


def build_shim(tmpdir):
    """Compiles the slow-disk shim; its path, or a skip naming what is
    missing."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        hd_harness.require_or_skip("no C compiler (cc) for the slow-disk "
                                   "LD_PRELOAD shim")
    src = os.path.join(tmpdir, "slow_fsync.c")
    lib = os.path.join(tmpdir, "slow_fsync.so")
    with open(src, "w") as f:
        f.write(SHIM_C)
    r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", lib, src,
                        "-ldl"], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("cannot build the shim:\n" + r.stderr)
    return lib


class SlowDaemon:
    """handlerd with --state-dir `state` on a disk whose fsyncs take
    SLOW_FSYNC_MS (none when `shim` is None)."""

    def __init__(self, state, shim):
        env = {}
        if shim:
            # An AddressSanitizer build wants its runtime first in the
            # list of libraries; the shim only wraps two libc calls.
            asan = os.environ.get("ASAN_OPTIONS", "")
            env = {"LD_PRELOAD": shim,
                   "HD_SLOW_FSYNC_MS": str(SLOW_FSYNC_MS),
                   "ASAN_OPTIONS": (asan + ":" if asan else "")
                   + "verify_asan_link_order=0"}
        with hd_harness.environ_set(env):
            self.h = hd_harness.Handlerd([
                "--state-dir", state, "--threads", str(CQ_THREADS),
                "--log-level", "warn"]).start()
        self.channel = grpc.insecure_channel(self.h.address)
        grpc.channel_ready_future(self.channel).result(timeout=RPC_TIMEOUT)
        self.stub = pb_grpc.HandlersStub(self.channel)

    def calls_being_served(self):
        """handlerd_calls_in_flight, less the GetStats call asking."""
        reply = self.stub.GetStats(pb.GetStatsRequest(), timeout=RPC_TIMEOUT)
        return int(sum(smp.value for smp in reply.samples
                       if smp.name == "handlerd_calls_in_flight")) - 1

    def add(self, key):
        t0 = time.monotonic()
        self.stub.AddHandler(
            hd_harness.add_request(pb, key, target=pb.Target(local="echo")),
            timeout=RPC_TIMEOUT)
        return time.monotonic() - t0

    def stop(self):
        self.channel.close()
        self.h.stop()


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


class SlowStoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hd-slow-store-")
        cls.shim = build_shim(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def state_dir(self, name):
        d = os.path.join(self.tmp, name)
        os.mkdir(d)
        return d

    def test_dispatch_not_stalled_by_slow_commits(self):
        d = SlowDaemon(self.state_dir("flood"), self.shim)
        try:
            # The shim works: one commit takes at least one slow fsync.
            self.assertGreaterEqual(d.add("d") * 1000, SLOW_FSYNC_MS)
            stop = threading.Event()
            adds, errors = [], []

            def flood(i):
                n = 0
                while not stop.is_set():
                    try:
                        adds.append(d.add("flood-%d-%d" % (i, n)))
                    except grpc.RpcError as e:
                        errors.append(e)
                        return
                    n += 1

            threads = [threading.Thread(target=flood, args=(i,))
                       for i in range(FLOOD_THREADS)]
            for t in threads:
                t.start()
            # Every queue thread would be held by now if commits ran there.
            time.sleep(SLOW_FSYNC_MS / 1000.0)
            req = hd_harness.update_request(pb, "d", json_value='{"p":1}')
            lat = []
            end = time.monotonic() + FLOOD_S
            try:
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    reply = d.stub.Dispatch(req, timeout=RPC_TIMEOUT)
                    lat.append(time.monotonic() - t0)
                    self.assertEqual(len(reply.results), 1)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            self.assertEqual(errors, [])
            p50 = percentile(lat, 0.50) * 1000
            p99 = percentile(lat, 0.99) * 1000
            sys.stderr.write(
                "slow store: fsync %d ms, %d AddHandler acked (median %.0f "
                "ms); %d Dispatch: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n" % (
                    SLOW_FSYNC_MS, len(adds),
                    percentile(adds, 0.5) * 1000 if adds else 0, len(lat),
                    p50, p99, max(lat) * 1000))
            # The flood was real: commits kept the store busy throughout.
            self.assertGreaterEqual(len(adds), 3)
            self.assertGreaterEqual(percentile(adds, 0.5) * 1000,
                                    SLOW_FSYNC_MS)
            self.assertLess(p99, P99_BOUND_MS)
            # ListHandlers waits behind the commits, not on a queue thread.
            keys = {h.key for h in d.stub.ListHandlers(
                pb.ListHandlersRequest(), timeout=RPC_TIMEOUT).handlers}
            self.assertEqual(len(keys), len(adds) + 1)
        finally:
            d.stop()

    def test_drain_answers_queued_adds_and_keeps_them(self):
        state = self.state_dir("drain")
        d = SlowDaemon(state, self.shim)
        n = 4  # one commit at a time: about n slow fsyncs, within the drain
        results = [None] * n

        def add(i):
            try:
                d.add("drain-%d" % i)
                results[i] = "ok"
            except grpc.RpcError as e:
                results[i] = e.code()

        threads = [threading.Thread(target=add, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        # All of them arrived (most wait behind the first commit) before
        # the SIGTERM: answered ones, read first, plus those being served.
        # A call leaves the gauge before its answer goes out, so none is
        # counted twice.
        def arrived():
            answered = sum(r is not None for r in results)
            return answered + d.calls_being_served() >= n

        hd_harness.eventually(arrived, 10.0, "%d AddHandler calls in" % n)
        d.h.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        rc = d.h.proc.wait(timeout=RPC_TIMEOUT)
        d.channel.close()
        d.h.proc = None  # exited: nothing for stop() to signal
        d.h._cleanup()
        self.assertEqual(rc, 0)
        acked = {"drain-%d" % i for i in range(n) if results[i] == "ok"}
        # Calls that arrived before the SIGTERM are answered, not cut off.
        self.assertEqual(results, ["ok"] * n)
        d = SlowDaemon(state, None)
        try:
            keys = {h.key for h in d.stub.ListHandlers(
                pb.ListHandlersRequest(), timeout=RPC_TIMEOUT).handlers}
            self.assertEqual(keys, acked)
        finally:
            d.stop()


if __name__ == "__main__":
    hd_harness.main()
