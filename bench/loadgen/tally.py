"""Counting received events and sampling their latency, in bulk per received chunk.

A connection hands :meth:`Tally.feed` a buffer region holding only complete
messages; the tally counts the latency markers in it with one ``bytes.count`` and,
for sampled connections, reads every marker's timestamp with one regex scan. One
receive timestamp is taken per chunk, so the cost per event is a few C calls.
"""

from __future__ import annotations

import random
from array import array

from bench.events import MARKER, MARKER_RE

__all__ = ["Tally"]


class Tally:
    """Counts events over all connections of one worker, and samples latencies.

    The measurement window is ``[t0_ns, t1_ns]`` in wall-clock time of receipt;
    until :meth:`set_window` is called, events count as ``before_window``.
    ``also`` are other byte strings to count (e.g. frames of an untimed topic):
    ``also_total[i]`` and ``also_in_window[i]`` count ``also[i]``.
    """

    def __init__(self, max_samples: int = 200_000, also: tuple[bytes, ...] = ()) -> None:
        self.t0_ns = 1 << 62
        self.t1_ns = 1 << 62
        self.total = 0
        self.before_window = 0
        self.in_window = 0
        self.after_window = 0
        self.latencies = array("q")
        self.latency_seen = 0
        self.max_latency_ns = 0
        self._max_samples = max_samples
        self._rng = random.Random(6)
        self.also = also
        self.also_total = [0] * len(also)
        self.also_in_window = [0] * len(also)

    def set_window(self, t0_ns: int, t1_ns: int) -> None:
        self.t0_ns = t0_ns
        self.t1_ns = t1_ns

    def feed(self, buf: bytes | bytearray, end: int, now_ns: int, sample: bool) -> int:
        """Count the events in ``buf[:end]`` received at ``now_ns``; return how many."""
        if self.also:
            self._count_also(buf, end, now_ns)
        n = buf.count(MARKER, 0, end)
        if not n:
            return 0
        self.total += n
        if now_ns < self.t0_ns:
            self.before_window += n
        elif now_ns <= self.t1_ns:
            self.in_window += n
        else:
            self.after_window += n
        if sample and now_ns >= self.t0_ns:
            self._sample(buf, end, now_ns)
        return n

    def _count_also(self, buf: bytes | bytearray, end: int, now_ns: int) -> None:
        in_window = self.t0_ns <= now_ns <= self.t1_ns
        for i, word in enumerate(self.also):
            k = buf.count(word, 0, end)
            self.also_total[i] += k
            if in_window:
                self.also_in_window[i] += k

    def _sample(self, buf: bytes | bytearray, end: int, now_ns: int) -> None:
        lat = self.latencies
        cap = self._max_samples
        for m in MARKER_RE.finditer(buf, 0, end):
            value = now_ns - int(m.group(1))
            if value > self.max_latency_ns:
                self.max_latency_ns = value
            self.latency_seen += 1
            if len(lat) < cap:
                lat.append(value)
            else:  # reservoir sampling keeps a uniform sample of everything seen
                j = self._rng.randrange(self.latency_seen)
                if j < cap:
                    lat[j] = value
