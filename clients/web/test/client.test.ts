import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CLIENT_GAVE_UP, RealtimeClient, type ConnectionState, type RealtimeClientOptions } from '../src/client';
import type { ServerFrame } from '../src/frames';
import type { Gap } from '../src/positions';
import { TS, event, fakeSockets, subscribed, welcome } from './fakes';

const URL = 'ws://bridge.test/ws/connect';

function setup(options: Partial<RealtimeClientOptions> = {}) {
  const fake = fakeSockets();
  const client = new RealtimeClient({
    url: URL,
    webSocketFactory: fake.factory,
    random: () => 0.5,
    backoff: { initialMs: 100, maxMs: 10_000, factor: 2, jitter: 0.5 },
    onListenerError: () => {},
    ...options,
  });
  const frames: ServerFrame[] = [];
  const states: ConnectionState[] = [];
  client.onFrame((f) => frames.push(f));
  client.onStatus((s) => states.push(s.state));
  const events = () => frames.filter((f) => f.type === 'package_update' || f.type === 'anomaly_detected');
  const offsets = () => events().map((f) => ('position' in f && f.position ? f.position.offset : -1));
  return { client, fake, frames, states, events, offsets };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('connection states', () => {
  it('goes idle -> connecting -> connected and subscribes its topics on open', () => {
    const { client, fake, states } = setup({ topics: ['package_updates', 'anomalies'] });
    expect(client.state).toBe('idle');
    client.connect();
    expect(client.state).toBe('connecting');
    expect(fake.last().url).toBe(URL);
    fake.last().open();
    expect(client.state).toBe('connected');
    expect(client.isConnected).toBe(true);
    expect(states).toEqual(['connecting', 'connected']);
    expect(fake.last().subscribes()).toEqual([
      { topic: 'package_updates', since: undefined },
      { topic: 'anomalies', since: undefined },
    ]);
  });

  it('subscribes and unsubscribes on the open socket, once per topic', () => {
    const { client, fake } = setup();
    client.connect();
    fake.last().open();
    client.subscribe('map_updates');
    client.subscribe('map_updates');
    client.unsubscribe('map_updates');
    client.unsubscribe('map_updates');
    expect(fake.last().messages()).toEqual([
      { type: 'subscribe', data: { subscription_type: 'map_updates' } },
      { type: 'unsubscribe', data: { subscription_type: 'map_updates' } },
    ]);
    expect(client.subscriptions).toEqual([]);
    expect(() => client.subscribe('nope' as never)).toThrow(TypeError);
  });

  it('ends in closed with code 1000 on close() and does not reconnect', () => {
    const { client, fake } = setup();
    client.connect();
    fake.last().open();
    client.close();
    expect(client.state).toBe('closed');
    expect(fake.last().closedWith?.code).toBe(1000);
    vi.advanceTimersByTime(60_000);
    expect(fake.sockets).toHaveLength(1);
    expect(client.send({ type: 'ping', data: {} })).toBe(false);
  });

  it('fails without reconnecting on a terminal close code (1009)', () => {
    const { client, fake } = setup();
    client.connect();
    fake.last().open();
    fake.last().serverClose(1009, 'message too big');
    expect(client.state).toBe('failed');
    expect(client.status.lastError).toContain('1009');
    expect(client.status.lastCloseCode).toBe(1009);
    vi.advanceTimersByTime(60_000);
    expect(fake.sockets).toHaveLength(1);
  });

  it('gives up on a socket that does not open in time', () => {
    const { client, fake } = setup({ connectTimeoutMs: 1_000 });
    client.connect();
    vi.advanceTimersByTime(1_000);
    expect(fake.sockets[0]?.closedWith?.code).toBe(CLIENT_GAVE_UP);
    expect(client.state).toBe('reconnecting');
    expect(client.status.lastError).toContain('no connection within 1000 ms');
  });

  it('can connect again after failed', () => {
    const { client, fake } = setup({ maxReconnectAttempts: 0 });
    client.connect();
    fake.last().serverClose(1006);
    expect(client.state).toBe('failed');
    client.connect();
    expect(client.state).toBe('connecting');
    fake.last().open();
    expect(client.state).toBe('connected');
  });
});

describe('reconnection', () => {
  it('keeps retrying by default, every backoff maxMs at most', () => {
    const { client, fake } = setup({ backoff: { initialMs: 100, maxMs: 1_000 } });
    client.connect();
    fake.last().open();
    fake.last().receive(welcome());
    fake.last().serverClose(1001, 'going away');
    for (let attempt = 1; attempt <= 50; attempt++) {
      expect(client.state).toBe('reconnecting');
      expect(client.status.attempt).toBe(attempt);
      expect(client.status.retryDelayMs).toBeLessThanOrEqual(1_000);
      vi.advanceTimersByTime(1_000);
      fake.last().serverClose(1006);
    }
    expect(client.state).toBe('reconnecting');
    vi.advanceTimersByTime(1_000);
    fake.last().open();
    expect(client.state).toBe('connected');
  });

  it('retries with growing delays, at most maxReconnectAttempts times, then fails', () => {
    const { client, fake } = setup({ maxReconnectAttempts: 5 });
    client.connect();
    fake.last().open();
    fake.last().receive(welcome());
    fake.last().serverClose(1001, 'going away');
    // base(n) * (1 - jitter * r) with jitter 0.5 and r = 0.5: three quarters of 100, 200, 400, 800, 1600 ms.
    const expected = [75, 150, 300, 600, 1200];
    for (const [i, delay] of expected.entries()) {
      expect(client.state).toBe('reconnecting');
      expect(client.status.attempt).toBe(i + 1);
      expect(client.status.maxAttempts).toBe(5);
      expect(client.status.retryDelayMs).toBe(delay);
      vi.advanceTimersByTime(delay - 1);
      expect(fake.sockets).toHaveLength(i + 1);
      vi.advanceTimersByTime(1);
      expect(fake.sockets).toHaveLength(i + 2);
      fake.last().serverClose(1006);
    }
    expect(client.state).toBe('failed');
    expect(client.status.lastError).toMatch(/gave up after 5 reconnection attempts/);
    vi.advanceTimersByTime(120_000);
    expect(fake.sockets).toHaveLength(6);
  });

  it('honours a configured attempt limit', () => {
    const { client, fake } = setup({ maxReconnectAttempts: 2 });
    client.connect();
    fake.last().serverClose(1006);
    vi.runAllTimers();
    fake.last().serverClose(1006);
    vi.runAllTimers();
    fake.last().serverClose(1006);
    expect(client.state).toBe('failed');
    expect(fake.sockets).toHaveLength(3);
  });

  it('starts counting attempts anew once a connection worked', () => {
    const { client, fake } = setup();
    client.connect();
    fake.last().serverClose(1006);
    vi.runOnlyPendingTimers();
    fake.last().serverClose(1006);
    expect(client.status.attempt).toBe(2);
    vi.runOnlyPendingTimers();
    fake.last().open();
    fake.last().receive(welcome());
    expect(client.stats.reconnects).toBe(1);
    fake.last().serverClose(1013, 'try again later');
    expect(client.status.attempt).toBe(1);
    expect(client.status.retryDelayMs).toBe(75);
  });

  it('reconnects after 1008 and 1001 closes from the server', () => {
    for (const code of [1008, 1001, 1000]) {
      const { client, fake } = setup();
      client.connect();
      fake.last().open();
      fake.last().serverClose(code);
      expect(client.state).toBe('reconnecting');
      vi.runOnlyPendingTimers();
      expect(fake.sockets).toHaveLength(2);
    }
  });

  it('counts a socket that cannot even be made as a failed attempt', () => {
    let calls = 0;
    const client = new RealtimeClient({
      url: 'not a url',
      webSocketFactory: () => {
        calls += 1;
        throw new SyntaxError('bad url');
      },
      maxReconnectAttempts: 1,
    });
    client.connect();
    expect(client.state).toBe('reconnecting');
    vi.runAllTimers();
    expect(client.state).toBe('failed');
    expect(calls).toBe(2);
    expect(client.status.lastError).toContain('bad url');
  });
});

describe('keepalive', () => {
  it('pings every interval and keeps the connection while pongs come back', () => {
    const { client, fake } = setup({ pingIntervalMs: 1_000, pongTimeoutMs: 500 });
    client.connect();
    const socket = fake.last();
    socket.open();
    for (let i = 1; i <= 3; i++) {
      vi.advanceTimersByTime(1_000);
      expect(socket.messages().filter((m) => m.type === 'ping')).toHaveLength(i);
      expect(socket.messages().at(-1)).toEqual({ type: 'ping', data: {} });
      socket.receive({ type: 'pong', data: {}, timestamp: '2024-01-15T10:30:00Z' });
    }
    expect(client.state).toBe('connected');
  });

  it('treats a missing pong as a dead connection', () => {
    const { client, fake } = setup({ pingIntervalMs: 1_000, pongTimeoutMs: 500 });
    client.connect();
    const socket = fake.last();
    socket.open();
    vi.advanceTimersByTime(1_499);
    expect(client.state).toBe('connected');
    vi.advanceTimersByTime(1);
    expect(client.state).toBe('reconnecting');
    expect(socket.closedWith?.code).toBe(CLIENT_GAVE_UP);
    expect(client.status.lastError).toContain('no pong');
  });

  it("takes the ping interval from the bridge's welcome unless one was configured", () => {
    const { client, fake } = setup();
    client.connect();
    const socket = fake.last();
    socket.open();
    socket.receive(welcome([], 2));
    vi.advanceTimersByTime(2_000);
    expect(socket.messages().filter((m) => m.type === 'ping')).toHaveLength(1);
    expect(client.status.connectionId).toBe('conn-1');
  });
});

describe('frames', () => {
  it('delivers each element of a batched array as a frame, by type', () => {
    const { client, fake, frames } = setup();
    const anomalies: ServerFrame[] = [];
    client.on('anomaly_detected', (f) => anomalies.push(f));
    client.connect();
    fake.last().open();
    fake.last().receive([event('package_update', 1), event('anomaly_detected', 1), event('package_update', 2)]);
    expect(frames.map((f) => f.type)).toEqual(['package_update', 'anomaly_detected', 'package_update']);
    expect(anomalies).toHaveLength(1);
    expect(anomalies[0]?.type === 'anomaly_detected' && anomalies[0].data.severity).toBe('high');
  });

  it('delivers error frames to listeners and never throws', () => {
    const { client, fake, frames } = setup();
    const errors: string[] = [];
    client.on('error', (f) => errors.push(f.data.code));
    client.connect();
    const socket = fake.last();
    socket.open();
    expect(() => {
      socket.receive({ type: 'error', data: { code: 'rate_limited', message: 'slow down' }, timestamp: 'x' });
      socket.receive('{not json');
      socket.receive([42, { type: 'pong' }]);
      socket.onmessage?.({ data: new ArrayBuffer(2) });
      socket.receive({ type: 'from_the_future', data: {} });
    }).not.toThrow();
    expect(errors).toEqual([
      'rate_limited',
      'client_invalid_json',
      'client_invalid_frame',
      'client_invalid_frame',
      'client_invalid_frame',
    ]);
    expect(frames).toHaveLength(5);
    expect(client.stats.unknownFramesIgnored).toBe(1);
    expect(client.state).toBe('connected');
  });

  it('reports a throwing listener and still calls the others', () => {
    const reported: unknown[] = [];
    const { client, fake, frames } = setup({ onListenerError: (e) => reported.push(e) });
    client.onFrame(() => {
      throw new Error('app bug');
    });
    client.connect();
    fake.last().open();
    expect(() => fake.last().receive(event('package_update', 1))).not.toThrow();
    expect(reported).toHaveLength(1);
    expect(frames).toHaveLength(1);
  });

  it('drops an event whose position was already seen, accepts a new epoch', () => {
    const { client, fake, offsets } = setup();
    client.connect();
    fake.last().open();
    fake.last().receive([event('package_update', 1), event('package_update', 2), event('package_update', 2)]);
    fake.last().receive(event('package_update', 1));
    fake.last().receive(event('package_update', 3));
    fake.last().receive(event('package_update', 1, 'e2'));
    expect(offsets()).toEqual([1, 2, 3, 1]);
    expect(client.stats.duplicatesDropped).toBe(2);
    expect(client.positionOf('package_updates')).toEqual({ offset: 1, epoch: 'e2' });
    // Positions are kept per topic.
    fake.last().receive(event('anomaly_detected', 1));
    expect(offsets()).toEqual([1, 2, 3, 1, 1]);
  });
});

describe('resume after reconnect', () => {
  function connectedWithEvents(topics: RealtimeClientOptions['topics'] = ['package_updates'], url = URL) {
    const ctx = setup({ topics, url });
    const gaps: Gap[] = [];
    ctx.client.onGap((g) => gaps.push(g));
    ctx.client.connect();
    ctx.fake.last().open();
    ctx.fake.last().receive(subscribed('package_updates', { offset: 0, epoch: 'e1' }));
    ctx.fake.last().receive([event('package_update', 1), event('package_update', 2), event('package_update', 3)]);
    ctx.fake.last().serverClose(1006);
    vi.runOnlyPendingTimers();
    ctx.fake.last().open();
    return { ...ctx, gaps };
  }

  it('reconnects with ?since= for each topic with a position and subscribes the others', () => {
    const { fake } = connectedWithEvents(['package_updates', 'anomalies']);
    expect(fake.sockets[0]?.since()).toEqual([]);
    expect(fake.last().since()).toEqual(['package_updates:e1:3']);
    // Resumed by the URL: no subscribe message for it. Nothing known on anomalies: a plain subscribe.
    expect(fake.last().subscribes()).toEqual([{ topic: 'anomalies', since: undefined }]);
    expect(fake.last().url.startsWith(`${URL}?`)).toBe(true);
  });

  it('keeps the query the endpoint URL already has', () => {
    const { fake } = connectedWithEvents(['package_updates'], `${URL}?batch=1`);
    expect(fake.last().url).toBe(`${URL}?batch=1&since=package_updates:e1:3`);
  });

  it('delivers the replay, then live events, each once, without holding anything back', () => {
    const { fake, offsets, client, gaps } = connectedWithEvents();
    const s = fake.last();
    s.receive(subscribed('package_updates', { offset: 5, epoch: 'e1' }));
    s.receive(event('package_update', 3));
    expect(offsets()).toEqual([1, 2, 3]);
    s.receive(event('package_update', 4));
    expect(offsets()).toEqual([1, 2, 3, 4]);
    s.receive([event('package_update', 5), event('package_update', 5), event('package_update', 6)]);
    expect(offsets()).toEqual([1, 2, 3, 4, 5, 6]);
    expect(client.stats.duplicatesDropped).toBe(2);
    expect(gaps).toEqual([]);
    expect(client.positionOf('package_updates')).toEqual({ offset: 6, epoch: 'e1' });
  });

  it('resumes a topic the endpoint subscribes on its own through the URL, not a subscribe', () => {
    const { client, fake, offsets } = setup({ url: 'ws://bridge.test/ws/packages' });
    client.connect();
    fake.last().open();
    fake.last().receive(welcome(['package_updates']));
    fake.last().receive([event('package_update', 1), event('package_update', 2)]);
    fake.last().serverClose(1001);
    vi.runOnlyPendingTimers();
    const s = fake.last();
    expect(s.since()).toEqual(['package_updates:e1:2']);
    s.open();
    s.receive(welcome(['package_updates']));
    s.receive(subscribed('package_updates', { offset: 4, epoch: 'e1' }));
    s.receive([3, 4, 5].map((o) => event('package_update', o)));
    expect(s.messages().filter((m) => m.type !== 'ping')).toEqual([]);
    expect(offsets()).toEqual([1, 2, 3, 4, 5]);
  });

  it('moves to the new epoch and reports a gap when a resume finds the history lost', () => {
    const { fake, offsets, frames, gaps, client } = connectedWithEvents();
    const s = fake.last();
    s.receive(subscribed('package_updates', { offset: 0, epoch: 'e2' }, false, ['package_updates'], 'epoch_changed'));
    expect(gaps).toEqual([
      { topic: 'package_updates', since: { offset: 3, epoch: 'e1' }, position: { offset: 0, epoch: 'e2' }, reason: 'epoch_changed' },
    ]);
    expect(client.stats.gaps).toBe(1);
    // The frame itself still reaches frame listeners.
    expect(frames.some((f) => f.type === 'subscribed' && !f.data.recovered)).toBe(true);
    s.receive([event('package_update', 1, 'e2'), event('package_update', 2, 'e2')]);
    expect(offsets()).toEqual([1, 2, 3, 1, 2]);
    s.serverClose(1006);
    vi.runOnlyPendingTimers();
    expect(fake.last().since()).toEqual(['package_updates:e2:2']);
  });

  it('continues after the position of a history_trimmed notice, dropping what comes before it', () => {
    const { fake, offsets, gaps } = connectedWithEvents();
    const s = fake.last();
    s.receive(subscribed('package_updates', { offset: 10, epoch: 'e1' }, false, ['package_updates'], 'history_trimmed'));
    s.receive([event('package_update', 9), event('package_update', 11), event('package_update', 12)]);
    expect(offsets()).toEqual([1, 2, 3, 11, 12]);
    expect(gaps.map((g) => [g.reason, g.position])).toEqual([['history_trimmed', { offset: 10, epoch: 'e1' }]]);
  });

  it("reports the bridge's unsolicited notice that a live topic's history was lost", () => {
    const { client, fake, offsets } = setup({ topics: ['package_updates', 'anomalies'] });
    const gaps: Gap[] = [];
    client.onGap((g) => gaps.push(g));
    client.connect();
    const s = fake.last();
    s.open();
    s.receive(subscribed('package_updates', { offset: 0, epoch: 'e1' }));
    s.receive([1, 2].map((o) => event('package_update', o)));
    s.receive(subscribed('package_updates', { offset: 0, epoch: 'NEW' }, false, ['anomalies', 'package_updates'], 'epoch_changed'));
    s.receive([event('package_update', 1, 'NEW'), event('package_update', 1, 'NEW')]);
    expect(gaps).toEqual([
      { topic: 'package_updates', since: { offset: 2, epoch: 'e1' }, position: { offset: 0, epoch: 'NEW' }, reason: 'epoch_changed' },
    ]);
    expect(offsets()).toEqual([1, 2, 1]);
    expect(client.confirmedSubscriptions).toEqual(['package_updates', 'anomalies']);
    expect(client.state).toBe('connected');
  });

  it('reads a subscribed frame without recovered or position as recovered, without throwing', () => {
    const { client, fake } = connectedWithEvents();
    fake.last().receive({ type: 'subscribed', data: { subscription_type: 'package_updates', subscriptions: [] }, timestamp: 'x' });
    expect(client.stats.gaps).toBe(0);
    expect(client.positionOf('package_updates')).toEqual({ offset: 3, epoch: 'e1' });
    expect(client.state).toBe('connected');
  });

  it('delivers at once when nothing was missed', () => {
    const { fake, offsets } = connectedWithEvents();
    const s = fake.last();
    s.receive(subscribed('package_updates', { offset: 3, epoch: 'e1' }));
    s.receive(event('package_update', 4));
    expect(offsets()).toEqual([1, 2, 3, 4]);
  });

  it('resumes from the position given at construction', () => {
    const { client, fake } = setup({
      topics: ['anomalies'],
      positions: { anomalies: { offset: 41, epoch: 'e9' }, map_updates: { offset: 5, epoch: 'e9' } },
    });
    client.connect();
    expect(fake.last().since()).toEqual(['anomalies:e9:41']);
    fake.last().open();
    expect(fake.last().subscribes()).toEqual([]);
    // A topic subscribed later on the open socket resumes with `since` in its subscribe message.
    client.subscribe('map_updates');
    expect(fake.last().subscribes()).toEqual([{ topic: 'map_updates', since: { offset: 5, epoch: 'e9' } }]);
  });

  it('resumes a topic from its subscribed position when no event was seen on it', () => {
    const { client, fake } = setup({ topics: ['anomalies'] });
    client.connect();
    fake.last().open();
    fake.last().receive(subscribed('anomalies', { offset: 12, epoch: 'abc' }));
    expect(client.positionOf('anomalies')).toEqual({ offset: 12, epoch: 'abc' });
    fake.last().serverClose(1006);
    vi.runOnlyPendingTimers();
    expect(fake.last().since()).toEqual(['anomalies:abc:12']);
  });

  it('forgets a position on unsubscribe, also one left by events still in flight', () => {
    const { client, fake } = setup({ topics: ['anomalies'] });
    client.connect();
    const s = fake.last();
    s.open();
    s.receive(event('anomaly_detected', 4));
    client.unsubscribe('anomalies');
    expect(client.positionOf('anomalies')).toBeNull();
    s.receive(event('anomaly_detected', 5));
    s.receive(subscribed('anomalies', { offset: 5, epoch: 'e1' }, false, [], 'history_trimmed'));
    s.receive({ type: 'unsubscribed', data: { subscription_type: 'anomalies', subscriptions: [] }, timestamp: 'x' });
    expect(client.positionOf('anomalies')).toBeNull();
    expect(client.stats.gaps).toBe(0);
    client.subscribe('anomalies');
    expect(s.subscribes().at(-1)).toEqual({ topic: 'anomalies', since: undefined });
  });

  it('unsubscribes once open a topic resumed by the URL but dropped while connecting', () => {
    const { client, fake } = connectedWithEvents();
    client.close();
    client.connect();
    expect(fake.last().since()).toEqual(['package_updates:e1:3']);
    client.unsubscribe('package_updates');
    fake.last().open();
    expect(fake.last().messages()).toEqual([{ type: 'unsubscribe', data: { subscription_type: 'package_updates' } }]);
  });

  it('resubscribes the topics an endpoint subscribed on its own, and undoes the ones the app dropped', () => {
    const { client, fake } = setup();
    client.connect();
    fake.last().open();
    fake.last().receive(welcome(['dashboard_metrics', 'notifications']));
    expect(client.subscriptions).toEqual(['dashboard_metrics', 'notifications']);
    expect(client.endpointSubscriptions).toEqual(['dashboard_metrics', 'notifications']);
    fake.last().receive(event('dashboard_metrics', 7));
    client.unsubscribe('notifications');
    fake.last().serverClose(1001);
    vi.runOnlyPendingTimers();
    const s = fake.last();
    expect(s.since()).toEqual(['dashboard_metrics:e1:7']);
    s.open();
    expect(s.subscribes()).toEqual([]);
    s.receive(welcome(['dashboard_metrics', 'notifications']));
    expect(s.messages().at(-1)).toEqual({ type: 'unsubscribe', data: { subscription_type: 'notifications' } });
    expect(client.subscriptions).toEqual(['dashboard_metrics']);
  });
});

describe('viewport', () => {
  const BOX = { west: -90, south: 30, east: -80, north: 45 };
  const viewports = (s: ReturnType<ReturnType<typeof fakeSockets>['last']>) => s.ofType('viewport').map((m) => m.data);

  it('sends a viewport message when subscribed and connected, and none for the same box twice', () => {
    const { client, fake } = setup({ topics: ['map_updates'] });
    client.connect();
    fake.last().open();
    client.setViewport(BOX);
    client.setViewport({ ...BOX });
    client.setViewport(null);
    expect(viewports(fake.last())).toEqual([
      { subscription_type: 'map_updates', bbox: BOX },
      { subscription_type: 'map_updates', bbox: null },
    ]);
    expect(fake.last().ofType('subscribe')).toHaveLength(1);
  });

  it('only remembers the box while map_updates is not subscribed, then subscribes with it', () => {
    const { client, fake } = setup({ topics: ['package_updates'] });
    client.setViewport(BOX);
    client.connect();
    fake.last().open();
    expect(viewports(fake.last())).toEqual([]);
    client.subscribe('map_updates');
    expect(fake.last().ofType('subscribe').map((m) => m.data)).toEqual([
      { subscription_type: 'package_updates' },
      { subscription_type: 'map_updates', bbox: BOX },
    ]);
    expect(viewports(fake.last())).toEqual([]);
    expect(client.viewport).toEqual(BOX);
  });

  const bboxOf = (s: ReturnType<ReturnType<typeof fakeSockets>['last']>) => new globalThis.URL(s.url).searchParams.getAll('bbox');

  it('resumes map_updates after a reconnect with since and the box in the URL: no subscribe, no viewport', () => {
    const { client, fake } = setup({ topics: ['map_updates', 'package_updates'] });
    client.connect();
    fake.last().open();
    client.setViewport(BOX);
    fake.last().receive([event('map_update', 7), event('package_update', 3)]);
    fake.last().serverClose(1006);
    vi.runOnlyPendingTimers();
    const s = fake.last();
    expect(s.since()).toEqual(['package_updates:e1:3', 'map_updates:e1:7']);
    expect(bboxOf(s)).toEqual(['-90,30,-80,45']);
    s.open();
    s.receive(welcome());
    expect(s.ofType('subscribe')).toEqual([]);
    expect(viewports(s)).toEqual([]);
  });

  it('resumes /ws/map from a stored position with the box in the URL from the first connect', () => {
    // The endpoint subscribes map_updates itself: with since= and bbox= in the URL the
    // bridge resumes it filtered before any live frame; nothing is sent after the welcome.
    const { client, fake } = setup({
      url: 'ws://bridge.test/ws/map',
      topics: ['map_updates'],
      positions: { map_updates: { offset: 1, epoch: 'e1' } },
    });
    client.setViewport(BOX);
    client.connect();
    const s = fake.last();
    expect(s.since()).toEqual(['map_updates:e1:1']);
    expect(bboxOf(s)).toEqual(['-90,30,-80,45']);
    s.open();
    s.receive(welcome(['map_updates', 'package_updates']));
    expect(s.messages()).toEqual([]);
  });

  it('sends no box for the whole world, and a box set while connecting follows the welcome', () => {
    const { client, fake } = setup({ url: 'ws://bridge.test/ws/map', token: 'tok' });
    client.connect();
    expect(bboxOf(fake.last())).toEqual([]);
    fake.last().open();
    client.setViewport(BOX); // not yet welcomed: the box cannot go out yet
    expect(viewports(fake.last())).toEqual([]);
    fake.last().receive(welcome(['map_updates', 'package_updates']));
    expect(viewports(fake.last())).toEqual([{ subscription_type: 'map_updates', bbox: BOX }]);
    expect(fake.last().ofType('subscribe')).toEqual([]);
    // After a reconnect the URL carries it: the welcome needs nothing more.
    fake.last().receive(event('map_update', 4));
    fake.last().serverClose(1001);
    vi.runOnlyPendingTimers();
    const s = fake.last();
    expect(s.since()).toEqual(['map_updates:e1:4']);
    expect(bboxOf(s)).toEqual(['-90,30,-80,45']);
    s.open();
    s.receive(welcome(['map_updates', 'package_updates']));
    expect(viewports(s)).toEqual([]);
  });

  it('moves a topic position forward with position frames: same epoch only, not dispatched', () => {
    const { client, fake, frames } = setup({ topics: ['map_updates'] });
    client.connect();
    fake.last().open();
    fake.last().receive(subscribed('map_updates', { offset: 3, epoch: 'e1' }));
    const position = (offset: number, epoch = 'e1') => ({
      type: 'position',
      data: { subscription_type: 'map_updates', position: { offset, epoch } },
      timestamp: TS,
    });
    const dispatched = frames.length;
    // After the events of the same message, whatever their order in it.
    fake.last().receive([event('map_update', 5), position(9), event('map_update', 12)]);
    expect(client.positionOf('map_updates')).toEqual({ offset: 12, epoch: 'e1' });
    fake.last().receive(position(20));
    expect(client.positionOf('map_updates')).toEqual({ offset: 20, epoch: 'e1' });
    fake.last().receive([position(15), position(30, 'e2')]); // older; another epoch
    expect(client.positionOf('map_updates')).toEqual({ offset: 20, epoch: 'e1' });
    fake.last().receive(event('map_update', 20)); // told: not delivered again
    expect(client.stats.duplicatesDropped).toBe(1);
    expect(frames.slice(dispatched).map((f) => f.type)).toEqual(['map_update', 'map_update']);
    fake.last().receive({ type: 'position', data: { subscription_type: 'map_updates' }, timestamp: TS });
    expect(frames.at(-1)).toMatchObject({ type: 'error', data: { code: 'client_invalid_frame' } });
    fake.last().serverClose(1006);
    vi.runOnlyPendingTimers();
    expect(fake.last().since()).toEqual(['map_updates:e1:20']);
  });

  it('waits for the welcome before sending the box when it authenticates', () => {
    const { client, fake } = setup({ topics: ['map_updates'], token: 'tok' });
    client.connect();
    fake.last().open();
    client.setViewport(BOX);
    expect(fake.last().messages().map((m) => m.type)).toEqual(['auth']);
    fake.last().receive(welcome());
    expect(fake.last().ofType('subscribe').map((m) => m.data)).toEqual([{ subscription_type: 'map_updates', bbox: BOX }]);
  });

  it('normalizes the box: latitudes clamped, longitudes wrapped, 360 degrees or more is every longitude', () => {
    const { client } = setup();
    client.setViewport({ west: -200, south: -95, east: -170, north: 91 });
    expect(client.viewport).toEqual({ west: 160, south: -90, east: -170, north: 90 });
    client.setViewport({ west: -300, south: 0, east: 100, north: 10 });
    expect(client.viewport).toEqual({ west: -180, south: 0, east: 180, north: 10 });
    client.setViewport({ west: 170, south: 0, east: -170, north: 10 });
    expect(client.viewport).toEqual({ west: 170, south: 0, east: -170, north: 10 });
    expect(() => client.setViewport({ west: Number.NaN, south: 0, east: 1, north: 1 })).toThrow(/bbox.west/);
    expect(() => client.setViewport({ west: 0, south: 0, east: Infinity, north: 1 })).toThrow(/bbox.east/);
    expect(() => client.setViewport({ west: 0, south: 5, east: 1, north: 1 })).toThrow(/bbox.south/);
    expect(client.viewport).toEqual({ west: 170, south: 0, east: -170, north: 10 });
  });

  it('passes the bridge acknowledgement to listeners as a viewport frame', () => {
    const { client, fake, frames } = setup({ topics: ['map_updates'] });
    client.connect();
    fake.last().open();
    fake.last().receive({ type: 'viewport', data: { subscription_type: 'map_updates', bbox: BOX }, timestamp: TS });
    expect(frames.at(-1)).toEqual({ type: 'viewport', data: { subscription_type: 'map_updates', bbox: BOX }, timestamp: TS });
    expect(client.stats.unknownFramesIgnored).toBe(0);
  });
});
