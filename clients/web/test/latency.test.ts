import { describe, expect, it } from 'vitest';
import { decodeMessage, type ServerFrame } from '../src/frames';
import {
  LATENCY_WINDOW,
  latencySample,
  latencyStats,
  parseTimestampMs,
  quantile,
  rollWindow,
  type LatencySample,
} from '../src/dashboard/latency';
import { applyFrames, initialState } from '../src/dashboard/store';
import { event, welcome } from './fakes';

const T0 = Date.parse('2024-01-15T10:30:00.000Z');

/** One frame as the client would deliver it (through the decoder). */
function frame(item: unknown): ServerFrame {
  const [decoded] = decodeMessage(JSON.stringify(item)).frames;
  if (!decoded) throw new Error('not a frame');
  return decoded;
}

function samples(...ms: number[]): LatencySample[] {
  return ms.map((m, i) => ({ at: T0 + i, ms: m }));
}

describe('parseTimestampMs', () => {
  it('reads RFC 3339 with any number of fraction digits and an offset', () => {
    expect(parseTimestampMs('2024-01-15T10:30:00Z')).toBe(T0);
    expect(parseTimestampMs('2024-01-15T10:30:00.25Z')).toBe(T0 + 250);
    expect(parseTimestampMs('2024-01-15T10:30:00.123456Z')).toBe(T0 + 123);
    expect(parseTimestampMs('2024-01-15T11:30:00.5+01:00')).toBe(T0 + 500);
    expect(parseTimestampMs('2024-01-15t10:30:00z')).toBe(T0);
  });

  it('is NaN for anything else', () => {
    for (const bad of ['', 'yesterday', '2024-01-15', '2024-01-15 10:30:00Z', '1705314600']) {
      expect(parseTimestampMs(bad)).toBeNaN();
    }
  });
});

describe('latencySample', () => {
  it('is the time from published_at to arrival', () => {
    const published = frame({ ...event('package_update', 1), published_at: '2024-01-15T10:30:00.100Z' });
    expect(latencySample(published, T0 + 350)).toEqual({ at: T0 + 350, ms: 250 });
  });

  it('skips frames without a readable published_at, and control frames', () => {
    expect(latencySample(frame(event('package_update', 1)), T0)).toBeNull();
    expect(latencySample(frame({ ...event('anomaly_detected', 1), published_at: 'soon' }), T0)).toBeNull();
    expect(latencySample(frame({ ...event('anomaly_detected', 1), published_at: 1705314600 }), T0)).toBeNull();
    expect(latencySample(frame({ ...welcome(), published_at: '2024-01-15T10:30:00Z' }), T0)).toBeNull();
  });

  it('counts a frame from ahead of this clock as 0', () => {
    const ahead = frame({ ...event('map_update', 1), published_at: '2024-01-15T10:30:02Z' });
    expect(latencySample(ahead, T0)).toEqual({ at: T0, ms: 0 });
  });
});

describe('the rolling window', () => {
  it('keeps the newest samples, at most LATENCY_WINDOW.samples', () => {
    const many = samples(...Array.from({ length: LATENCY_WINDOW.samples + 20 }, (_, i) => i));
    const window = rollWindow([], many, T0 + 100);
    expect(window).toHaveLength(LATENCY_WINDOW.samples);
    expect(window[0]!.ms).toBe(20);
  });

  it('drops samples older than LATENCY_WINDOW.ms', () => {
    const old = [{ at: T0, ms: 900 }];
    const fresh = [{ at: T0 + LATENCY_WINDOW.ms, ms: 10 }];
    expect(rollWindow(old, fresh, T0 + LATENCY_WINDOW.ms)).toEqual(fresh);
    expect(rollWindow(old, [], T0 + LATENCY_WINDOW.ms)).toEqual([]);
  });

  it('is the same array when nothing changed', () => {
    const window = samples(5, 6);
    expect(rollWindow(window, [], T0 + 10)).toBe(window);
    const empty: LatencySample[] = [];
    expect(rollWindow(empty, [], T0)).toBe(empty);
  });
});

describe('quantiles', () => {
  it('takes the nearest rank', () => {
    const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(quantile(sorted, 0.5)).toBe(50);
    expect(quantile(sorted, 0.99)).toBe(99);
    expect(quantile([7], 0.99)).toBe(7);
    expect(quantile([], 0.5)).toBeNull();
  });

  it('gives p50 and p99 of the window in any order', () => {
    expect(latencyStats(samples(30, 10, 20, 1000))).toEqual({ p50: 20, p99: 1000, count: 4 });
    expect(latencyStats([])).toEqual({ p50: null, p99: null, count: 0 });
  });
});

describe('the store', () => {
  it('keeps the window and its figures across batches', () => {
    let s = initialState();
    expect(s.latencyStats.count).toBe(0);
    s = applyFrames(s, [], T0, samples(100, 200));
    expect(s.latencyStats).toEqual({ p50: 100, p99: 200, count: 2 });
    const stats = s.latencyStats;
    s = applyFrames(s, [], T0 + 1_000);
    expect(s.latencyStats).toBe(stats);
    s = applyFrames(s, [], T0 + LATENCY_WINDOW.ms + 10);
    expect(s.latencyStats).toEqual({ p50: null, p99: null, count: 0 });
  });
});
