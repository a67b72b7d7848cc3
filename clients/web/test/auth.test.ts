import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { jwtExpiry, refreshDelayMs } from '../src/auth';
import { RealtimeClient, type RealtimeClientOptions } from '../src/client';
import type { ServerFrame } from '../src/frames';
import { event, fakeSockets, jwt, refreshed, subscribed, tokenSequence, welcome } from './fakes';

const URL = 'ws://bridge.test/ws/connect';
/** Far enough apart that no ping (hence no pong timeout) gets in the way of hour-long tests. */
const NO_PINGS = 10 * 24 * 3600 * 1000;
const T0 = Date.UTC(2024, 0, 15, 10, 30, 0);
const NOW_S = T0 / 1000;

function setup(options: Partial<RealtimeClientOptions> = {}) {
  const fake = fakeSockets();
  const client = new RealtimeClient({
    url: URL,
    webSocketFactory: fake.factory,
    random: () => 0.5,
    backoff: { initialMs: 100, maxMs: 10_000, factor: 2, jitter: 0.5 },
    pingIntervalMs: NO_PINGS,
    onListenerError: () => {},
    ...options,
  });
  const frames: ServerFrame[] = [];
  client.onFrame((f) => frames.push(f));
  return { client, fake, frames };
}

/** Lets pending promise callbacks (an async token function) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function authWelcome(expiresAt: number | null, subscriptions: Parameters<typeof welcome>[0] = []) {
  return welcome(subscriptions, 30, { subject: 'user-1', expires_at: expiresAt });
}

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(T0);
});
afterEach(() => {
  vi.useRealTimers();
});

describe('jwtExpiry and refreshDelayMs', () => {
  it('reads exp from a JWT payload, and null from anything else', () => {
    expect(jwtExpiry(jwt({ sub: 'u', exp: 1_700_000_000 }))).toBe(1_700_000_000);
    // base64url characters (- and _) and UTF-8 in the payload.
    expect(jwtExpiry(jwt({ sub: 'ü>>>???', name: '~~~~', exp: 42 }))).toBe(42);
    expect(jwtExpiry(jwt({ sub: 'u' }))).toBeNull();
    expect(jwtExpiry(jwt({ exp: '1700000000' }))).toBeNull();
    expect(jwtExpiry('opaque-api-key')).toBeNull();
    expect(jwtExpiry('a.b.c')).toBeNull();
    expect(jwtExpiry('a.!!!.c')).toBeNull();
    expect(jwtExpiry(`x.${Buffer.from('[1,2]').toString('base64url')}.y`)).toBeNull();
    expect(jwtExpiry('')).toBeNull();
    expect(jwtExpiry(null)).toBeNull();
  });

  it('refreshes min(60 s, 10% of the remaining lifetime) before expiry', () => {
    expect(refreshDelayMs(NOW_S + 3600, T0)).toBe(3_540_000);
    expect(refreshDelayMs(NOW_S + 300, T0)).toBe(270_000);
    expect(refreshDelayMs(NOW_S + 10, T0)).toBe(9_000);
    expect(refreshDelayMs(NOW_S, T0)).toBeNull();
    expect(refreshDelayMs(NOW_S - 5, T0)).toBeNull();
    expect(refreshDelayMs(Number.NaN, T0)).toBeNull();
  });
});

describe('auth message', () => {
  it('is the first message on the socket, before subscriptions and before anything a status listener sends', () => {
    const { client, fake } = setup({ token: 'static-jwt', topics: ['package_updates'] });
    client.onStatus((s) => {
      if (s.state === 'connected') client.send({ type: 'ping', data: {} });
    });
    client.connect();
    expect(fake.last().url).toBe(URL); // never in the URL
    fake.last().open();
    expect(fake.last().messages()[0]).toEqual({ type: 'auth', data: { token: 'static-jwt' } });
    // No subscribe before the welcome.
    expect(fake.last().subscribes()).toEqual([]);
    expect(client.state).toBe('connected');
  });

  it('subscribes once the welcome comes (auth processed first)', () => {
    const { client, fake } = setup({ token: 'static-jwt', topics: ['package_updates', 'anomalies'] });
    client.connect();
    const s = fake.last();
    s.open();
    client.subscribe('map_updates'); // before the welcome: waits for it
    client.unsubscribe('anomalies');
    expect(s.messages().map((m) => m.type)).toEqual(['auth']);
    s.receive(authWelcome(NOW_S + 3600));
    expect(s.subscribes().map((x) => x.topic)).toEqual(['package_updates', 'map_updates']);
    expect(client.status.subject).toBe('user-1');
    expect(client.status.expiresAt).toBe(NOW_S + 3600);
    // Subscriptions made after the welcome go out at once.
    client.subscribe('anomalies');
    expect(s.subscribes().map((x) => x.topic)).toEqual(['package_updates', 'map_updates', 'anomalies']);
  });

  it('works when the welcome comes before the auth is processed (auth off), answered by refreshed', () => {
    const { client, fake, frames } = setup({ token: 'static-jwt', topics: ['package_updates'] });
    client.connect();
    const s = fake.last();
    s.open();
    s.receive(welcome([], 30, { subject: 'anonymous', expires_at: null }));
    expect(s.subscribes().map((x) => x.topic)).toEqual(['package_updates']);
    s.receive(refreshed(null));
    s.receive(subscribed('package_updates', { offset: 0, epoch: 'e1' }));
    s.receive(event('package_update', 1));
    expect(s.messages().map((m) => m.type)).toEqual(['auth', 'subscribe']);
    expect(frames.map((f) => f.type)).toEqual(['welcome', 'refreshed', 'subscribed', 'package_update']);
    expect(client.status.expiresAt).toBeNull();
    expect(client.state).toBe('connected');
  });

  it('lets the endpoint subscribe its own topics and resumes through the URL after a welcome', () => {
    const tokens = tokenSequence();
    const { client, fake } = setup({ token: tokens.next, url: 'ws://bridge.test/ws/packages', topics: ['anomalies'] });
    client.connect();
    fake.last().open();
    fake.last().receive(authWelcome(null, ['package_updates']));
    expect(fake.last().subscribes().map((x) => x.topic)).toEqual(['anomalies']);
    fake.last().receive([event('package_update', 1), event('package_update', 2)]);
    fake.last().serverClose(1006);
    vi.runOnlyPendingTimers();
    const s = fake.last();
    expect(s.since()).toEqual(['package_updates:e1:2']);
    s.open();
    s.receive(authWelcome(null, ['package_updates']));
    expect(s.messages()).toEqual([
      { type: 'auth', data: { token: 'token-2' } },
      { type: 'subscribe', data: { subscription_type: 'anomalies' } },
    ]);
  });

  it('waits for an async token before opening the socket; close() while waiting opens nothing', async () => {
    let resolve: (token: string) => void = () => {};
    const { client, fake } = setup({ token: () => new Promise<string>((r) => (resolve = r)) });
    client.connect();
    expect(client.state).toBe('connecting');
    expect(fake.sockets).toHaveLength(0);
    resolve('async-jwt');
    await settle();
    expect(fake.sockets).toHaveLength(1);
    fake.last().open();
    expect(fake.last().tokens()).toEqual([{ type: 'auth', token: 'async-jwt' }]);

    client.close();
    client.connect();
    client.close();
    resolve('too-late');
    await settle();
    expect(fake.sockets).toHaveLength(1);
    expect(client.state).toBe('closed');
  });

  it('counts a token function that throws, rejects or gives nothing as a failed attempt', async () => {
    let n = 0;
    const { client, fake } = setup({
      token: () => {
        n += 1;
        if (n === 1) throw new Error('not logged in');
        if (n === 2) return Promise.reject(new Error('auth server down'));
        if (n === 3) return '';
        return 'jwt-4';
      },
    });
    client.connect();
    expect(client.state).toBe('reconnecting');
    expect(client.status.lastError).toBe('no token: not logged in');
    vi.runOnlyPendingTimers();
    await settle();
    expect(client.status.lastError).toBe('no token: auth server down');
    expect(client.status.attempt).toBe(2);
    vi.runOnlyPendingTimers();
    expect(client.status.lastError).toContain('gave no token');
    vi.runOnlyPendingTimers();
    expect(fake.sockets).toHaveLength(1);
    fake.last().open();
    expect(fake.last().tokens()).toEqual([{ type: 'auth', token: 'jwt-4' }]);
  });

  it('gives up on a token function that never answers after the connect timeout', () => {
    const { client, fake } = setup({ token: () => new Promise<string>(() => {}), connectTimeoutMs: 1_000 });
    client.connect();
    vi.advanceTimersByTime(1_000);
    expect(client.state).toBe('reconnecting');
    expect(client.status.lastError).toContain('no connection within 1000 ms');
    expect(fake.sockets).toHaveLength(0);
  });
});

describe('refresh', () => {
  it('sends refresh with a new token from the function min(60 s, 10%) before expiry, without resubscribing', () => {
    const tokens = tokenSequence(3600);
    const { client, fake } = setup({ token: tokens.next, topics: ['package_updates'] });
    client.connect();
    const s = fake.last();
    s.open();
    s.receive(authWelcome(NOW_S + 3600));
    expect(tokens.calls()).toBe(1);
    vi.advanceTimersByTime(3_540_000 - 1);
    expect(s.ofType('refresh')).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(tokens.calls()).toBe(2);
    expect(s.ofType('refresh')).toEqual([{ type: 'refresh', data: { token: tokens.issued[1] } }]);
    // The answer sets the next refresh from its expires_at: 5 minutes -> 30 s before.
    const next = Date.now() / 1000 + 300;
    s.receive(refreshed(next));
    expect(client.status.expiresAt).toBe(next);
    vi.advanceTimersByTime(270_000 - 1);
    expect(s.ofType('refresh')).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(s.ofType('refresh')).toHaveLength(2);
    expect(s.ofType('refresh')[1]?.data.token).toBe(tokens.issued[2]);
    // Same socket, subscriptions untouched.
    expect(fake.sockets).toHaveLength(1);
    expect(s.subscribes()).toHaveLength(1);
    expect(s.ofType('unsubscribe')).toEqual([]);
    expect(client.state).toBe('connected');
  });

  it("uses the JWT's exp when expires_at is null, with an async token function", async () => {
    const tokens = tokenSequence(600);
    const { client, fake } = setup({ token: async () => tokens.next() });
    client.connect();
    await settle();
    const s = fake.last();
    s.open();
    // Auth off on the bridge: null expiries; the client falls back to the JWT's own exp (600 s: refresh at 540 s).
    s.receive(welcome([], 30, { subject: 'anonymous', expires_at: null }));
    s.receive(refreshed(null));
    vi.advanceTimersByTime(540_000 - 1);
    await settle();
    expect(s.ofType('refresh')).toEqual([]);
    vi.advanceTimersByTime(1);
    await settle();
    expect(s.tokens().map((t) => t.type)).toEqual(['auth', 'refresh']);
    expect(s.ofType('refresh')[0]?.data.token).toBe(tokens.issued[1]);
  });

  it('does not refresh a token it cannot read an expiry from, nor a static token', () => {
    for (const token of [() => 'opaque-key', jwt({ sub: 'u', exp: NOW_S + 120 })]) {
      const { client, fake } = setup({ token });
      client.connect();
      fake.last().open();
      fake.last().receive(authWelcome(typeof token === 'string' ? NOW_S + 120 : null));
      vi.advanceTimersByTime(119_000);
      expect(fake.last().ofType('refresh')).toEqual([]);
      client.close();
    }
  });

  it('clears the refresh timer on close and on a lost connection', () => {
    const tokens = tokenSequence();
    const { client, fake } = setup({ token: tokens.next });
    client.connect();
    fake.last().open();
    fake.last().receive(authWelcome(NOW_S + 100));
    expect(vi.getTimerCount()).toBe(2); // ping and refresh
    client.close();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(200_000);
    expect(fake.last().ofType('refresh')).toEqual([]);
    expect(tokens.calls()).toBe(1);

    client.connect();
    fake.last().open();
    fake.last().receive(authWelcome(Date.now() / 1000 + 100));
    fake.last().serverClose(1006);
    expect(vi.getTimerCount()).toBe(1); // the reconnection's
    // The reconnection opens a socket that is never welcomed: no refresh on it either.
    vi.advanceTimersByTime(200_000);
    expect(fake.sockets.flatMap((s) => s.ofType('refresh'))).toEqual([]);
  });

  it('reports a failed refresh and tries again halfway to the expiry', async () => {
    let fail = true;
    let n = 0;
    const { client, fake } = setup({
      token: async () => {
        n += 1;
        if (n > 1 && fail) throw new Error('auth server down');
        return `jwt-${n}`;
      },
    });
    client.connect();
    await settle();
    const s = fake.last();
    s.open();
    s.receive(authWelcome(NOW_S + 600)); // refresh at 540 s
    vi.advanceTimersByTime(540_000);
    await settle();
    expect(client.status.lastError).toBe('token refresh failed: auth server down');
    expect(client.state).toBe('connected');
    fail = false;
    vi.advanceTimersByTime(30_000); // 60 s left: again after 30 s
    await settle();
    expect(s.tokens()).toEqual([
      { type: 'auth', token: 'jwt-1' },
      { type: 'refresh', token: 'jwt-3' },
    ]);
  });
});

describe('auth close codes', () => {
  it('stops on 4001 with a static token (or none) and surfaces why, without the token', () => {
    for (const token of ['static-secret-jwt', undefined]) {
      const { client, fake } = setup(token ? { token } : {});
      client.connect();
      fake.last().open();
      fake.last().serverClose(4001, 'invalid signature');
      expect(client.state).toBe('failed');
      expect(client.status.lastCloseCode).toBe(4001);
      expect(client.status.lastError).toBe('closed by server (4001 unauthorized: invalid signature)');
      vi.advanceTimersByTime(120_000);
      expect(fake.sockets).toHaveLength(1);
    }
  });

  it('stops on 4003 with a static token: it cannot get any better', () => {
    const { client, fake } = setup({ token: 'static-jwt' });
    client.connect();
    fake.last().open();
    fake.last().receive(authWelcome(NOW_S + 60));
    fake.last().serverClose(4003, 'token expired');
    expect(client.state).toBe('failed');
    expect(client.status.lastError).toContain('4003 token expired');
    vi.advanceTimersByTime(120_000);
    expect(fake.sockets).toHaveLength(1);
  });

  it('reconnects on 4008 with a static token, and stops on it without a token', () => {
    const withToken = setup({ token: 'static-jwt' });
    withToken.client.connect();
    withToken.fake.last().open();
    withToken.fake.last().serverClose(4008, 'no auth message within 5 s');
    expect(withToken.client.state).toBe('reconnecting');
    vi.runOnlyPendingTimers();
    withToken.fake.last().open();
    expect(withToken.fake.last().tokens()).toEqual([{ type: 'auth', token: 'static-jwt' }]);

    const without = setup();
    without.client.connect();
    without.fake.last().open();
    without.fake.last().serverClose(4008, 'no auth message within 5 s');
    expect(without.client.state).toBe('failed');
    expect(without.client.status.lastError).toContain('4008 authentication timed out');
  });

  for (const code of [4001, 4003, 4008, 1008]) {
    it(`reconnects with backoff after ${code} with a token function, with a fresh token, resuming positions`, () => {
      const tokens = tokenSequence();
      const { client, fake } = setup({ token: tokens.next, topics: ['package_updates'] });
      client.connect();
      fake.last().open();
      fake.last().receive(authWelcome(NOW_S + 3600));
      fake.last().receive(subscribed('package_updates', { offset: 0, epoch: 'e1' }));
      fake.last().receive(event('package_update', 7));
      fake.last().serverClose(code, 'why');
      expect(client.state).toBe('reconnecting');
      expect(client.status.lastCloseCode).toBe(code);
      expect(client.status.retryDelayMs).toBe(75);
      vi.advanceTimersByTime(74);
      expect(fake.sockets).toHaveLength(1);
      vi.advanceTimersByTime(1);
      expect(fake.sockets).toHaveLength(2);
      expect(tokens.calls()).toBe(2);
      const s = fake.last();
      expect(s.since()).toEqual(['package_updates:e1:7']);
      s.open();
      expect(s.messages()).toEqual([{ type: 'auth', data: { token: 'token-2' } }]);
      s.receive(authWelcome(NOW_S + 3600));
      expect(s.subscribes()).toEqual([]); // resumed by the URL
      expect(client.state).toBe('connected');
    });
  }

  it('backs off and finally fails when a token function keeps getting 4001 before any welcome', () => {
    const tokens = tokenSequence();
    const { client, fake } = setup({ token: tokens.next, maxReconnectAttempts: 2 });
    client.connect();
    for (const delay of [75, 150]) {
      fake.last().open();
      fake.last().serverClose(4001, 'invalid signature');
      expect(client.status.retryDelayMs).toBe(delay);
      vi.advanceTimersByTime(delay);
    }
    fake.last().open();
    fake.last().serverClose(4001, 'invalid signature');
    expect(client.state).toBe('failed');
    expect(fake.sockets.map((s) => s.tokens()[0]?.token)).toEqual(['token-1', 'token-2', 'token-3']);
  });
});

describe('errors and secrecy', () => {
  it('delivers a forbidden error frame to listeners and changes nothing', () => {
    const { client, fake } = setup({ token: 'static-jwt', topics: ['package_updates'] });
    const errors: string[] = [];
    client.on('error', (f) => errors.push(`${f.data.code}: ${f.data.message}`));
    client.connect();
    const s = fake.last();
    s.open();
    s.receive(authWelcome(null));
    s.receive(subscribed('package_updates', null));
    client.subscribe('system_health');
    s.receive({ type: 'error', data: { code: 'forbidden', message: 'system_health not allowed' }, timestamp: 'x' });
    expect(errors).toEqual(['forbidden: system_health not allowed']);
    expect(client.state).toBe('connected');
    expect(client.confirmedSubscriptions).toEqual(['package_updates']);
    expect(fake.sockets).toHaveLength(1);
  });

  it('never logs a token, nor puts one in a URL or an error', async () => {
    const spies = (['log', 'info', 'warn', 'error', 'debug'] as const).map((m) => vi.spyOn(console, m).mockImplementation(() => {}));
    const secret = jwt({ sub: 'u', exp: NOW_S + 100, secret: 'hunter2' });
    const { client, fake } = setup({ token: () => secret, onListenerError: undefined });
    const statuses: string[] = [];
    client.onStatus((s) => statuses.push(JSON.stringify(s)));
    client.onFrame(() => {
      throw new Error('app bug');
    });
    client.connect();
    fake.last().open();
    fake.last().receive(authWelcome(NOW_S + 100));
    vi.advanceTimersByTime(90_000);
    await settle();
    fake.last().serverClose(4003, 'token expired');
    vi.runOnlyPendingTimers();
    fake.last().serverClose(4001, 'bad token');
    const printed = JSON.stringify(spies.flatMap((s) => s.mock.calls.map((c) => c.map(String))));
    for (const text of [printed, ...statuses, ...fake.sockets.map((s) => s.url)]) expect(text).not.toContain(secret);
    expect(fake.sockets[0]?.tokens().map((t) => t.type)).toEqual(['auth', 'refresh']);
  });
});
