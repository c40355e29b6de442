"""Overload: far more concurrent calls than --max-calls, through a real
client (Debian's python3-grpcio, asyncio API).

handlerd runs with --max-calls 200. The test opens 2 000 DispatchStream calls
at once (over 8 channels), each sending 3 `update` events to a `count`
handler, and holds every stream it gets in after its first event until all
2 000 have their first answer, so the limit is really hit; 1 000 unary
Dispatch calls run alongside (400 while the streams are held, 300 as they
are let go, 300 at once after they end). Then:

* every call gets an answer within the overall timeout: OK (a stream with
  all 3 replies, each OK) or RESOURCE_EXHAUSTED with a message naming the
  limit ("calls in flight", "200"), never any other status, never a hang;
* handlerd's resident memory (VmRSS from /proc/<pid>/status, sampled every
  20 ms) stays under RSS_BOUND_MIB;
* handlerd serves normally right after: a Dispatch succeeds, and the count
  it returns is exactly 1 + the number of events answered OK (no event
  counted twice, none counted without an answer);
* it still exits 0 on SIGTERM.

The figures (peak RSS, OK and RESOURCE_EXHAUSTED counts, wall time) are
printed. Skipped under HD_IT_WRAPPER (valgrind): the load is too slow there
and the RSS would be valgrind's. Sanitizer builds get a bound that allows
for ASan's own memory; the 64 MiB bound is the plain build's.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import asyncio
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_overload")
from grpc import aio  # noqa: E402

MAX_CALLS = 200
N_STREAMS = 2000
N_UNARY = 1000
N_CHANNELS = 8
EVENTS_PER_STREAM = 3
CALL_DEADLINE_S = 60.0
OVERALL_TIMEOUT_S = 90.0
RECOVER_WITHIN_S = 2.0
# Measured on the reference machine (2 cores, RelWithDebInfo): about 19 MiB
# before the burst and 24 MiB at its peak. The bound leaves room for a
# sanitizer-free build on another allocator, yet catches per-call state that
# is not freed or a queue that grows with the number of refused calls.
RSS_BOUND_MIB = 64
# Sanitizer builds (scripts/test sets HD_IT_SLOW) carry ASan's shadow memory
# and quarantine (up to 256 MiB by default): the bound is not theirs.
if hd_harness.SLOW > 1:
    RSS_BOUND_MIB = 64 + 512
SAMPLE_EVERY_S = 0.02
KEY = "ov"


def update(path):
    return pb.DispatchRequest(key=KEY, event="update", update=pb.UpdateArgs(
        topic_path=path, topic_value=pb.TopicValue(json_value='{"v":1}')))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/%d/status" % pid)


class RssSampler:
    """Samples a process's VmRSS in a thread until stop()."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append(rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(SAMPLE_EVERY_S)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return max(self.samples) if self.samples else 0


class Outcome:
    def __init__(self, kind, i):
        self.kind = kind  # "stream" or "unary"
        self.i = i
        self.code = None  # grpc.StatusCode once answered
        self.details = ""
        self.replies = []  # stream: DispatchStreamReply; unary: DispatchReply


async def run_stream(stub, i, gate, first_answer, out):
    o = Outcome("stream", i)
    out.append(o)

    async def requests():
        yield update("s/%d/0" % i)
        await gate.wait()
        for n in range(1, EVENTS_PER_STREAM):
            yield update("s/%d/%d" % (i, n))

    call = stub.DispatchStream(requests(), timeout=CALL_DEADLINE_S)
    try:
        async for r in call:
            o.replies.append(r)
            if len(o.replies) == 1:
                first_answer()
        o.code = grpc.StatusCode.OK
    except aio.AioRpcError as e:
        o.code, o.details = e.code(), e.details() or ""
        if not o.replies:
            first_answer()


async def run_unary(stub, i, out):
    o = Outcome("unary", i)
    out.append(o)
    try:
        o.replies.append(await stub.Dispatch(update("u/%d" % i),
                                             timeout=CALL_DEADLINE_S))
        o.code = grpc.StatusCode.OK
    except aio.AioRpcError as e:
        o.code, o.details = e.code(), e.details() or ""


async def overload(address, out, phases):
    channels = [aio.insecure_channel(address) for _ in range(N_CHANNELS)]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 10)
        stubs = [pb_grpc.HandlersStub(ch) for ch in channels]
        gate = asyncio.Event()
        answered = [0]
        all_first = asyncio.Event()

        def first_answer():
            answered[0] += 1
            if answered[0] == N_STREAMS:
                all_first.set()

        t0 = time.monotonic()
        streams = [asyncio.ensure_future(run_stream(
            stubs[i % N_CHANNELS], i, gate, first_answer, out))
            for i in range(N_STREAMS)]
        # The unary calls come in three groups: while the streams are
        # held, as they are let go, and once they have ended.
        cut1, cut2 = N_UNARY * 2 // 5, N_UNARY * 7 // 10

        def unary(lo, hi):
            return [asyncio.ensure_future(run_unary(
                stubs[i % N_CHANNELS], i, out)) for i in range(lo, hi)]

        unary1 = unary(0, cut1)
        # Hold the accepted streams until every stream has its first
        # answer: then the limit was reached, not just approached.
        try:
            await asyncio.wait_for(all_first.wait(), 30)
        except asyncio.TimeoutError:
            pass
        phases["held_s"] = time.monotonic() - t0
        phases["first_answers"] = answered[0]
        await asyncio.gather(*unary1)
        gate.set()
        unary2 = unary(cut1, cut2)
        await asyncio.gather(*streams, *unary2)
        await asyncio.gather(*unary(cut2, N_UNARY))
        phases["wall_s"] = time.monotonic() - t0
    finally:
        for ch in channels:
            await ch.close()


@unittest.skipIf(hd_harness.WRAPPER,
                 "HD_IT_WRAPPER is set: 2 000 streams are too slow under "
                 "valgrind/ASan wrappers and the RSS would be the wrapper's")
class TestOverload(unittest.TestCase):

    def setUp(self):
        self.h = hd_harness.Handlerd(["--max-calls", str(MAX_CALLS)]).start()
        self.channel = grpc.insecure_channel(self.h.address)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = pb_grpc.HandlersStub(self.channel)

    def tearDown(self):
        self.channel.close()
        if self.h.proc is not None:
            self.h.stop()

    def test_2000_streams_against_max_calls_200(self):
        self.stub.AddHandler(pb.AddHandlerRequest(
            key=KEY, target=pb.Target(local="count")), timeout=10)
        base_kib = rss_kib(self.h.proc.pid)
        sampler = RssSampler(self.h.proc.pid).start()
        out, phases = [], {}
        try:
            asyncio.run(asyncio.wait_for(
                overload(self.h.address, out, phases), OVERALL_TIMEOUT_S))
        except asyncio.TimeoutError:
            unanswered = [(o.kind, o.i) for o in out if o.code is None]
            self.fail("calls not answered within %.0f s: %d, e.g. %r\n%s"
                      % (OVERALL_TIMEOUT_S, len(unanswered), unanswered[:10],
                         self.h.stderr_text()))
        finally:
            peak_kib = sampler.stop()

        # Every call answered, OK or RESOURCE_EXHAUSTED naming the limit.
        self.assertEqual(len(out), N_STREAMS + N_UNARY)
        by_code = {}
        for o in out:
            by_code.setdefault(o.code, []).append(o)
        ok_events = 0
        for o in out:
            what = "%s %d" % (o.kind, o.i)
            self.assertIn(o.code, (grpc.StatusCode.OK,
                                   grpc.StatusCode.RESOURCE_EXHAUSTED),
                          "%s: %s %r" % (what, o.code, o.details))
            if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.assertIn("calls in flight", o.details, what)
                self.assertIn(str(MAX_CALLS), o.details, what)
                self.assertEqual(o.replies, [], "%s: refused after replies"
                                 % what)
                continue
            if o.kind == "stream":
                self.assertEqual([r.sequence for r in o.replies],
                                 list(range(EVENTS_PER_STREAM)), what)
                for r in o.replies:
                    self.assertEqual((r.code, r.message), (0, ""), what)
            for r in o.replies:
                self.assertEqual(len(r.results), 1, what)
                self.assertTrue(r.results[0].ok, "%s: %s"
                                % (what, r.results[0].error))
                ok_events += 1
        n_ok = len(by_code.get(grpc.StatusCode.OK, []))
        n_re = len(by_code.get(grpc.StatusCode.RESOURCE_EXHAUSTED, []))
        streams_ok = sum(o.kind == "stream" and o.code == grpc.StatusCode.OK
                         for o in out)

        # It serves normally right after (slots come back as the server
        # frees the calls the client has already seen end).
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                reply = self.stub.Dispatch(update("after"), timeout=10)
                break
            except grpc.RpcError as e:
                if (e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                        or time.monotonic() - started > RECOVER_WITHIN_S):
                    self.fail("Dispatch after the burst: %s %s"
                              % (e.code(), e.details()))
                time.sleep(0.02)
        recovered_s = time.monotonic() - started
        after_kib = rss_kib(self.h.proc.pid)

        print("\noverload: %d streams x %d events + %d unary, max-calls %d: "
              "OK %d (streams %d, events %d), RESOURCE_EXHAUSTED %d; "
              "held %.1f s (%d first answers), wall %.1f s; "
              "RSS before %.1f MiB, peak %.1f MiB, after %.1f MiB "
              "(bound %d MiB, %d samples); normal Dispatch after %.2f s "
              "(%d tries)"
              % (N_STREAMS, EVENTS_PER_STREAM, N_UNARY, MAX_CALLS, n_ok,
                 streams_ok, ok_events, n_re, phases.get("held_s", -1),
                 phases.get("first_answers", -1), phases.get("wall_s", -1),
                 base_kib / 1024, peak_kib / 1024, after_kib / 1024,
                 RSS_BOUND_MIB, len(sampler.samples), recovered_s, tries),
              file=sys.stderr)

        # The limit was really hit, and calls did get through.
        self.assertGreater(n_re, 0, "no call was refused: not an overload")
        self.assertGreaterEqual(streams_ok, MAX_CALLS // 2,
                                "too few streams served")
        self.assertEqual(phases.get("first_answers"), N_STREAMS,
                         "streams without a first answer while held")
        self.assertLess(peak_kib, RSS_BOUND_MIB * 1024,
                        "handlerd's RSS peaked at %.1f MiB"
                        % (peak_kib / 1024))
        self.assertGreater(len(sampler.samples), 10, "RSS barely sampled")

        # Exactly the events answered OK were counted.
        self.assertEqual(len(reply.results), 1)
        self.assertTrue(reply.results[0].ok, reply)
        self.assertEqual(reply.results[0].value.int64_value, ok_events + 1,
                         "count after the burst: events answered OK were %d"
                         % ok_events)
        self.assertEqual(len(self.stub.ListHandlers(
            pb.ListHandlersRequest(), timeout=10).handlers), 1)


if __name__ == "__main__":
    # grpcio's asyncio channels can leave a thread that blocks the
    # interpreter's shutdown: once in CI the suite passed ("OK") and the
    # process then hung until ctest's timeout. Exit with the suite's status
    # without waiting for them.
    result = unittest.main(verbosity=2, exit=False).result
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if result.wasSuccessful() else 1)
