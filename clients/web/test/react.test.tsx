// @vitest-environment jsdom
import { act, cleanup, render, screen } from '@testing-library/react';
import { useState } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { BoundingBox, ServerFrame, Topic } from '../src/frames';
import { RealtimeProvider, useWebSocket } from '../src/react';
import { ClientRegistry } from '../src/registry';
import type { Gap } from '../src/positions';
import { event, fakeSockets, subscribed, welcome } from './fakes';

const URL = 'ws://bridge.test/ws/connect';

function setup() {
  const fake = fakeSockets();
  const registry = new ClientRegistry({ lingerMs: 100, clientOptions: { webSocketFactory: fake.factory } });
  return { fake, registry };
}

function Widget(props: { id: string; topics?: Topic[]; onMessage?: (f: ServerFrame) => void; track?: boolean }) {
  const ws = useWebSocket({
    url: URL,
    ...(props.topics ? { topics: props.topics } : {}),
    ...(props.onMessage ? { onMessage: props.onMessage } : {}),
    ...(props.track === undefined ? {} : { trackLastMessage: props.track }),
  });
  return (
    <div data-testid={props.id}>
      <span data-testid={`${props.id}-state`}>{ws.state}</span>
      <span data-testid={`${props.id}-connected`}>{String(ws.isConnected)}</span>
      <span data-testid={`${props.id}-last`}>{ws.lastMessage?.type ?? 'none'}</span>
      <span data-testid={`${props.id}-subs`}>{ws.subscriptions.join(',')}</span>
      <button data-testid={`${props.id}-sub`} onClick={() => ws.subscribe('anomalies')} />
      <button data-testid={`${props.id}-unsub`} onClick={() => ws.unsubscribe('anomalies')} />
      <button data-testid={`${props.id}-ping`} onClick={() => ws.sendMessage({ type: 'ping', data: {} })} />
    </div>
  );
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

describe('useWebSocket', () => {
  it('reports the connection and the last message', () => {
    const { fake, registry } = setup();
    render(
      <RealtimeProvider registry={registry}>
        <Widget id="a" topics={['package_updates']} />
      </RealtimeProvider>,
    );
    expect(screen.getByTestId('a-state').textContent).toBe('connecting');
    act(() => fake.last().open());
    expect(screen.getByTestId('a-state').textContent).toBe('connected');
    expect(screen.getByTestId('a-connected').textContent).toBe('true');
    expect(screen.getByTestId('a-subs').textContent).toBe('package_updates');
    act(() => fake.last().receive(event('package_update', 1)));
    expect(screen.getByTestId('a-last').textContent).toBe('package_update');
    act(() => screen.getByTestId('a-ping').click());
    expect(fake.last().messages().at(-1)).toEqual({ type: 'ping', data: {} });
    act(() => fake.last().serverClose(1006));
    expect(screen.getByTestId('a-state').textContent).toBe('reconnecting');
  });

  it('shares one socket between components and calls each onMessage for every frame', () => {
    const { fake, registry } = setup();
    const seenA: string[] = [];
    const seenB: string[] = [];
    render(
      <RealtimeProvider registry={registry}>
        <Widget id="a" topics={['package_updates']} onMessage={(f) => seenA.push(f.type)} track={false} />
        <Widget id="b" topics={['anomalies']} onMessage={(f) => seenB.push(f.type)} />
      </RealtimeProvider>,
    );
    expect(fake.sockets).toHaveLength(1);
    act(() => fake.last().open());
    act(() => fake.last().receive([event('package_update', 1), event('anomaly_detected', 1)]));
    expect(seenA).toEqual(['package_update', 'anomaly_detected']);
    expect(seenB).toEqual(['package_update', 'anomaly_detected']);
    expect(screen.getByTestId('a-last').textContent).toBe('none');
    expect(screen.getByTestId('b-last').textContent).toBe('anomaly_detected');
    expect(fake.last().subscribes().map((s) => s.topic)).toEqual(['package_updates', 'anomalies']);
  });

  it('uses the latest onMessage without re-subscribing', () => {
    const { fake, registry } = setup();
    const calls: string[] = [];
    function Switching() {
      const [n, setN] = useState(1);
      useWebSocket({ url: URL, registry, onMessage: () => calls.push(`v${n}`), trackLastMessage: false });
      return <button data-testid="bump" onClick={() => setN((x) => x + 1)} />;
    }
    render(<Switching />);
    act(() => fake.last().open());
    act(() => fake.last().receive(event('package_update', 1)));
    act(() => screen.getByTestId('bump').click());
    act(() => fake.last().receive(event('package_update', 2)));
    expect(calls).toEqual(['v1', 'v2']);
    expect(fake.sockets).toHaveLength(1);
    expect(fake.last().messages()).toEqual([]);
  });

  it("releases a component's topics on unmount; a topic stays while another holds it", () => {
    const { fake, registry } = setup();
    function Page() {
      const [showA, setShowA] = useState(true);
      const [showB, setShowB] = useState(true);
      return (
        <RealtimeProvider registry={registry}>
          {showA && <Widget id="a" topics={['package_updates', 'anomalies']} />}
          {showB && <Widget id="b" topics={['anomalies']} />}
          <button data-testid="hide-a" onClick={() => setShowA(false)} />
          <button data-testid="hide-b" onClick={() => setShowB(false)} />
        </RealtimeProvider>
      );
    }
    render(<Page />);
    const socket = fake.last();
    act(() => socket.open());
    act(() => screen.getByTestId('hide-a').click());
    expect(socket.messages().filter((m) => m.type === 'unsubscribe')).toEqual([
      { type: 'unsubscribe', data: { subscription_type: 'package_updates' } },
    ]);
    expect(screen.getByTestId('b-subs').textContent).toBe('anomalies');
    act(() => screen.getByTestId('hide-b').click());
    expect(socket.messages().filter((m) => m.type === 'unsubscribe').map((m) => m.data)).toEqual([
      { subscription_type: 'package_updates' },
      { subscription_type: 'anomalies' },
    ]);
    // The last user gone: the shared socket closes after the linger.
    expect(socket.closedWith).toBeNull();
    act(() => vi.advanceTimersByTime(100));
    expect(socket.closedWith?.code).toBe(1000);
    expect(fake.sockets).toHaveLength(1);
  });

  it('subscribe()/unsubscribe() hold and release topics for the component', () => {
    const { fake, registry } = setup();
    const { unmount } = render(
      <RealtimeProvider registry={registry}>
        <Widget id="a" />
      </RealtimeProvider>,
    );
    const socket = fake.last();
    act(() => socket.open());
    act(() => socket.receive(welcome(['dashboard_metrics'])));
    act(() => screen.getByTestId('a-sub').click());
    expect(screen.getByTestId('a-subs').textContent).toBe('anomalies,dashboard_metrics');
    act(() => screen.getByTestId('a-unsub').click());
    expect(screen.getByTestId('a-subs').textContent).toBe('dashboard_metrics');
    act(() => screen.getByTestId('a-sub').click());
    unmount();
    // Unmounting releases what the component subscribed, not the endpoint's own topic.
    const unsubs = socket.messages().filter((m) => m.type === 'unsubscribe').map((m) => m.data.subscription_type);
    expect(unsubs).toEqual(['anomalies', 'anomalies']);
  });

  it('survives a StrictMode-style remount without a second socket', () => {
    const { fake, registry } = setup();
    const first = render(<Widget id="a" />, { wrapper: ({ children }) => <RealtimeProvider registry={registry}>{children}</RealtimeProvider> });
    first.unmount();
    render(
      <RealtimeProvider registry={registry}>
        <Widget id="a" />
      </RealtimeProvider>,
    );
    act(() => vi.advanceTimersByTime(1_000));
    expect(fake.sockets).toHaveLength(1);
    expect(fake.last().closedWith).toBeNull();
  });
});

describe('useWebSocket gaps', () => {
  function GapWidget(props: { onGap: (g: Gap) => void }) {
    const ws = useWebSocket({ url: URL, topics: ['package_updates'], onGap: props.onGap, trackLastMessage: false });
    return (
      <span data-testid="gap" data-reason={ws.lastGap?.reason ?? ''}>
        {ws.lastGap ? `${ws.lastGap.topic}@${ws.lastGap.position?.epoch}` : 'none'}
      </span>
    );
  }

  it('reports a gap through onGap and lastGap', () => {
    const { fake, registry } = setup();
    const gaps: Gap[] = [];
    render(
      <RealtimeProvider registry={registry}>
        <GapWidget onGap={(g) => gaps.push(g)} />
      </RealtimeProvider>,
    );
    act(() => fake.last().open());
    act(() => fake.last().receive(subscribed('package_updates', { offset: 4, epoch: 'e1' })));
    expect(screen.getByTestId('gap').textContent).toBe('none');
    act(() =>
      fake.last().receive(subscribed('package_updates', { offset: 0, epoch: 'NEW' }, false, ['package_updates'], 'epoch_changed')),
    );
    expect(screen.getByTestId('gap').textContent).toBe('package_updates@NEW');
    expect(screen.getByTestId('gap').dataset['reason']).toBe('epoch_changed');
    expect(gaps.map((g) => g.since)).toEqual([{ offset: 4, epoch: 'e1' }]);
  });
});

describe('useWebSocket token', () => {
  function TokenWidget(props: { token: string | (() => string) }) {
    const ws = useWebSocket({ url: URL, topics: ['package_updates'], token: props.token, trackLastMessage: false });
    return <span data-testid="state">{ws.state}</span>;
  }

  it('passes a static token to the client: auth first, subscriptions after the welcome', () => {
    const { fake, registry } = setup();
    render(
      <RealtimeProvider registry={registry}>
        <TokenWidget token="static-jwt" />
      </RealtimeProvider>,
    );
    act(() => fake.last().open());
    expect(fake.last().messages()).toEqual([{ type: 'auth', data: { token: 'static-jwt' } }]);
    act(() => fake.last().receive(welcome([], 30, { subject: 'user-1', expires_at: null })));
    expect(fake.last().subscribes().map((s) => s.topic)).toEqual(['package_updates']);
    expect(registry.peek(URL)?.status.subject).toBe('user-1');
  });

  it("calls the latest render's token function on each reconnect", () => {
    const { fake, registry } = setup();
    const { rerender } = render(
      <RealtimeProvider registry={registry}>
        <TokenWidget token={() => 'jwt-A'} />
      </RealtimeProvider>,
    );
    act(() => fake.last().open());
    expect(fake.last().tokens()).toEqual([{ type: 'auth', token: 'jwt-A' }]);
    rerender(
      <RealtimeProvider registry={registry}>
        <TokenWidget token={() => 'jwt-B'} />
      </RealtimeProvider>,
    );
    // A function token: 4001 is retried, with the new token.
    act(() => fake.last().serverClose(4001, 'token revoked'));
    expect(screen.getByTestId('state').textContent).toBe('reconnecting');
    act(() => vi.runOnlyPendingTimers());
    act(() => fake.last().open());
    expect(fake.sockets).toHaveLength(2);
    expect(fake.last().tokens()).toEqual([{ type: 'auth', token: 'jwt-B' }]);
  });
});

describe('useWebSocket viewport', () => {
  const BOX = { west: -90, south: 30, east: -80, north: 45 };

  function MapWidget(props: { url?: string; seen: ((bbox: BoundingBox | null) => void)[] }) {
    const ws = useWebSocket({ url: props.url ?? URL, topics: ['map_updates'], trackLastMessage: false });
    props.seen.push(ws.setViewport);
    return <button data-testid="pan" onClick={() => ws.setViewport(BOX)} />;
  }

  it('exposes a stable setViewport that moves the shared client’s box', () => {
    const { fake, registry } = setup();
    const seen: ((bbox: BoundingBox | null) => void)[] = [];
    const { rerender } = render(
      <RealtimeProvider registry={registry}>
        <MapWidget seen={seen} />
      </RealtimeProvider>,
    );
    act(() => fake.last().open());
    act(() => screen.getByTestId('pan').click());
    rerender(
      <RealtimeProvider registry={registry}>
        <MapWidget seen={seen} />
      </RealtimeProvider>,
    );
    expect(new Set(seen).size).toBe(1);
    expect(fake.last().ofType('viewport').map((m) => m.data)).toEqual([{ subscription_type: 'map_updates', bbox: BOX }]);
    expect(registry.peek(URL)?.viewport).toEqual(BOX);
  });

  it('applies the box again to the client of a new URL', () => {
    const { fake, registry } = setup();
    const seen: ((bbox: BoundingBox | null) => void)[] = [];
    const { rerender } = render(
      <RealtimeProvider registry={registry}>
        <MapWidget seen={seen} />
      </RealtimeProvider>,
    );
    act(() => fake.last().open());
    act(() => screen.getByTestId('pan').click());
    const other = 'ws://bridge.test/ws/map';
    rerender(
      <RealtimeProvider registry={registry}>
        <MapWidget url={other} seen={seen} />
      </RealtimeProvider>,
    );
    expect(registry.peek(other)?.viewport).toEqual(BOX);
    act(() => fake.last().open());
    act(() => fake.last().receive(welcome(['map_updates', 'package_updates'])));
    // The new socket was made before the box came back: it goes with the subscribe.
    const s = fake.last();
    expect(new globalThis.URL(s.url).searchParams.get('bbox')).toBeNull();
    expect(s.ofType('subscribe').map((m) => m.data)).toEqual([{ subscription_type: 'map_updates', bbox: BOX }]);
    expect(s.ofType('viewport')).toEqual([]);
  });

  it('refuses a bad box to the caller, keeps the last good one, and never throws while rendering', () => {
    const { fake, registry } = setup();
    let caught: unknown = null;
    const BAD = { west: 0, south: 50, east: 10, north: 40 };
    function Pan(props: { url: string }) {
      const ws = useWebSocket({ url: props.url, topics: ['map_updates'], trackLastMessage: false });
      return (
        <>
          <button data-testid="good" onClick={() => ws.setViewport(BOX)} />
          <button
            data-testid="bad"
            onClick={() => {
              try {
                ws.setViewport(BAD);
              } catch (error) {
                caught = error;
              }
            }}
          />
        </>
      );
    }
    const { rerender } = render(
      <RealtimeProvider registry={registry}>
        <Pan url={URL} />
      </RealtimeProvider>,
    );
    act(() => fake.last().open());
    act(() => screen.getByTestId('good').click());
    act(() => screen.getByTestId('bad').click());
    expect(caught).toBeInstanceOf(RangeError);
    expect(String(caught)).toMatch(/bbox.south/);
    const other = 'ws://bridge.test/ws/map';
    expect(() =>
      rerender(
        <RealtimeProvider registry={registry}>
          <Pan url={other} />
        </RealtimeProvider>,
      ),
    ).not.toThrow();
    expect(registry.peek(other)?.viewport).toEqual(BOX);
  });
});
