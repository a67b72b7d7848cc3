import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RealtimeClient, type ConnectionStatus, type RealtimeClientOptions } from '../src/client';
import type { ServerFrame } from '../src/frames';
import { SSE_LOST, SseSocket, parsePositions, sseUrl, streamUrl, type EventSourceLike } from '../src/sse';
import { event, fakeSockets, subscribed, welcome } from './fakes';

/** A scriptable EventSource. */
class FakeEventSource implements EventSourceLike {
  readyState = 0;
  closed = false;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown; lastEventId?: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** Whether every stream opened before this one was closed when it was made. */
  readonly othersClosed: boolean;
  private readonly pingListeners: ((event: unknown) => void)[] = [];

  constructor(
    readonly url: string,
    before: readonly FakeEventSource[] = [],
  ) {
    this.othersClosed = before.every((s) => s.closed);
  }

  addEventListener(type: 'ping', listener: (event: unknown) => void): void {
    if (type === 'ping') this.pingListeners.push(listener);
  }

  /** The bridge's keepalive: `event: ping` (never an `onmessage`). */
  ping(): void {
    for (const listener of this.pingListeners) listener({ data: '{}' });
  }

  close(): void {
    this.closed = true;
    this.readyState = 2;
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** One event: `frame` as JSON, with the stream's last event id. */
  receive(frame: unknown, lastEventId = ''): void {
    this.onmessage?.({ data: JSON.stringify(frame), lastEventId });
  }

  fail(): void {
    this.readyState = 0; // a browser's EventSource would retry: the adapter must not let it
    this.onerror?.({});
  }

  param(name: string): string[] {
    return new URL(this.url).searchParams.getAll(name);
  }
}

function fakeSources() {
  const sources: FakeEventSource[] = [];
  return {
    sources,
    factory: (url: string) => {
      const source = new FakeEventSource(url, sources);
      sources.push(source);
      return source;
    },
    last: () => {
      const s = sources[sources.length - 1];
      if (!s) throw new Error('no EventSource was opened');
      return s;
    },
  };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('urls', () => {
  it('finds /sse beside any WebSocket endpoint', () => {
    expect(sseUrl('ws://h:8000/ws/map?since=a:b:1')).toBe('http://h:8000/sse');
    expect(sseUrl('wss://h/ws/connect')).toBe('https://h/sse');
  });

  it('puts topics, positions, the box and the token in the stream URL', () => {
    const positions = parsePositions(['anomalies:e1:3', 'map_updates:e2:9,bogus,parcels:e:1,anomalies:e1:x']);
    expect([...positions]).toEqual([
      ['anomalies', { epoch: 'e1', offset: 3 }],
      ['map_updates', { epoch: 'e2', offset: 9 }],
    ]);
    const url = streamUrl('http://h/sse', ['anomalies', 'map_updates'], positions, 'a b', { west: -10, south: 1, east: 20, north: 30 });
    expect(url).toBe('http://h/sse?topics=anomalies,map_updates&since=anomalies:e1:3&since=map_updates:e2:9&bbox=-10,1,20,30&token=a%20b');
  });
});

describe('SseSocket', () => {
  function adapter(wsUrl = 'ws://h/ws/connect?since=anomalies:e1:3', topics: ('anomalies' | 'package_updates')[] = ['anomalies']) {
    const fake = fakeSources();
    const socket = new SseSocket(wsUrl, { topics, token: 'tok', bbox: null, factory: fake.factory, defer: (run) => void setTimeout(run, 0) });
    const received: string[] = [];
    const closes: { code: number; reason: string }[] = [];
    socket.onmessage = (e) => received.push(String(e.data));
    socket.onclose = (e) => closes.push(e);
    return { socket, fake, received, closes, frames: () => received.map((r) => JSON.parse(r) as ServerFrame) };
  }

  it('opens the stream with the topics, since and token, and adds the endpoint topics', () => {
    const { fake } = adapter('ws://h/ws/packages?since=anomalies:e1:3');
    expect(fake.last().param('topics')).toEqual(['package_updates,anomalies']);
    expect(fake.last().param('since')).toEqual(['anomalies:e1:3']);
    expect(fake.last().param('token')).toEqual(['tok']);
  });

  it('answers ping only while the stream shows it is alive, and ignores auth', () => {
    let now = 0;
    const fake = fakeSources();
    const socket = new SseSocket('ws://h/ws/connect', { topics: ['anomalies'], token: null, bbox: null, factory: fake.factory, now: () => now });
    const received: string[] = [];
    socket.onmessage = (e) => received.push(String(e.data));
    const types = () => received.map((r) => (JSON.parse(r) as ServerFrame).type);
    const ping = () => socket.send(JSON.stringify({ type: 'ping', data: {} }));
    fake.last().open();
    fake.last().receive(welcome(['anomalies'], 10)); // the bridge pings every 10 s
    socket.send(JSON.stringify({ type: 'auth', data: { token: 'tok' } }));
    now = 15_000; // within 1.5 intervals of the welcome
    ping();
    vi.runOnlyPendingTimers();
    expect(types()).toEqual(['welcome', 'pong']);
    // Quiet but alive: the bridge's ping events keep it so.
    now = 25_000;
    fake.last().ping();
    now = 40_000;
    ping();
    vi.runOnlyPendingTimers();
    expect(types()).toEqual(['welcome', 'pong', 'pong']);
    // Silent for longer: the pong waits for the next sign of life...
    now = 80_000;
    ping();
    vi.runOnlyPendingTimers();
    expect(types()).toHaveLength(3);
    fake.last().ping();
    expect(types()).toEqual(['welcome', 'pong', 'pong', 'pong']);
    // ...which a stream closed since is not.
    now = 200_000;
    ping();
    socket.send(JSON.stringify({ type: 'subscribe', data: { subscription_type: 'package_updates' } }));
    vi.runOnlyPendingTimers();
    fake.sources[0]!.ping();
    expect(types()).toHaveLength(4);
    expect(fake.sources).toHaveLength(2);
  });

  it('closes the old stream before it opens the new one', () => {
    const { socket, fake } = adapter();
    fake.last().open();
    for (const topic of ['package_updates', 'map_updates']) {
      socket.send(JSON.stringify({ type: 'subscribe', data: { subscription_type: topic } }));
      vi.runOnlyPendingTimers();
    }
    expect(fake.sources).toHaveLength(3);
    expect(fake.sources.map((s) => s.othersClosed)).toEqual([true, true, true]);
  });

  it('leaves a refused topic out of later streams until it is subscribed again', () => {
    const { socket, fake } = adapter('ws://h/ws/connect', ['anomalies', 'package_updates']);
    fake.last().open();
    // The bridge streams what the token allows; the welcome leaves the rest out.
    const answers: string[] = [];
    socket.onmessage = (e) => {
      const frame = JSON.parse(String(e.data)) as ServerFrame;
      answers.push(frame.type);
      // The client's own re-subscribe of what the welcome left out: the bridge's error answers it.
      if (frame.type === 'welcome') socket.send(JSON.stringify({ type: 'subscribe', data: { subscription_type: 'package_updates' } }));
    };
    fake.last().receive(welcome(['anomalies']));
    fake.last().receive({ type: 'error', data: { code: 'forbidden', message: 'this token may not subscribe to package_updates' }, timestamp: 't' });
    vi.runOnlyPendingTimers();
    expect(fake.sources).toHaveLength(1);
    expect(answers).toEqual(['welcome', 'error']);
    expect(socket.streaming).toEqual(['anomalies']);
    // Another reopen (a new topic) leaves it out.
    socket.send(JSON.stringify({ type: 'subscribe', data: { subscription_type: 'map_updates' } }));
    vi.runOnlyPendingTimers();
    expect(fake.last().param('topics')).toEqual(['anomalies,map_updates']);
    // Subscribed again: asked again.
    fake.last().open();
    socket.send(JSON.stringify({ type: 'subscribe', data: { subscription_type: 'package_updates' } }));
    vi.runOnlyPendingTimers();
    expect(fake.last().param('topics')).toEqual(['package_updates,anomalies,map_updates']);
    fake.last().receive(welcome(['anomalies', 'map_updates']));
    // A new token may allow it: a refresh asks again.
    socket.send(JSON.stringify({ type: 'refresh', data: { token: 'better' } }));
    vi.runOnlyPendingTimers();
    expect(fake.last().param('topics')).toEqual(['package_updates,anomalies,map_updates']);
    expect(fake.last().param('token')).toEqual(['better']);
  });

  it('re-opens once per turn with the positions of the last event id', () => {
    const { socket, fake, frames } = adapter();
    fake.last().open();
    fake.last().receive(event('anomaly_detected', 4), 'anomalies:e1:4');
    socket.send(JSON.stringify({ type: 'subscribe', data: { subscription_type: 'package_updates', since: { epoch: 'p', offset: 7 } } }));
    socket.send(JSON.stringify({ type: 'subscribe', data: { subscription_type: 'map_updates' } }));
    expect(fake.sources).toHaveLength(1);
    vi.runOnlyPendingTimers();
    expect(fake.sources).toHaveLength(2);
    expect(fake.sources[0]!.closed).toBe(true);
    const next = fake.last();
    expect(next.param('topics')).toEqual(['package_updates,anomalies,map_updates']);
    expect(next.param('since')).toEqual(['package_updates:p:7', 'anomalies:e1:4']);
    // Unsubscribe: answered here, and the stream goes on without it.
    socket.send(JSON.stringify({ type: 'unsubscribe', data: { subscription_type: 'anomalies' } }));
    vi.runOnlyPendingTimers();
    expect(fake.last().param('topics')).toEqual(['package_updates,map_updates']);
    expect(frames().at(-1)).toMatchObject({ type: 'unsubscribed', data: { subscription_type: 'anomalies', subscriptions: ['package_updates', 'map_updates'] } });
    // A frame of a stream closed since is not delivered.
    const before = frames().length;
    fake.sources[0]!.onmessage?.({ data: '{}' });
    expect(frames()).toHaveLength(before);
  });

  it('moves the viewport by re-opening with bbox', () => {
    const { socket, fake } = adapter('ws://h/ws/map');
    fake.last().open();
    socket.send(JSON.stringify({ type: 'viewport', data: { subscription_type: 'map_updates', bbox: { west: 1, south: 2, east: 3, north: 4 } } }));
    vi.runOnlyPendingTimers();
    expect(fake.last().param('bbox')).toEqual(['1,2,3,4']);
  });

  it('closes with the code of the final error frame', () => {
    const { socket, fake, closes, frames } = adapter();
    fake.last().open();
    fake.last().receive({ type: 'error', data: { code: 'token_expired', message: 'token expired', close_code: 4003 }, timestamp: 't' });
    expect(frames().map((f) => f.type)).toEqual(['error']);
    expect(closes).toEqual([{ code: 4003, reason: 'token expired' }]);
    expect(socket.readyState).toBe(3);
    expect(fake.last().closed).toBe(true);
  });

  it('closes 1006 when the stream fails, and never lets the EventSource retry', () => {
    const { fake, closes } = adapter();
    fake.last().fail();
    expect(closes).toEqual([{ code: SSE_LOST, reason: 'SSE stream could not be opened' }]);
    expect(fake.last().closed).toBe(true);
  });

  it('with no topic, opens idle and welcomes the client itself', () => {
    const fake = fakeSources();
    const socket = new SseSocket('ws://h/ws/connect', { topics: [], token: null, bbox: null, factory: fake.factory });
    const opened = vi.fn();
    const received: string[] = [];
    socket.onopen = opened;
    socket.onmessage = (e) => received.push(String(e.data));
    vi.runOnlyPendingTimers();
    expect(opened).toHaveBeenCalledOnce();
    expect(JSON.parse(received[0]!)).toMatchObject({ type: 'welcome', data: { subscriptions: [] } });
    expect(fake.sources).toHaveLength(0);
    socket.send(JSON.stringify({ type: 'subscribe', data: { subscription_type: 'anomalies' } }));
    vi.runOnlyPendingTimers();
    expect(fake.last().param('topics')).toEqual(['anomalies']);
  });
});

describe('the client falls back to SSE', () => {
  function setup(options: Partial<RealtimeClientOptions> = {}) {
    const ws = fakeSockets();
    const sse = fakeSources();
    let now = 1_000_000;
    const client = new RealtimeClient({
      url: 'ws://bridge.test/ws/connect',
      topics: ['package_updates'],
      webSocketFactory: ws.factory,
      eventSourceFactory: sse.factory,
      random: () => 0.5,
      backoff: { initialMs: 100, maxMs: 100, factor: 2, jitter: 0 },
      maxReconnectAttempts: 10,
      now: () => now,
      onListenerError: () => {},
      ...options,
    });
    const statuses: ConnectionStatus[] = [];
    const frames: ServerFrame[] = [];
    client.onStatus((s) => statuses.push(s));
    client.onFrame((f) => frames.push(f));
    return { client, ws, sse, statuses, frames, advance: (ms: number) => (now += ms) };
  }

  it('after two WebSockets that did not open, delivers over SSE with the same positions', () => {
    const { client, ws, sse, frames } = setup();
    client.connect();
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    expect(client.status.transport).toBe('websocket');
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    expect(ws.sockets).toHaveLength(2);
    expect(client.status.transport).toBe('sse');
    const source = sse.last();
    expect(source.url).toBe('http://bridge.test/sse?topics=package_updates');
    source.open();
    expect(client.state).toBe('connected');
    source.receive(welcome(['package_updates']));
    source.receive(event('package_update', 1), 'package_updates:e1:1');
    source.receive(event('package_update', 2), 'package_updates:e1:2');
    expect(client.positionOf('package_updates')).toEqual({ epoch: 'e1', offset: 2 });
    // Lost: the client reconnects over SSE, resuming after what it has.
    source.fail();
    expect(client.state).toBe('reconnecting');
    vi.advanceTimersByTime(100);
    expect(sse.last().param('since')).toEqual(['package_updates:e1:2']);
    sse.last().open();
    sse.last().receive(welcome(['package_updates']));
    sse.last().receive(subscribed('package_updates', { epoch: 'e1', offset: 3 }));
    sse.last().receive(event('package_update', 2), 'package_updates:e1:2'); // a duplicate is dropped
    sse.last().receive(event('package_update', 3), 'package_updates:e1:3');
    const offsets = frames.flatMap((f) => (f.type === 'package_update' && f.position ? [f.position.offset] : []));
    expect(offsets).toEqual([1, 2, 3]);
    expect(client.stats.duplicatesDropped).toBe(1);
  });

  it('goes back to WebSockets when SSE does not open either', () => {
    const { client, ws, sse } = setup();
    client.connect();
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    sse.last().fail();
    vi.advanceTimersByTime(100);
    expect(ws.sockets).toHaveLength(3);
    expect(client.status.transport).toBe('websocket');
  });

  it('a WebSocket that opened resets the count', () => {
    const { client, ws, sse } = setup();
    client.connect();
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    ws.last().open();
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    expect(sse.sources).toHaveLength(0); // one failure since the open: still WebSockets
    expect(ws.sockets).toHaveLength(4);
  });

  it('tries a WebSocket again on a reconnect after sseRetryWebSocketMs', () => {
    const { client, ws, sse, advance } = setup({ sseRetryWebSocketMs: 60_000 });
    client.connect();
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    ws.last().serverClose(1006);
    vi.advanceTimersByTime(100);
    sse.last().open();
    sse.last().fail();
    vi.advanceTimersByTime(100);
    expect(sse.sources).toHaveLength(2); // still SSE within the minute
    sse.last().open();
    advance(60_000);
    sse.last().fail();
    vi.advanceTimersByTime(100);
    expect(ws.sockets).toHaveLength(3);
    expect(client.status.transport).toBe('websocket');
  });

  it("transport: 'websocket' never falls back; 'sse' never uses a WebSocket", () => {
    const only = setup({ transport: 'websocket' });
    only.client.connect();
    for (let i = 0; i < 4; i += 1) {
      only.ws.last().serverClose(1006);
      vi.advanceTimersByTime(100);
    }
    expect(only.sse.sources).toHaveLength(0);
    const sseOnly = setup({ transport: 'sse' });
    sseOnly.client.connect();
    expect(sseOnly.ws.sockets).toHaveLength(0);
    expect(sseOnly.sse.sources).toHaveLength(1);
    expect(sseOnly.client.status.transport).toBe('sse');
  });

  it('reconnects a stream that died silently, and keeps a quiet one the bridge pings', () => {
    const { client, sse, advance } = setup({ transport: 'sse', pongTimeoutMs: 5_000 });
    const wait = (ms: number) => {
      advance(ms);
      vi.advanceTimersByTime(ms);
    };
    client.connect();
    sse.last().open();
    sse.last().receive(welcome(['package_updates'], 20)); // pings every 20 s, both ways
    // Quiet for five minutes, but the bridge's ping events come.
    for (let s = 0; s < 300; s += 20) {
      wait(19_000);
      sse.last().ping();
      wait(1_000);
    }
    expect(client.state).toBe('connected');
    expect(sse.sources).toHaveLength(1);
    // The connection dies silently: nothing more arrives, and no error either. Within
    // two ping intervals and the pong timeout, the client gives up on it.
    let silent = 0;
    while (client.state === 'connected' && silent <= 60_000) {
      wait(1_000);
      silent += 1_000;
    }
    expect(silent).toBeGreaterThan(20_000);
    expect(silent).toBeLessThanOrEqual(2 * 20_000 + 5_000);
    expect(client.state).toBe('reconnecting');
    expect(sse.sources[0]!.closed).toBe(true);
    wait(100);
    expect(sse.sources).toHaveLength(2);
  });

  it('a forbidden topic does not take the stream down: later reopens leave it out', () => {
    const { client, sse } = setup({ transport: 'sse', token: 'tok' });
    client.connect();
    sse.last().open();
    sse.last().receive(welcome(['package_updates']));
    client.subscribe('notifications');
    vi.advanceTimersByTime(0);
    expect(sse.last().param('topics')).toEqual(['package_updates,notifications']);
    // The bridge streams package_updates and refuses notifications with an error frame.
    sse.last().open();
    sse.last().receive(welcome(['package_updates']));
    sse.last().receive({ type: 'error', data: { code: 'forbidden', message: 'this token may not subscribe to notifications' }, timestamp: 't' });
    client.subscribe('anomalies');
    vi.advanceTimersByTime(0);
    expect(sse.last().param('topics')).toEqual(['package_updates,anomalies']);
    sse.last().open();
    sse.last().receive(welcome(['package_updates', 'anomalies']));
    vi.advanceTimersByTime(1_000);
    expect(sse.sources).toHaveLength(3);
    expect(client.state).toBe('connected');
    // Lost and reconnected: the new stream asks once more; the client's re-subscribe
    // after its welcome does not reopen it (the bridge's error frame answers it).
    sse.last().fail();
    vi.advanceTimersByTime(100);
    expect(sse.last().param('topics')).toEqual(['package_updates,anomalies,notifications']);
    sse.last().open();
    sse.last().receive(welcome(['package_updates', 'anomalies']));
    vi.advanceTimersByTime(1_000);
    expect(sse.sources).toHaveLength(4);
    expect(client.state).toBe('connected');
  });

  it('a token goes in the stream URL and a 4003 end reconnects with a fresh one', () => {
    let n = 0;
    const { client, sse } = setup({ transport: 'sse', token: () => `token-${(n += 1)}` });
    client.connect();
    expect(sse.last().param('token')).toEqual(['token-1']);
    sse.last().open();
    sse.last().receive({ type: 'error', data: { code: 'token_expired', message: 'expired', close_code: 4003 }, timestamp: 't' });
    expect(client.status.lastCloseCode).toBe(4003);
    expect(client.state).toBe('reconnecting');
    vi.advanceTimersByTime(100);
    expect(sse.last().param('token')).toEqual(['token-2']);
  });
});
