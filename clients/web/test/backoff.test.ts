import { describe, expect, it } from 'vitest';
import { DEFAULT_BACKOFF, backoffDelay, baseDelay, delayBounds, resolveBackoff } from '../src/backoff';

describe('backoff', () => {
  const opts = resolveBackoff({ initialMs: 500, maxMs: 15_000, factor: 2, jitter: 0.5 });

  it('doubles from the initial delay up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => baseDelay(n, opts))).toEqual([500, 1000, 2000, 4000, 8000, 15_000, 15_000]);
  });

  it('is base(n) * (1 - jitter * r), the formula of core/backoff.py', () => {
    // Values the Python `Backoff.delay` gives for the same inputs.
    const cases: [attempt: number, r: number, ms: number][] = [
      [1, 0, 500],
      [1, 0.5, 375],
      [2, 0.25, 875],
      [3, 0.999, 1001],
      [6, 0.2, 13_500],
      [40, 0.5, 11_250],
    ];
    for (const [attempt, r, ms] of cases) expect(backoffDelay(attempt, opts, () => r)).toBeCloseTo(ms, 6);
  });

  it('keeps delays within [base * (1 - jitter), base], never above maxMs', () => {
    for (let attempt = 1; attempt <= 8; attempt++) {
      const base = baseDelay(attempt, opts);
      expect(delayBounds(attempt, opts)).toEqual([base / 2, base]);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, opts);
        expect(d).toBeGreaterThan(base / 2);
        expect(d).toBeLessThanOrEqual(base);
        expect(d).toBeLessThanOrEqual(opts.maxMs);
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
    expect(resolveBackoff()).toEqual({ initialMs: 500, maxMs: 15_000, factor: 2, jitter: 0.5 });
    expect(resolveBackoff()).toEqual(DEFAULT_BACKOFF);
    expect(() => resolveBackoff({ jitter: 2 })).toThrow(RangeError);
    expect(() => resolveBackoff({ factor: 0.5 })).toThrow(RangeError);
    expect(() => resolveBackoff({ initialMs: -1 })).toThrow(RangeError);
  });
});
