import time
from collections import Counter
import pytest
import tests.test_fuzz_inputs as F

def test_stats(caplog):
    stats = Counter()
    orig_exchange = F.BridgeTarget.exchange
    async def exchange(self, ws, frame, barrier, sent):
        w = await orig_exchange(self, ws, frame, barrier, sent)
        kind = type(frame).__name__ if not isinstance(frame, str) else ("big" if len(frame.encode()) > 60000 else "text")
        if w.closed:
            stats[f"{kind}: close {w.close.code if w.close else None}"] += 1
        for f in w.frames:
            if f["type"] == "error":
                stats[f"{kind}: error {f['data']['code']}"] += 1
            elif f["type"] in F.EVENT_TYPES:
                stats["event frames"] += 1
            else:
                stats[f"{kind}: {f['type']}"] += 1
        return w
    orig_attack = F.BridgeTarget.attack
    async def attack(self, a, n):
        stats[f"auth {a.auth}"] += 1
        stats[f"since {'refused' if F.since_refused(a.since) else ('given' if a.since else 'none')}"] += 1
        return await orig_attack(self, a, n)
    orig_judge = F.BridgeTarget.judge
    def judge(window, answer, auth):
        stats[f"answer {answer}"] += 1
        return orig_judge(window, answer, auth)
    F.BridgeTarget.exchange = exchange
    F.BridgeTarget.attack = attack
    F.BridgeTarget.judge = staticmethod(judge)
    t = time.perf_counter()
    try:
        F.test_every_websocket_input_gets_a_documented_answer(caplog)
    finally:
        print(f"\n{time.perf_counter() - t:.1f}s")
        for k, v in sorted(stats.items()): print(f"{v:6d} {k}")
