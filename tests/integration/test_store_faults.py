"""A failing state database (--state-dir, SQLite) gives a clear error and
never loses an acknowledged registration:

* read-only: the state dir is a read-only bind mount (root bypasses file
  modes, so a mode-0400 file would prove nothing). handlerd still starts
  with the registrations it has, dispatch to them works, AddHandler and
  RemoveHandler fail with a status whose message says the database is
  read-only, and nothing changes: after a restart on the writable dir every
  registration is there, and none of the refused ones.
* disk full: the state dir on a 1 MiB tmpfs. First a filler file takes the
  last free byte: AddHandler fails with a message naming the cause (full /
  no space), dispatch keeps working, and once the filler is gone
  AddHandler works again without a restart. Then handlers with large
  webhook headers are added until the tmpfs is full. Every AddHandler that
  returned OK is there after a restart (in order), none that failed is.
* corrupt file at start (random bytes; a real database cut in half; a real
  database with its pages overwritten): handlerd exits non-zero within a
  few seconds with one stderr line naming the file and the problem, and
  leaves the file as it was.

What each failure answers (control.h, store.h, store_sqlite.c): a
read-only database is UNAVAILABLE with "cannot save (delete) the
registration: <file>: the database is read-only ..."; a full disk is
RESOURCE_EXHAUSTED (no room: retry later) with "cannot save the
registration: <file>: database or disk is full" (SQLite's SQLITE_FULL, not
its generic "disk I/O error").

The read-only and disk-full cases mount file systems: they need root,
mount(8) and CAP_SYS_ADMIN. Without them they fail with CI=true, naming
what is missing, and are skipped loudly otherwise
(hd_harness.require_or_skip).

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_store_faults")

RPC_TIMEOUT = 10.0
DB_NAME = "handlerd.db"
EXIT_WITHIN_S = 30.0 if hd_harness.WRAPPER else 10.0
# The message after "cannot save/delete the registration: <file>: ".
READ_ONLY = re.compile(r"the database is read-only \(its file system was "
                       r"read-only when handlerd started\)")
NO_SPACE = re.compile(r"database or disk is full$")
CORRUPT = re.compile(r"not a database|corrupt|malformed|damaged|invalid",
                     re.I)


def run(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True,
                          timeout=30)


def require_root():
    """Fails (CI=true) or skips loudly unless this runs as root with
    mount(8)."""
    if os.geteuid() != 0:
        hd_harness.require_or_skip(
            "needs root to mount a file system (read-only bind mount / tiny "
            "tmpfs); running as uid %d" % os.geteuid())
    if shutil.which("mount") is None:
        hd_harness.require_or_skip("needs mount(8) (util-linux), which is "
                                   "not on PATH")


def mount_or_skip(*argv):
    """Runs mount(8) with `argv`; fails (CI=true) or skips loudly when not
    root or when the mount fails (e.g. no CAP_SYS_ADMIN in this
    container)."""
    require_root()
    p = run("mount", *argv)
    if p.returncode != 0:
        hd_harness.require_or_skip(
            "cannot mount (mount %s): %s (needs CAP_SYS_ADMIN)"
            % (" ".join(argv), " ".join(p.stderr.split())))


def umount(path):
    p = run("umount", path)
    if p.returncode != 0:  # busy: detach it anyway
        run("umount", "-l", path)


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def big_headers(n_bytes, tag):
    return {"X-Pad-%s-%d" % (tag, i): "p" * 1000
            for i in range(max(1, n_bytes // 1000))}


class Daemon(hd_harness.Daemon):
    """A handlerd on `state` plus a stub (started at once)."""

    def __init__(self, state, extra=()):
        super().__init__(["--state-dir", state] + list(extra))
        self.start()

    def list(self):
        return [(h.key, h.handler_id, h.target) for h in
                self.stub.ListHandlers(pb.ListHandlersRequest(),
                                       timeout=RPC_TIMEOUT).handlers]

    def add(self, key, target):
        """AddHandler: (handler_id, None) or (None, grpc.RpcError)."""
        try:
            r = self.stub.AddHandler(pb.AddHandlerRequest(key=key,
                                                          target=target),
                                     timeout=RPC_TIMEOUT)
            return r.handler_id, None
        except grpc.RpcError as e:
            return None, e

    def count(self, key):
        r = self.stub.Dispatch(hd_harness.update_request(
            pb, key, json_value='{"v":1}'), timeout=RPC_TIMEOUT)
        return [(x.ok, x.value.int64_value) for x in r.results]


class _Case(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hd-store-faults-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.daemons = []
        self.addCleanup(self._close_all)

    def _close_all(self):
        for d in self.daemons:
            d.close()

    def start(self, state, what="handlerd"):
        try:
            d = Daemon(state)
        except hd_harness.HarnessError as e:
            self.fail("%s does not start: %s" % (what, e))
        self.daemons.append(d)
        return d

    def assert_store_failure(self, err, code, doing, state, cause, what, d):
        """`err` (a grpc.RpcError, or None when the call succeeded) is the
        store failure `code` with the message "cannot `doing` the
        registration: <state>/handlerd.db: <text matching `cause`>"."""
        self.assertIsNotNone(err, "%s succeeded" % what)
        facts = ("%s: %s %r\n--- handlerd stderr (end) ---\n%s"
                 % (what, err.code(), err.details(), d.stderr()[-3000:]))
        self.assertEqual(err.code(), code, facts)
        prefix = "cannot %s the registration: %s: " % (
            doing, os.path.join(state, DB_NAME))
        msg = err.details() or ""
        self.assertTrue(msg.startswith(prefix), "the message does not name "
                        "the operation and the file: " + facts)
        self.assertRegex(msg[len(prefix):], cause, "the message does not "
                         "name the cause: " + facts)


class TestReadOnly(_Case):

    def test_read_only_state_database(self):
        require_root()
        state = os.path.join(self.tmp, "state")
        d = self.start(state)
        a_id, err = d.add("ro-a", pb.Target(local="count"))
        self.assertIsNone(err)
        b_id, err = d.add("ro-b", pb.Target(local="count"))
        self.assertIsNone(err)
        before = d.list()
        d.stop()

        mount_or_skip("--bind", state, state)
        self.addCleanup(umount, state)
        p = run("mount", "-o", "remount,bind,ro", state)
        if p.returncode != 0:
            hd_harness.require_or_skip(
                "cannot remount %s read-only: %s (needs CAP_SYS_ADMIN)"
                % (state, " ".join(p.stderr.split())))
        db = os.path.join(state, DB_NAME)
        digest = file_digest(db)

        d = self.start(state, "handlerd on a read-only state database")
        self.assertEqual(d.list(), before)
        # Dispatch to what was registered keeps working.
        self.assertEqual(d.count("ro-a"), [(True, 1)])
        self.assertEqual(d.count("ro-b"), [(True, 1)])
        # Registrations fail, saying why; nothing changes in memory.
        for i in range(2):
            hid, err = d.add("ro-new", pb.Target(local="count"))
            self.assert_store_failure(err, grpc.StatusCode.UNAVAILABLE,
                                      "save", state, READ_ONLY,
                                      "AddHandler %d" % i, d)
        try:
            d.stub.RemoveHandler(pb.RemoveHandlerRequest(
                key="ro-b", handler_id=b_id), timeout=RPC_TIMEOUT)
            err = None
        except grpc.RpcError as e:
            err = e
        self.assert_store_failure(err, grpc.StatusCode.UNAVAILABLE,
                                  "delete", state, READ_ONLY,
                                  "RemoveHandler", d)
        self.assertEqual(d.list(), before, "in-memory registrations "
                         "changed though the database could not be written")
        self.assertEqual(d.count("ro-b"), [(True, 2)])
        d.stop()
        self.assertEqual(file_digest(db), digest)

        umount(state)
        d = self.start(state, "handlerd on the writable state dir again")
        self.assertEqual(d.list(), before)
        hid, err = d.add("ro-new", pb.Target(local="count"))
        self.assertIsNone(err, "AddHandler once writable: %r" % (err,))
        d.stop()


class TestDiskFull(_Case):

    def test_disk_full(self):
        mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(mnt)
        mount_or_skip("-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                      mnt)
        self.addCleanup(umount, mnt)
        state = os.path.join(mnt, "state")
        d = self.start(state)
        acked = []  # (key, id, target) in the order acknowledged
        rejected = []

        def add(key, target, want):
            hid, err = d.add(key, target)
            if err is None:
                acked.append((key, hid, want))
            else:
                rejected.append((key, err))
            return hid, err

        for i in range(3):
            hid, err = add("df-count", pb.Target(local="count"),
                           "local:count")
            self.assertIsNone(err, "AddHandler before the disk is full")

        # A filler takes every free byte.
        filler = os.path.join(mnt, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for chunk in (65536, 4096, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)
        url = "http://127.0.0.1:9/hook"
        for i in range(3):
            hid, err = add("df-full", pb.Target(webhook=pb.Webhook(
                url=url, headers=big_headers(8000, "f%d" % i))),
                "webhook:" + url)
            self.assert_store_failure(
                err, grpc.StatusCode.RESOURCE_EXHAUSTED, "save", state,
                NO_SPACE, "AddHandler on a full disk (%d)" % i, d)
        self.assertEqual(d.list(), acked, "a refused registration is "
                         "listed: it would be lost on restart")
        self.assertEqual(d.count("df-count"), [(True, 1)] * 3)

        # Space again: registrations work again, no restart needed.
        os.unlink(filler)
        hid, err = add("df-count", pb.Target(local="count"), "local:count")
        self.assertIsNone(err, "AddHandler after space was freed: %r"
                          % (err,))

        # Now grow the database itself until the file system is full.
        failed_at = None
        for i in range(400):
            hid, err = add("df-grow-%d" % (i % 5), pb.Target(
                webhook=pb.Webhook(url=url, headers=big_headers(
                    8000, "g%d" % i))), "webhook:" + url)
            if err is not None:
                self.assert_store_failure(
                    err, grpc.StatusCode.RESOURCE_EXHAUSTED, "save", state,
                    NO_SPACE, "AddHandler %d while growing" % i, d)
                failed_at = i
                break
        self.assertIsNotNone(failed_at, "1 MiB never filled up")
        self.assertGreater(failed_at, 5, "the disk filled up at once")
        self.assertEqual(sorted(d.list()), sorted(acked))
        self.assertEqual(d.count("df-count"), [(True, 2)] * 3 + [(True, 1)])
        d.stop()

        # Nothing acknowledged is lost, nothing refused came back.
        d = self.start(state, "handlerd on the full state dir")
        after = d.list()
        self.assertEqual(sorted(after), sorted(acked),
                         "after restart: missing %r, unexpected %r"
                         % (sorted(set(acked) - set(after)),
                            sorted(set(after) - set(acked))))
        # Within a key, the acknowledged order is kept.
        for key in {a[0] for a in acked}:
            self.assertEqual([a[1] for a in after if a[0] == key],
                             [a[1] for a in acked if a[0] == key], key)
        self.assertEqual(d.count("df-count"), [(True, 1)] * 4)
        d.stop()
        print("\ndisk full: %d registrations acknowledged, %d refused; the "
              "database filled up after %d growth adds"
              % (len(acked), len(rejected), failed_at), file=sys.stderr)


class TestCorruptAtStart(_Case):

    def make_db(self, state, n=60):
        """A real database with `n` registrations (2 KB of headers each)."""
        d = self.start(state)
        for i in range(n):
            hid, err = d.add("c-%d" % (i % 4), pb.Target(webhook=pb.Webhook(
                url="http://127.0.0.1:9/h%d" % i,
                headers=big_headers(2000, str(i)))))
            self.assertIsNone(err)
        d.stop()
        db = os.path.join(state, DB_NAME)
        self.assertEqual(sorted(os.listdir(state)), [DB_NAME],
                         "a clean stop left the WAL behind")
        return db

    def check_refused(self, state, db, what):
        binary = hd_harness.require_env("HANDLERD_BIN")
        before = file_digest(db)
        argv = hd_harness.WRAPPER + [binary, "--listen", "127.0.0.1:0",
                                     "--state-dir", state]
        started = time.monotonic()
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True,
                               timeout=EXIT_WITHIN_S + 20)
        except subprocess.TimeoutExpired:
            self.fail("%s: handlerd kept running on a corrupt database"
                      % what)
        took = time.monotonic() - started
        out = p.stderr + p.stdout
        self.assertNotEqual(p.returncode, 0, "%s: handlerd started on a "
                            "corrupt database\n%s" % (what, out))
        self.assertLess(took, EXIT_WITHIN_S, what)
        lines = [line for line in out.splitlines()
                 if DB_NAME in line and CORRUPT.search(line)]
        self.assertTrue(lines, "%s: no stderr line names %s and the problem:"
                        "\n%s" % (what, DB_NAME, out))
        self.assertEqual(file_digest(db), before,
                         "%s: handlerd changed the corrupt file" % what)
        return lines[0]

    def test_random_bytes(self):
        state = os.path.join(self.tmp, "state")
        os.mkdir(state, 0o700)
        db = os.path.join(state, DB_NAME)
        with open(db, "wb") as f:
            f.write(os.urandom(65536))
        os.chmod(db, 0o600)
        print("\nrandom bytes: %s" % self.check_refused(state, db,
                                                        "random bytes"),
              file=sys.stderr)

    def test_truncated_database(self):
        state = os.path.join(self.tmp, "state")
        db = self.make_db(state)
        size = os.path.getsize(db)
        self.assertGreater(size, 64 * 1024)
        os.truncate(db, size // 2)
        print("\ntruncated: %s" % self.check_refused(state, db,
                                                     "truncated database"),
              file=sys.stderr)

    def test_overwritten_pages(self):
        state = os.path.join(self.tmp, "state")
        db = self.make_db(state)
        size = os.path.getsize(db)
        with open(db, "r+b") as f:  # keep page 1 (header, schema)
            f.seek(4096)
            f.write(os.urandom(size - 4096))
        print("\noverwritten pages: %s" % self.check_refused(
            state, db, "database with overwritten pages"), file=sys.stderr)


if __name__ == "__main__":
    hd_harness.main()
