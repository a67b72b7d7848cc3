/**
 * The bridge's readiness, as its `GET /readyz` says it: a JSON body
 * `{"ready": bool, "reason"?: string, ...}` (no upstream to the core, the core's
 * broker down, its canary late). The panel reads the same body from the
 * `readiness` field of the public `GET /ws/status`, which answers 200 either way
 * (`/readyz` answers 503 when not ready, and a browser logs every 503 as an error). A
 * ready answer may carry `canary.round_trip_seconds`: the last canary's trip
 * from the bridge through the core and back. Polled every READYZ_POLL_MS;
 * whatever cannot be read as that body is `unknown`.
 */
import { useEffect, useState } from 'react';

export const READYZ_PATH = '/ws/status';
export const READYZ_POLL_MS = 5_000;
/** A check that takes longer than this is `unknown`. */
export const READYZ_TIMEOUT_MS = 4_000;

export type ReadinessState = 'ready' | 'not_ready' | 'unknown';

export interface Readiness {
  state: ReadinessState;
  /** Why not ready (the bridge's `reason`), or why unknown (what went wrong here). */
  reason: string | null;
  /** When ready: the last canary's round trip through the core, in ms, if the bridge says. */
  canaryMs: number | null;
  /** The bridge's open sockets (`connections.total` of `/ws/status`), when it says. */
  connections?: number | null;
}

export const UNKNOWN_READINESS: Readiness = { state: 'unknown', reason: null, canaryMs: null };

function unknown(reason: string): Readiness {
  return { state: 'unknown', reason, canaryMs: null };
}

/** `/readyz` on the page's origin (e.g. `window.location.origin`). */
export function readyzUrl(origin: string): string {
  return new URL(READYZ_PATH, origin).href;
}

/** What an answer of `status` with the parsed JSON `body` says (`undefined`: not JSON). */
export function readReadiness(status: number, answer: unknown): Readiness {
  const readiness = readBody(status, answer);
  const total =
    typeof answer === 'object' && answer !== null
      ? (answer as { connections?: { total?: unknown } }).connections?.total
      : undefined;
  return typeof total === 'number' && Number.isFinite(total) ? { ...readiness, connections: total } : readiness;
}

function readBody(status: number, answer: unknown): Readiness {
  // `/ws/status` carries the body in `readiness`; `/readyz` is the body itself.
  const body =
    typeof answer === 'object' && answer !== null && 'readiness' in answer
      ? (answer as { readiness: unknown }).readiness
      : answer;
  if (typeof body !== 'object' || body === null || typeof (body as { ready?: unknown }).ready !== 'boolean') {
    return unknown(`HTTP ${status}, not a readiness answer`);
  }
  const { ready, reason, canary } = body as { ready: boolean; reason?: unknown; canary?: unknown };
  if (!ready) {
    return { state: 'not_ready', reason: typeof reason === 'string' && reason !== '' ? reason : null, canaryMs: null };
  }
  const trip = typeof canary === 'object' && canary !== null ? (canary as { round_trip_seconds?: unknown }).round_trip_seconds : null;
  const canaryMs = typeof trip === 'number' && Number.isFinite(trip) && trip >= 0 ? trip * 1_000 : null;
  return { state: 'ready', reason: null, canaryMs };
}

/** One check of `url`; never throws. */
export async function checkReadiness(url: string, fetchFn?: typeof fetch): Promise<Readiness> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), READYZ_TIMEOUT_MS);
  try {
    const response = await (fetchFn ?? globalThis.fetch)(url, {
      cache: 'no-store',
      headers: { Accept: 'application/json' },
      signal: controller.signal,
    });
    let body: unknown;
    try {
      body = await response.json();
    } catch {
      body = undefined;
    }
    return readReadiness(response.status, body);
  } catch (error) {
    return unknown(controller.signal.aborted ? 'no answer in time' : String(error));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The readiness at `url`, checked now and every `intervalMs`; `unknown`
 * without a URL (the dashboard passes none while its socket is down: no
 * polling of a bridge that is not there).
 */
export function useReadiness(url: string | undefined, fetchFn?: typeof fetch, intervalMs = READYZ_POLL_MS): Readiness {
  const [readiness, setReadiness] = useState<Readiness>(UNKNOWN_READINESS);
  useEffect(() => {
    setReadiness(UNKNOWN_READINESS);
    if (!url) return undefined;
    let alive = true;
    let busy = false;
    const check = async () => {
      if (busy) return;
      busy = true;
      const found = await checkReadiness(url, fetchFn);
      busy = false;
      if (alive) setReadiness((prev) => (sameReadiness(prev, found) ? prev : found));
    };
    void check();
    const id = setInterval(() => void check(), intervalMs);
    return () => {
      alive = false;
      clearInterval(id);
    };
  }, [url, fetchFn, intervalMs]);
  return url ? readiness : UNKNOWN_READINESS;
}

function sameReadiness(a: Readiness, b: Readiness): boolean {
  return a.state === b.state && a.reason === b.reason && a.canaryMs === b.canaryMs;
}
