import { describe, expect, it } from 'vitest';
import { decodeMessage, type ServerFrame } from '../src/frames';
import { LIMITS, applyFrames, initialState, summarize } from '../src/dashboard/store';
import { event } from './fakes';

/** Frames as the client would deliver them (through the decoder). */
function frames(...items: unknown[]): ServerFrame[] {
  return decodeMessage(JSON.stringify(items)).frames;
}

describe('dashboard store', () => {
  it('updates a package row in place, new packages on top', () => {
    let s = initialState();
    s = applyFrames(s, frames(event('package_update', 1, 'e', { package_id: 'a' }), event('package_update', 2, 'e', { package_id: 'b' })), 0);
    expect(s.packageOrder).toEqual(['b', 'a']);
    const rowB = s.packages['b'];
    s = applyFrames(s, frames(event('package_update', 3, 'e', { package_id: 'a', status: 'delivered', location: 'Home' })), 100);
    expect(s.packageOrder).toEqual(['b', 'a']);
    expect(s.packages['a']).toMatchObject({ status: 'delivered', location: 'Home', updates: 2 });
    // Untouched rows keep their identity, so memoized rows do not re-render.
    expect(s.packages['b']).toBe(rowB);
  });

  it('keeps at most LIMITS.packages rows, evicting the least recently updated', () => {
    let s = initialState();
    s = applyFrames(s, frames(event('package_update', 1, 'e', { package_id: 'old-but-busy' })), 0);
    for (let i = 0; i < LIMITS.packages + 50; i++) {
      const batch = [event('package_update', i + 2, 'e', { package_id: `p${i}` })];
      if (i % 10 === 0) batch.push(event('package_update', 100_000 + i, 'e', { package_id: 'old-but-busy' }));
      s = applyFrames(s, frames(...batch), i);
    }
    expect(s.packageOrder).toHaveLength(LIMITS.packages);
    expect(Object.keys(s.packages)).toHaveLength(LIMITS.packages);
    expect(s.packages['old-but-busy']).toBeDefined();
    expect(s.packages['p0']).toBeUndefined();
    expect(s.packageOrder[0]).toBe(`p${LIMITS.packages + 49}`);
  });

  it('bounds the log (newest first), the anomalies and the map', () => {
    let s = initialState();
    const batch = Array.from({ length: 400 }, (_, i) => event('anomaly_detected', i + 1, 'e', { package_id: `p${i}` }));
    const moves = Array.from({ length: 400 }, (_, i) => event('map_update', i + 1, 'e', { package_id: `p${i}` }));
    s = applyFrames(s, frames(...batch, ...moves, { type: 'pong', data: {}, timestamp: 't' }), 0);
    expect(s.log).toHaveLength(LIMITS.log);
    expect(s.log[0]?.type).toBe('map_update');
    expect(s.log[0]?.offset).toBe(400);
    expect(s.logCount).toBe(800);
    expect(s.anomalies).toHaveLength(LIMITS.anomalies);
    expect(s.anomalies[0]?.data.package_id).toBe('p399');
    expect(Object.keys(s.points)).toHaveLength(LIMITS.mapPoints);
    expect(s.points['p399']).toBeDefined();
    expect(s.points['p0']).toBeUndefined();
    expect(s.eventCount).toBe(800);
  });

  it('keeps the latest metrics, health per component, and the last error', () => {
    let s = initialState();
    s = applyFrames(
      s,
      frames(
        event('dashboard_metrics', 1),
        event('dashboard_metrics', 2, 'e1', { total_packages: 9 }),
        event('system_health', 1),
        event('system_health', 2, 'e1', { component: 'core', status: 'down' }),
        { type: 'error', data: { code: 'rate_limited', message: 'slow down' }, timestamp: '2024-01-15T10:30:00Z' },
      ),
      0,
    );
    expect(s.metrics?.total_packages).toBe(9);
    expect(Object.keys(s.health).sort()).toEqual(['bridge', 'core']);
    expect(s.lastError).toMatchObject({ code: 'rate_limited' });
    expect(s.errorCount).toBe(1);
  });

  it('counts every error frame of one batch', () => {
    const error = (code: string) => ({ type: 'error' as const, data: { code, message: code }, timestamp: '2024-01-15T10:30:00Z' });
    const s = applyFrames(initialState(), frames(error('a'), error('b'), error('c')), 0);
    expect(s.errorCount).toBe(3);
    expect(s.lastError).toMatchObject({ code: 'c' });
  });

  it('computes the event rate over the last seconds', () => {
    let s = initialState();
    for (let t = 0; t <= 4_000; t += 250) s = applyFrames(s, frames(...Array.from({ length: 25 }, (_, i) => event('package_update', t + i))), t);
    expect(s.eventsPerSecond).toBeGreaterThan(90);
    expect(s.eventsPerSecond).toBeLessThan(110);
    s = applyFrames(s, [], 20_000);
    expect(s.eventsPerSecond).toBe(0);
  });

  it('summarizes every frame type in one line', () => {
    for (const f of frames(
      event('package_update', 1),
      event('anomaly_detected', 1),
      event('dashboard_metrics', 1),
      event('notification', 1),
      event('map_update', 1),
      event('agent_activity', 1),
      event('system_health', 1),
    )) {
      expect(summarize(f)).not.toBe('');
    }
  });
});
