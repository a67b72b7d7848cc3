// @vitest-environment jsdom
import { act, cleanup, render, screen } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ConnectionStatus } from '../src/client';
import { App } from '../src/dashboard/App';
import { FLUSH_MS } from '../src/dashboard/feed';
import { NO_LATENCY } from '../src/dashboard/latency';
import { OperationsPanel } from '../src/dashboard/OperationsPanel';
import {
  READYZ_POLL_MS,
  READYZ_TIMEOUT_MS,
  UNKNOWN_READINESS,
  checkReadiness,
  readReadiness,
  readyzUrl,
  type Readiness,
} from '../src/dashboard/readiness';
import { RealtimeProvider } from '../src/react';
import { ClientRegistry } from '../src/registry';
import { event, fakeSockets } from './fakes';

const URL = 'ws://bridge.test/ws/connect';
const READYZ = 'http://bridge.test/readyz';
const T0 = Date.parse('2024-01-15T10:30:00.000Z');

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

/** A fetch that answers each call with the next of `answers` (the last one from then on). */
function fakeFetch(...answers: (() => Promise<Response>)[]) {
  let calls = 0;
  const fn = vi.fn((_url: string, _init?: RequestInit) => {
    const answer = answers[Math.min(calls, answers.length - 1)]!;
    calls += 1;
    return answer();
  });
  return fn as typeof fn & typeof fetch;
}

function json(status: number, body: unknown): () => Promise<Response> {
  return () => Promise.resolve(new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } }));
}

const connected: ConnectionStatus = {
  state: 'connected',
  url: URL,
  attempt: 0,
  maxAttempts: 5,
  retryDelayMs: null,
  connectionId: 'conn-1',
  lastError: null,
  lastCloseCode: null,
  subject: null,
  expiresAt: null,
};

function panel(readiness: Readiness, latency = NO_LATENCY, status = connected) {
  return render(<OperationsPanel status={status} readiness={readiness} eventsPerSecond={12.34} latency={latency} />);
}

describe('reading /readyz', () => {
  it('reads the connection count of /ws/status beside its readiness', () => {
    const answer = { status: 'ok', readiness: { ready: true }, connections: { total: 42 } };
    expect(readReadiness(200, answer)).toMatchObject({ state: 'ready', connections: 42 });
    expect(readReadiness(200, { ready: true }).connections).toBeUndefined();
  });

  it('reads the readiness field of /ws/status', () => {
    expect(readReadiness(200, { status: 'degraded', readiness: { ready: false, reason: 'no upstream' } })).toEqual({
      state: 'not_ready',
      reason: 'no upstream',
      canaryMs: null,
    });
  });

  it('takes `ready` from the JSON body, whatever the status', () => {
    expect(readReadiness(200, { ready: true })).toEqual({ state: 'ready', reason: null, canaryMs: null });
    expect(readReadiness(503, { ready: false, reason: 'no upstream' })).toEqual({
      state: 'not_ready',
      reason: 'no upstream',
      canaryMs: null,
    });
    expect(readReadiness(503, { ready: false })).toEqual({ state: 'not_ready', reason: null, canaryMs: null });
  });

  it('takes the canary’s round trip when the bridge gives one', () => {
    const body = { ready: true, canary: { round_trip_seconds: 0.004, age_seconds: 1.2 } };
    expect(readReadiness(200, body)).toEqual({ state: 'ready', reason: null, canaryMs: 4 });
    expect(readReadiness(200, { ready: true, canary: { round_trip_seconds: null } }).canaryMs).toBeNull();
    expect(readReadiness(200, { ready: true, canary: 'fast' }).canaryMs).toBeNull();
  });

  it('is unknown for anything else', () => {
    for (const body of [undefined, null, 'ready', { ready: 'yes' }, { status: 'ok' }, [true]]) {
      expect(readReadiness(200, body).state).toBe('unknown');
    }
    expect(readReadiness(404, undefined).reason).toContain('HTTP 404');
  });

  it('is the page origin’s public /ws/status, which carries the readiness with 200', () => {
    expect(readyzUrl('https://ops.example:8443')).toBe('https://ops.example:8443/ws/status');
  });

  it('checks without ever throwing', async () => {
    expect((await checkReadiness(READYZ, fakeFetch(json(200, { ready: true })))).state).toBe('ready');
    const html = () => Promise.resolve(new Response('<html>not found</html>', { status: 404 }));
    expect((await checkReadiness(READYZ, fakeFetch(html))).state).toBe('unknown');
    const down = () => Promise.reject(new TypeError('Failed to fetch'));
    expect(await checkReadiness(READYZ, fakeFetch(down))).toEqual({
      state: 'unknown',
      reason: 'TypeError: Failed to fetch',
      canaryMs: null,
    });
  });

  it('gives up on a bridge that does not answer in time', async () => {
    const hang = vi.fn(
      (_url: string, init?: RequestInit) =>
        new Promise<Response>((_, reject) => init?.signal?.addEventListener('abort', () => reject(new Error('aborted')))),
    );
    const pending = checkReadiness(READYZ, hang as unknown as typeof fetch);
    await vi.advanceTimersByTimeAsync(READYZ_TIMEOUT_MS);
    expect((await pending).reason).toBe('no answer in time');
  });
});

describe('the operations panel', () => {
  it('shows the socket, a ready bridge, the rate and the latency', () => {
    panel({ state: 'ready', reason: null, canaryMs: null }, { p50: 42.4, p99: 1_250, count: 80 });
    expect(screen.getByTestId('ops-socket').dataset['state']).toBe('connected');
    expect(screen.getByTestId('ops-socket').textContent).toBe('Socketconnected');
    expect(screen.getByTestId('ops-upstream').dataset['state']).toBe('ready');
    expect(screen.getByTestId('ops-upstream').textContent).toBe('Upstreamready');
    expect(screen.getByTestId('ops-rate').textContent).toContain('12.3');
    expect(screen.getByTestId('ops-p50').textContent).toContain('42 ms');
    expect(screen.getByTestId('ops-p99').textContent).toContain('1.25 s');
    expect(screen.getByTestId('ops-latency-count').dataset['count']).toBe('80');
  });

  it('shows why the bridge is not ready', () => {
    panel({ state: 'not_ready', reason: 'no upstream', canaryMs: null });
    const upstream = screen.getByTestId('ops-upstream');
    expect(upstream.dataset['state']).toBe('not_ready');
    expect(upstream.textContent).toBe('Upstreamnot readyno upstream');
    expect(upstream.title).toBe('no upstream');
  });

  it('shows the canary’s round trip of a ready bridge', () => {
    panel({ state: 'ready', reason: null, canaryMs: 3.6 });
    expect(screen.getByTestId('ops-upstream').textContent).toBe('Upstreamreadycanary 4 ms');
  });

  it('shows unknown readiness, and dashes without latency samples', () => {
    panel(UNKNOWN_READINESS);
    expect(screen.getByTestId('ops-upstream').textContent).toContain('unknown');
    expect(screen.getByTestId('ops-p50').textContent).toContain('—');
    expect(screen.getByTestId('ops-p99').textContent).toContain('—');
    expect(screen.getByTestId('ops-latency-count').textContent).toContain('no events with published_at');
  });
});

describe('the dashboard’s operations panel', () => {
  function renderApp(fetchFn?: typeof fetch) {
    const fake = fakeSockets();
    const registry = new ClientRegistry({ clientOptions: { webSocketFactory: fake.factory, random: () => 0.5 } });
    render(
      <RealtimeProvider registry={registry}>
        <App endpoint={URL} initialTopics={['package_updates']} readyzUrl={fetchFn ? READYZ : undefined} fetchFn={fetchFn} />
      </RealtimeProvider>,
    );
    return fake;
  }

  it('polls /readyz every 5 s while the socket is open and shows failures as unknown', async () => {
    const fetchFn = fakeFetch(
      json(200, { ready: true }),
      json(503, { ready: false, reason: 'canary late by 12s' }),
      () => Promise.reject(new TypeError('Failed to fetch')),
    );
    const fake = renderApp(fetchFn);
    await act(() => vi.advanceTimersByTimeAsync(READYZ_POLL_MS));
    expect(fetchFn).not.toHaveBeenCalled(); // not before the socket opens
    act(() => fake.last().open());
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(fetchFn).toHaveBeenCalledTimes(1);
    expect(fetchFn.mock.calls[0]![0]).toBe(READYZ);
    expect(screen.getByTestId('ops-upstream').dataset['state']).toBe('ready');
    await act(() => vi.advanceTimersByTimeAsync(READYZ_POLL_MS));
    expect(screen.getByTestId('ops-upstream').dataset['state']).toBe('not_ready');
    expect(screen.getByTestId('ops-upstream').textContent).toContain('canary late by 12s');
    await act(() => vi.advanceTimersByTimeAsync(READYZ_POLL_MS));
    expect(screen.getByTestId('ops-upstream').dataset['state']).toBe('unknown');
    expect(fetchFn).toHaveBeenCalledTimes(3);
    cleanup();
    await vi.advanceTimersByTimeAsync(3 * READYZ_POLL_MS);
    expect(fetchFn).toHaveBeenCalledTimes(3);
  });

  it('stops polling while the socket is down and starts again once it reconnects', async () => {
    const fetchFn = fakeFetch(json(200, { ready: true }));
    const fake = renderApp(fetchFn);
    act(() => fake.last().open());
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(screen.getByTestId('ops-upstream').dataset['state']).toBe('ready');
    act(() => fake.last().serverClose(1006));
    expect(screen.getByTestId('ops-upstream').dataset['state']).toBe('unknown');
    await act(() => vi.advanceTimersByTimeAsync(READYZ_POLL_MS - 1));
    const asked = fetchFn.mock.calls.length;
    expect(asked).toBe(1);
    expect(fake.sockets).toHaveLength(2); // the reconnect attempt's socket
    act(() => fake.last().open());
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(fetchFn).toHaveBeenCalledTimes(2);
    expect(screen.getByTestId('ops-upstream').dataset['state']).toBe('ready');
  });

  it('is unknown without a /readyz to poll', () => {
    renderApp();
    expect(screen.getByTestId('ops-upstream').dataset['state']).toBe('unknown');
  });

  it('computes the latency from the published_at of the frames received', () => {
    vi.setSystemTime(T0);
    const fake = renderApp();
    act(() => fake.last().open());
    expect(screen.getByTestId('ops-socket').dataset['state']).toBe('connected');
    act(() => {
      const published = (ms: number) => new Date(T0 - ms).toISOString();
      for (let i = 1; i <= 98; i++) fake.last().receive({ ...event('package_update', i), published_at: published(40) });
      fake.last().receive({ ...event('package_update', 99), published_at: published(900) });
      fake.last().receive({ ...event('package_update', 100), published_at: published(3_000) });
      fake.last().receive(event('package_update', 101)); // no published_at: skipped
    });
    act(() => vi.advanceTimersByTime(FLUSH_MS));
    expect(screen.getByTestId('ops-p50').textContent).toContain('40 ms');
    expect(screen.getByTestId('ops-p99').textContent).toContain('900 ms');
    expect(screen.getByTestId('ops-latency-count').dataset['count']).toBe('100');
    expect(Number(screen.getByTestId('ops-rate').dataset['value'])).toBeGreaterThan(0);
  });
});
