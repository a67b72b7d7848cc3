// @vitest-environment jsdom
import { act, cleanup, fireEvent, render, screen, within } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { App } from '../src/dashboard/App';
import { FLUSH_MS } from '../src/dashboard/feed';
import { CONTIGUOUS_US, VIEWPORT_DEBOUNCE, ZOOM_LIMITS } from '../src/dashboard/map';
import { TOPICS } from '../src/frames';
import { RealtimeProvider } from '../src/react';
import { ClientRegistry } from '../src/registry';
import { SAMPLE, TS, event, fakeSockets, subscribed, welcome } from './fakes';

const URL = 'ws://bridge.test/ws/connect';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

/** The app on fake sockets; `transport: 'websocket'` keeps a run of failed opens on WebSockets (no SSE fallback). */
function renderApp(options: { transport?: 'websocket'; maxReconnectAttempts?: number } = {}) {
  const fake = fakeSockets();
  const registry = new ClientRegistry({
    clientOptions: { webSocketFactory: fake.factory, random: () => 0.5, ...options },
  });
  render(
    <RealtimeProvider registry={registry}>
      <App endpoint={URL} initialTopics={TOPICS} />
    </RealtimeProvider>,
  );
  return fake;
}

describe('dashboard', () => {
  it('subscribes the seven topics and shows the connection', () => {
    const fake = renderApp();
    expect(fake.sockets).toHaveLength(1);
    expect(screen.getByTestId('connection-state').dataset['state']).toBe('connecting');
    act(() => fake.last().open());
    act(() => fake.last().receive(welcome([])));
    expect(screen.getByTestId('connection-state').textContent).toContain('Connected');
    expect(screen.getByTestId('endpoint').textContent).toBe(URL);
    expect(fake.last().subscribes().map((s) => s.topic)).toEqual([...TOPICS]);
    for (const topic of TOPICS) expect((screen.getByTestId(`topic-toggle-${topic}`) as HTMLInputElement).checked).toBe(true);
  });

  it('batches frames into a few renders and updates rows in place', () => {
    const fake = renderApp();
    act(() => fake.last().open());
    act(() => {
      for (let i = 1; i <= 300; i++) fake.last().receive(event('package_update', i, 'e1', { package_id: `p${i % 20}`, status: i > 280 ? 'delivered' : 'in_transit' }));
      fake.last().receive(event('dashboard_metrics', 1));
      fake.last().receive(event('anomaly_detected', 1));
      fake.last().receive(event('map_update', 1));
    });
    // Nothing is rendered until the flush.
    expect(screen.getByTestId('package-table').dataset['count']).toBe('0');
    act(() => vi.advanceTimersByTime(FLUSH_MS));
    const rows = screen.getAllByTestId('package-row');
    expect(rows).toHaveLength(20);
    expect(rows.filter((r) => r.dataset['status'] === 'delivered')).toHaveLength(20);
    expect(screen.getByTestId('metric-total_packages').dataset['value']).toBe('1247');
    expect(screen.getByTestId('metric-recovery_rate').textContent).toContain('94.0%');
    const anomaly = within(screen.getByTestId('anomalies-panel')).getByTestId('anomaly-row');
    expect(anomaly.dataset['severity']).toBe('high');
    expect(anomaly.textContent).toContain('reroute through alternative center');
    expect(screen.getAllByTestId('map-point')).toHaveLength(1);
    expect(screen.getByTestId('message-log').dataset['count']).toBe('200');
  });

  it('shows the reconnect attempt without a limit by default', () => {
    const fake = renderApp({ transport: 'websocket' });
    act(() => fake.last().open());
    act(() => fake.last().serverClose(1001));
    for (let attempt = 1; attempt <= 8; attempt++) {
      expect(screen.getByTestId('connection-state').textContent).toBe(`Reconnecting (attempt ${attempt})…`);
      act(() => vi.runOnlyPendingTimers());
      act(() => fake.last().serverClose(1006));
    }
    expect(screen.getByTestId('connection-state').dataset['state']).toBe('reconnecting');
  });

  it('shows the reconnect attempt, then failure with a retry button', () => {
    const fake = renderApp({ transport: 'websocket', maxReconnectAttempts: 5 });
    act(() => fake.last().open());
    act(() => fake.last().serverClose(1001));
    expect(screen.getByTestId('connection-state').textContent).toBe('Reconnecting (attempt 1/5)…');
    for (let attempt = 2; attempt <= 5; attempt++) {
      act(() => vi.runOnlyPendingTimers());
      act(() => fake.last().serverClose(1006));
      expect(screen.getByTestId('connection-state').textContent).toBe(`Reconnecting (attempt ${attempt}/5)…`);
    }
    act(() => vi.runOnlyPendingTimers());
    act(() => fake.last().serverClose(1006));
    expect(screen.getByTestId('connection-state').dataset['state']).toBe('failed');
    act(() => screen.getByTestId('retry-button').click());
    expect(screen.getByTestId('connection-state').dataset['state']).toBe('connecting');
  });

  it('turns a topic off and on with its toggle', () => {
    const fake = renderApp();
    act(() => fake.last().open());
    act(() => screen.getByTestId('topic-toggle-anomalies').click());
    expect(fake.last().messages().at(-1)).toEqual({ type: 'unsubscribe', data: { subscription_type: 'anomalies' } });
    expect((screen.getByTestId('topic-toggle-anomalies') as HTMLInputElement).checked).toBe(false);
    act(() => screen.getByTestId('topic-toggle-anomalies').click());
    expect(fake.last().messages().at(-1)).toEqual({ type: 'subscribe', data: { subscription_type: 'anomalies' } });
  });

  it('shows error frames without breaking', () => {
    const fake = renderApp();
    act(() => fake.last().open());
    act(() => fake.last().receive({ type: 'error', data: { code: 'slow_consumer', message: 'too slow' }, timestamp: '2024-01-15T10:30:00Z' }));
    act(() => vi.advanceTimersByTime(FLUSH_MS));
    expect(screen.getByTestId('last-error').dataset['code']).toBe('slow_consumer');
  });
});

describe('dashboard gap notice', () => {
  it('shows a notice when the bridge reports lost history, until dismissed', () => {
    const fake = renderApp();
    act(() => fake.last().open());
    act(() => fake.last().receive(subscribed('package_updates', { offset: 3, epoch: 'e1' }, true, [...TOPICS])));
    expect(screen.queryByTestId('gap-notice')).toBeNull();
    act(() =>
      fake.last().receive(subscribed('package_updates', { offset: 0, epoch: 'NEW' }, false, [...TOPICS], 'epoch_changed')),
    );
    const notice = screen.getByTestId('gap-notice');
    expect(notice.dataset['topic']).toBe('package_updates');
    expect(notice.dataset['reason']).toBe('epoch_changed');
    expect(notice.textContent).toContain("package updates: the server's history was reset");
    expect(notice.textContent).toContain('NEW:0');
    act(() => screen.getByTestId('gap-dismiss').click());
    expect(screen.queryByTestId('gap-notice')).toBeNull();
    act(() =>
      fake.last().receive(subscribed('anomalies', { offset: 9, epoch: 'e1' }, false, [...TOPICS], 'history_trimmed')),
    );
    expect(screen.getByTestId('gap-notice').dataset['topic']).toBe('anomalies');
  });
});

describe('dashboard map', () => {
  /** Connected, the seven topics confirmed. */
  function connected() {
    const fake = renderApp();
    act(() => fake.last().open());
    act(() => fake.last().receive(welcome([...TOPICS])));
    return fake;
  }

  function mapUpdate(offset: number, id: string, longitude: number, latitude: number) {
    return event('map_update', offset, 'e1', { ...SAMPLE.map_update, package_id: id, longitude, latitude });
  }

  const map = () => screen.getByTestId('map');
  const viewports = (fake: ReturnType<typeof renderApp>) => fake.last().ofType('viewport').map((m) => m.data.bbox);

  it('draws the state outlines, bundled (no fetch), with the points on top', () => {
    const fake = connected();
    const states = screen.getAllByTestId('map-state');
    expect(states.length).toBeGreaterThanOrEqual(51);
    expect(states.map((s) => s.getAttribute('data-name'))).toContain('Kansas');
    for (const s of states.slice(0, 5)) expect(s.getAttribute('d')).toMatch(/^M/);
    expect(screen.getByTestId('package-map').textContent).toContain('No positions yet');
    act(() => {
      fake.last().receive(mapUpdate(1, 'kc', -94.58, 39.1));
      fake.last().receive(mapUpdate(2, 'hnl', -157.86, 21.31));
    });
    act(() => vi.advanceTimersByTime(FLUSH_MS));
    expect(map().dataset['count']).toBe('2');
    const points = screen.getAllByTestId('map-point');
    expect(points.map((p) => [p.dataset['packageId'], p.dataset['inView']])).toEqual([
      ['kc', 'true'],
      ['hnl', 'false'],
    ]);
    expect(points[0]!.querySelector('title')?.textContent).toContain('kc on v-9');
    expect(screen.getByTestId('map-in-view').dataset['count']).toBe('1');
    expect(screen.getByTestId('map-in-view').textContent).toContain('showing 1 in view of 2 positions');
  });

  it('zooming in with + subscribes to the visible box (debounced); reset goes back to the whole world', () => {
    const fake = connected();
    expect(map().dataset['viewport']).toBe('');
    act(() => screen.getByTestId('map-zoom-in').click());
    act(() => screen.getByTestId('map-zoom-in').click());
    expect(map().dataset['zoom']).toBe('4.000');
    // Nothing sent until the view has been still for the debounce.
    act(() => vi.advanceTimersByTime(VIEWPORT_DEBOUNCE.waitMs - 1));
    expect(viewports(fake)).toEqual([]);
    act(() => vi.advanceTimersByTime(1));
    const sent = viewports(fake);
    expect(sent).toHaveLength(1);
    const box = sent[0]!;
    expect(map().dataset['viewport']).toBe(`${box.west},${box.south},${box.east},${box.north}`);
    // A quarter of the US across, around its middle.
    expect(box.west).toBeGreaterThan(CONTIGUOUS_US.west);
    expect(box.east).toBeLessThan(CONTIGUOUS_US.east);
    expect(box.east - box.west).toBeLessThan((CONTIGUOUS_US.east - CONTIGUOUS_US.west) / 3);
    expect(box.south).toBeLessThan(39.1);
    expect(box.north).toBeGreaterThan(39.1);
    // The bridge confirms: the header says only this area is received.
    expect(screen.getByTestId('map-in-view').textContent).not.toContain('this area only');
    act(() => fake.last().receive({ type: 'viewport', data: { subscription_type: 'map_updates', bbox: box }, timestamp: TS }));
    act(() => vi.advanceTimersByTime(FLUSH_MS));
    expect(map().dataset['confirmedViewport']).toBe(map().dataset['viewport']);
    expect(screen.getByTestId('map-in-view').textContent).toContain('receiving this area only');
    expect(screen.getAllByTestId('log-entry')[0]!.textContent).toContain(`map_updates area: ${box.west}, ${box.south} to ${box.east}, ${box.north}`);

    act(() => screen.getByTestId('map-reset').click());
    act(() => vi.advanceTimersByTime(VIEWPORT_DEBOUNCE.waitMs));
    expect(viewports(fake)).toEqual([box, null]);
    expect(map().dataset['viewport']).toBe('');
    expect((screen.getByTestId('map-zoom-out') as HTMLButtonElement).disabled).toBe(true);
  });

  it('logs a conflated frame and keeps the latest positions', () => {
    const fake = connected();
    act(() => {
      fake.last().receive(mapUpdate(1, 'kc', -94.58, 39.1));
      fake.last().receive({ type: 'conflated', data: { subscription_type: 'map_updates', skipped: 12 }, timestamp: TS });
      fake.last().receive(mapUpdate(14, 'kc', -94.0, 39.0));
    });
    act(() => vi.advanceTimersByTime(FLUSH_MS));
    const log = screen.getAllByTestId('log-entry').map((e) => e.textContent);
    expect(log.some((t) => t?.includes('map_updates: 12 superseded events skipped'))).toBe(true);
    expect(screen.getAllByTestId('map-point')).toHaveLength(1);
    expect(screen.getByTestId('map-point').querySelector('title')?.textContent).toContain('39.0000, -94.0000');
  });

  it('zooms with the wheel, between the limits; zooming out to the widest sends no box', () => {
    const fake = connected();
    const svg = screen.getByTestId('package-map');
    act(() => {
      fireEvent.wheel(svg, { deltaY: -500, deltaMode: 0 });
    });
    const k = Number(map().dataset['zoom']);
    expect(k).toBeGreaterThan(1);
    act(() => vi.advanceTimersByTime(VIEWPORT_DEBOUNCE.waitMs));
    expect(viewports(fake)).toHaveLength(1);
    for (let i = 0; i < 20; i++) act(() => screen.getByTestId('map-zoom-in').click());
    expect(Number(map().dataset['zoom'])).toBe(ZOOM_LIMITS.max);
    expect((screen.getByTestId('map-zoom-in') as HTMLButtonElement).disabled).toBe(true);
    for (let i = 0; i < 20; i++) act(() => screen.getByTestId('map-zoom-out').click());
    expect(Number(map().dataset['zoom'])).toBe(ZOOM_LIMITS.min);
    act(() => vi.advanceTimersByTime(VIEWPORT_DEBOUNCE.maxWaitMs));
    // The burst of clicks reported the settled state only: back to the whole world.
    expect(viewports(fake).at(-1)).toBeNull();
  });
});
