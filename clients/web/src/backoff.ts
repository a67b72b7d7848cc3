/**
 * Reconnection delays: exponential backoff with jitter.
 *
 * The same formula as `core/backoff.py` (Python: the SDK and the bridge's
 * upstream), so every ClearPath client backs off alike. Attempt n (1-based)
 * waits
 *
 *     base(n)  = min(maxMs, initialMs * factor^(n-1))
 *     delay(n) = base(n) * (1 - jitter * r),   r uniform in [0, 1)
 *
 * so a delay falls in `(base * (1 - jitter), base]`; with the default jitter
 * of 0.5, between half the base and the base. Never above `maxMs`. Jitter
 * keeps many clients that lost the same server from all coming back in the
 * same instant.
 */

export interface BackoffOptions {
  /** Base delay of the first attempt. Default 500 ms. */
  initialMs?: number;
  /** Largest delay. Default 15 000 ms. */
  maxMs?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /** Share of the base that may be taken off at random, from 0 (none) to 1. Default 0.5. */
  jitter?: number;
}

export type ResolvedBackoff = Required<BackoffOptions>;

export const DEFAULT_BACKOFF: ResolvedBackoff = { initialMs: 500, maxMs: 15_000, factor: 2, jitter: 0.5 };

export function resolveBackoff(options: BackoffOptions = {}): ResolvedBackoff {
  const b = { ...DEFAULT_BACKOFF, ...options };
  if (!(b.initialMs >= 0) || !(b.maxMs >= 0) || !(b.factor >= 1) || !(b.jitter >= 0 && b.jitter <= 1)) {
    throw new RangeError(`invalid backoff options: ${JSON.stringify(options)}`);
  }
  return b;
}

/** `base(n)`: the delay of attempt `attempt` (1-based) before jitter, and the most it can be. */
export function baseDelay(attempt: number, options: ResolvedBackoff): number {
  const n = Math.max(1, Math.floor(attempt));
  return Math.min(options.maxMs, options.initialMs * options.factor ** (n - 1));
}

/** The bounds the delay of `attempt` falls within: `[base * (1 - jitter), base]`. */
export function delayBounds(attempt: number, options: ResolvedBackoff): [number, number] {
  const base = baseDelay(attempt, options);
  return [base * (1 - options.jitter), base];
}

/**
 * The delay before reconnection attempt `attempt` (1-based):
 * `base(n) * (1 - jitter * r)`. `random` returns r in [0, 1), like `Math.random`.
 */
export function backoffDelay(attempt: number, options: ResolvedBackoff, random: () => number = Math.random): number {
  const r = Math.min(Math.max(random(), 0), 1);
  return baseDelay(attempt, options) * (1 - options.jitter * r);
}
