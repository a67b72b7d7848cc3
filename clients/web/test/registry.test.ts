import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ClientRegistry } from '../src/registry';
import { fakeSockets, welcome } from './fakes';

const URL = 'ws://bridge.test/ws/connect';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

function setup(lingerMs = 0) {
  const fake = fakeSockets();
  const registry = new ClientRegistry({ lingerMs, clientOptions: { webSocketFactory: fake.factory } });
  return { fake, registry };
}

describe('ClientRegistry', () => {
  it('shares one client and one socket per URL', () => {
    const { fake, registry } = setup();
    const a = registry.acquire(URL);
    const b = registry.acquire(URL);
    const other = registry.acquire('ws://bridge.test/ws/map');
    expect(a.client).toBe(b.client);
    expect(other.client).not.toBe(a.client);
    expect(fake.sockets.map((s) => s.url)).toEqual([URL, 'ws://bridge.test/ws/map']);
    expect(registry.leaseCount(URL)).toBe(2);
  });

  it('keeps a topic subscribed while any lease holds it', () => {
    const { fake, registry } = setup();
    const a = registry.acquire(URL);
    const b = registry.acquire(URL);
    fake.sockets[0]!.open();
    a.hold('anomalies');
    b.hold('anomalies');
    a.hold('anomalies');
    a.release('anomalies');
    expect(a.client.subscriptions).toEqual(['anomalies']);
    b.dispose();
    expect(a.client.subscriptions).toEqual([]);
    expect(fake.sockets[0]!.messages()).toEqual([
      { type: 'subscribe', data: { subscription_type: 'anomalies' } },
      { type: 'unsubscribe', data: { subscription_type: 'anomalies' } },
    ]);
  });

  it("leaves an endpoint's own topics subscribed when a lease goes, drops them when asked", () => {
    const { fake, registry } = setup();
    const a = registry.acquire(URL);
    const b = registry.acquire(URL);
    const socket = fake.sockets[0]!;
    socket.open();
    socket.receive(welcome(['dashboard_metrics', 'notifications']));
    a.hold('dashboard_metrics');
    a.dispose();
    expect(b.client.subscriptions).toEqual(['dashboard_metrics', 'notifications']);
    b.release('notifications', true);
    expect(b.client.subscriptions).toEqual(['dashboard_metrics']);
  });

  it('closes the client when the last lease is disposed, after the linger', () => {
    const { fake, registry } = setup(1_000);
    const a = registry.acquire(URL);
    fake.sockets[0]!.open();
    a.dispose();
    a.dispose();
    vi.advanceTimersByTime(999);
    expect(a.client.state).toBe('connected');
    // A lease taken within the linger reuses the client.
    const b = registry.acquire(URL);
    vi.advanceTimersByTime(5_000);
    expect(b.client).toBe(a.client);
    expect(fake.sockets).toHaveLength(1);
    b.dispose();
    vi.advanceTimersByTime(1_000);
    expect(b.client.state).toBe('closed');
    expect(fake.sockets[0]!.closedWith?.code).toBe(1000);
    expect(registry.peek(URL)).toBeUndefined();
    // The next lease makes a new client.
    const c = registry.acquire(URL);
    expect(c.client).not.toBe(a.client);
    expect(fake.sockets).toHaveLength(2);
    registry.closeAll();
    expect(c.client.state).toBe('closed');
  });
});
