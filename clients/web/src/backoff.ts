/**
 * Reconnection delays: exponential backoff with bounded jitter.
 *
 * Attempt n (1-based) waits around `base(n) = min(maxMs, initialMs * factor^(n-1))`,
 * spread uniformly over `[base(n) * (1 - jitter), base(n) * (1 + jitter)]` and
 * then capped at `maxMs`. Jitter keeps many clients that lost the same server
 * from all coming back in the same instant.
 */

export interface BackoffOptions {
  /** Delay before the first attempt, before jitter. Default 500 ms. */
  initialMs?: number;
  /** Largest delay, jitter included. Default 15 000 ms. */
  maxMs?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /** Spread around the base delay, from 0 (none) to 1. Default 0.3. */
  jitter?: number;
}

export type ResolvedBackoff = Required<BackoffOptions>;

export const DEFAULT_BACKOFF: ResolvedBackoff = { initialMs: 500, maxMs: 15_000, factor: 2, jitter: 0.3 };

export function resolveBackoff(options: BackoffOptions = {}): ResolvedBackoff {
  const b = { ...DEFAULT_BACKOFF, ...options };
  if (!(b.initialMs >= 0) || !(b.maxMs >= 0) || !(b.factor >= 1) || !(b.jitter >= 0 && b.jitter <= 1)) {
    throw new RangeError(`invalid backoff options: ${JSON.stringify(options)}`);
  }
  return b;
}

/** The delay before the base is jittered, for attempt `attempt` (1-based). */
export function baseDelay(attempt: number, options: ResolvedBackoff): number {
  const n = Math.max(1, Math.floor(attempt));
  return Math.min(options.maxMs, options.initialMs * options.factor ** (n - 1));
}

/** The inclusive bounds the jittered delay of `attempt` falls within. */
export function delayBounds(attempt: number, options: ResolvedBackoff): [number, number] {
  const base = baseDelay(attempt, options);
  return [base * (1 - options.jitter), Math.min(options.maxMs, base * (1 + options.jitter))];
}

/**
 * The delay before reconnection attempt `attempt` (1-based).
 * `random` returns a number in [0, 1), like `Math.random`.
 */
export function backoffDelay(attempt: number, options: ResolvedBackoff, random: () => number = Math.random): number {
  const [low, high] = delayBounds(attempt, options);
  const r = Math.min(Math.max(random(), 0), 1);
  return low + (high - low) * r;
}
