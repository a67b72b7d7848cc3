/**
 * Delivery latency as this page sees it: from an event frame's `published_at`
 * (when the core accepted the event) to the frame's arrival here, over a small
 * rolling window. Pure: the feed takes a sample as each frame arrives, the
 * store keeps the window.
 *
 * Two clocks meet here, the server's and this machine's: their skew is part of
 * every figure, and a sample that comes out negative counts as 0.
 */
import type { ServerFrame } from '../frames';

/** The window: the newest `samples` samples of the last `ms` milliseconds. */
export const LATENCY_WINDOW = { samples: 500, ms: 30_000 } as const;

export interface LatencySample {
  /** When the frame arrived (ms since the epoch). */
  at: number;
  /** Its latency in milliseconds. */
  ms: number;
}

export interface LatencyStats {
  /** Milliseconds; null without samples. */
  p50: number | null;
  p99: number | null;
  /** Samples in the window. */
  count: number;
}

export const NO_LATENCY: LatencyStats = { p50: null, p99: null, count: 0 };

const RFC3339 = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/i;

/**
 * An RFC 3339 timestamp in ms since the epoch (digits past the millisecond
 * dropped, as `Date` keeps no more); NaN when `ts` is not one.
 */
export function parseTimestampMs(ts: string): number {
  const m = RFC3339.exec(ts);
  if (!m) return Number.NaN;
  const millis = (m[2] ?? '').slice(0, 3).padEnd(3, '0');
  return Date.parse(`${m[1]}.${millis}${m[3]!.toUpperCase()}`);
}

/** The latency of `frame` arrived at `receivedMs`, or null: not an event frame, or no readable `published_at`. */
export function latencySample(frame: ServerFrame, receivedMs: number): LatencySample | null {
  if (!('subscription_type' in frame)) return null;
  const published = frame.published_at;
  if (typeof published !== 'string') return null;
  const at = parseTimestampMs(published);
  if (!Number.isFinite(at)) return null;
  return { at: receivedMs, ms: Math.max(0, receivedMs - at) };
}

/**
 * The window after `added` at `nowMs`: samples older than `limits.ms` dropped,
 * the newest `limits.samples` kept. The same array when nothing changed.
 */
export function rollWindow(
  window: readonly LatencySample[],
  added: readonly LatencySample[],
  nowMs: number,
  limits: { samples: number; ms: number } = LATENCY_WINDOW,
): readonly LatencySample[] {
  const first = window.findIndex((s) => nowMs - s.at < limits.ms);
  const kept = first === 0 || window.length === 0 ? window : first === -1 ? [] : window.slice(first);
  if (added.length === 0) return kept;
  const next = kept.concat(added);
  return next.length > limits.samples ? next.slice(next.length - limits.samples) : next;
}

/** The nearest-rank `q` quantile of `sorted` (ascending); null when it is empty. */
export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1]!;
}

/** p50 and p99 of the window. */
export function latencyStats(window: readonly LatencySample[]): LatencyStats {
  if (window.length === 0) return NO_LATENCY;
  const sorted = window.map((s) => s.ms).sort((a, b) => a - b);
  return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), count: sorted.length };
}
