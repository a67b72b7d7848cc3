// @vitest-environment jsdom
import { act, cleanup, render, screen, within } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { App } from '../src/dashboard/App';
import { FLUSH_MS } from '../src/dashboard/feed';
import { TOPICS } from '../src/frames';
import { RealtimeProvider } from '../src/react';
import { ClientRegistry } from '../src/registry';
import { event, fakeSockets, subscribed, welcome } from './fakes';

const URL = 'ws://bridge.test/ws/connect';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

function renderApp() {
  const fake = fakeSockets();
  const registry = new ClientRegistry({
    clientOptions: { webSocketFactory: fake.factory, random: () => 0.5 },
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

  it('shows the reconnect attempt, then failure with a retry button', () => {
    const fake = renderApp();
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
