import { describe, expect, it } from 'vitest';
import { DEFAULT_BACKOFF, backoffDelay, baseDelay, delayBounds, resolveBackoff } from '../src/backoff';

describe('backoff', () => {
  const opts = resolveBackoff({ initialMs: 500, maxMs: 15_000, factor: 2, jitter: 0.3 });

  it('doubles from the initial delay up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => baseDelay(n, opts))).toEqual([500, 1000, 2000, 4000, 8000, 15_000, 15_000]);
  });

  it('keeps jittered delays within [base*(1-j), min(max, base*(1+j))]', () => {
    for (let attempt = 1; attempt <= 8; attempt++) {
      const [low, high] = delayBounds(attempt, opts);
      const base = baseDelay(attempt, opts);
      expect(low).toBeCloseTo(base * 0.7);
      expect(high).toBeCloseTo(Math.min(15_000, base * 1.3));
      expect(backoffDelay(attempt, opts, () => 0)).toBeCloseTo(low);
      expect(backoffDelay(attempt, opts, () => 0.999999)).toBeCloseTo(high, 0);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, opts);
        expect(d).toBeGreaterThanOrEqual(low);
        expect(d).toBeLessThanOrEqual(high);
      }
    }
  });

  it('spreads delays: two clients rarely pick the same one', () => {
    const seen = new Set(Array.from({ length: 50 }, () => Math.round(backoffDelay(3, opts))));
    expect(seen.size).toBeGreaterThan(10);
  });

  it('without jitter is exactly exponential', () => {
    const exact = resolveBackoff({ jitter: 0, initialMs: 100, maxMs: 1_000 });
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, exact, () => 0.7))).toEqual([100, 200, 400, 800, 1000]);
  });

  it('has documented defaults and rejects nonsense', () => {
    expect(resolveBackoff()).toEqual(DEFAULT_BACKOFF);
    expect(() => resolveBackoff({ jitter: 2 })).toThrow(RangeError);
    expect(() => resolveBackoff({ factor: 0.5 })).toThrow(RangeError);
    expect(() => resolveBackoff({ initialMs: -1 })).toThrow(RangeError);
  });
});
