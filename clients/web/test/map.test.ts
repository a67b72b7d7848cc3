import { geoPath } from 'd3-geo';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { drawAtlas } from '../src/dashboard/atlas';
import {
  CONTIGUOUS_US,
  MAP_SIZE,
  VIEWPORT_DEBOUNCE,
  ZOOM_LIMITS,
  ZOOM_STEP,
  boxOfView,
  debounce,
  onScreen,
  sameBox,
  toScreen,
  usProjection,
  viewportOf,
  viewportReporter,
  worldExtent,
  type ViewTransform,
} from '../src/dashboard/map';
import type { BoundingBox } from '../src/frames';

const P = usProjection();
const { width: W, height: H } = MAP_SIZE;
const IDENTITY: ViewTransform = { k: 1, x: 0, y: 0 };

/** What d3-zoom's scaleBy does: scale by `f` about screen point `c` (default: the view's centre). */
function zoomAbout(t: ViewTransform, f: number, c: [number, number] = [W / 2, H / 2]): ViewTransform {
  return { k: t.k * f, x: c[0] - (c[0] - t.x) * f, y: c[1] - (c[1] - t.y) * f };
}

function contains(outer: BoundingBox, inner: BoundingBox): boolean {
  return outer.west <= inner.west && outer.east >= inner.east && outer.south <= inner.south && outer.north >= inner.north;
}

const KANSAS_CITY: [number, number] = [-94.58, 39.1];
const HONOLULU: [number, number] = [-157.86, 21.31];

describe('map projection and view box', () => {
  it('fits the contiguous US in the drawing', () => {
    for (const lon of [CONTIGUOUS_US.west, CONTIGUOUS_US.east]) {
      for (const lat of [CONTIGUOUS_US.south, CONTIGUOUS_US.north]) {
        expect(onScreen(toScreen(P, IDENTITY, lon, lat))).toBe(true);
      }
    }
    expect(onScreen(toScreen(P, IDENTITY, ...KANSAS_CITY))).toBe(true);
    expect(onScreen(toScreen(P, IDENTITY, ...HONOLULU))).toBe(false);
  });

  it('the initial view box contains the US, and asks for no box (the whole world)', () => {
    const box = boxOfView(P, IDENTITY);
    expect(contains(box, CONTIGUOUS_US)).toBe(true);
    // Not much more than the US either: a few degrees of margin.
    expect(box.west).toBeGreaterThan(-130);
    expect(box.east).toBeLessThan(-60);
    expect(viewportOf(P, IDENTITY)).toBeNull();
    // Panned at the widest zoom: still everything.
    expect(viewportOf(P, { k: 1, x: 250, y: 40 })).toBeNull();
  });

  it('zooming in shrinks the box about the centre; zoomed in, that box is the viewport', () => {
    const wide = boxOfView(P, IDENTITY);
    const t2 = zoomAbout(IDENTITY, 2);
    const box = viewportOf(P, t2);
    expect(box).not.toBeNull();
    expect(contains(wide, box!)).toBe(true);
    expect(box!.east - box!.west).toBeCloseTo((wide.east - wide.west) / 2, 2);
    expect(box!.north - box!.south).toBeLessThan((wide.north - wide.south) * 0.6);
    const t8 = zoomAbout(t2, 4);
    expect(contains(box!, boxOfView(P, t8))).toBe(true);
    // The centre stays on screen all the way in.
    expect(onScreen(toScreen(P, t8, ...KANSAS_CITY))).toBe(true);
    expect(onScreen(toScreen(P, t8, -122.33, 47.61))).toBe(false); // Seattle
  });

  it('panning east moves the box east by the same longitude at both edges', () => {
    const t = zoomAbout(IDENTITY, 4);
    const before = boxOfView(P, t);
    // Dragging the map 100 units left shows what is east of the view.
    const after = boxOfView(P, { ...t, x: t.x - 100 });
    expect(after.west).toBeGreaterThan(before.west);
    expect(after.east - before.east).toBeCloseTo(after.west - before.west, 3);
    expect(after.north).toBeCloseTo(before.north, 3);
    // Dragging down shows what is north.
    const north = boxOfView(P, { ...t, y: t.y + 100 });
    expect(north.north).toBeGreaterThan(before.north);
    expect(north.south).toBeGreaterThan(before.south);
  });

  it('rounds outward to 4 decimals, so the box never misses an edge', () => {
    const t = zoomAbout(IDENTITY, 3.3, [101, 77]);
    const box = boxOfView(P, t);
    const [west, north] = P.invert!([(0 - t.x) / t.k, (0 - t.y) / t.k])!;
    const [east, south] = P.invert!([(W - t.x) / t.k, (H - t.y) / t.k])!;
    expect(box.west).toBeLessThanOrEqual(west);
    expect(box.south).toBeLessThanOrEqual(south);
    expect(box.east).toBeGreaterThanOrEqual(east);
    expect(box.north).toBeGreaterThanOrEqual(north);
    for (const v of Object.values(box)) expect(Math.abs(v * 10_000 - Math.round(v * 10_000))).toBeLessThan(1e-6);
    expect(box.east - east).toBeLessThan(1e-4 + 1e-9);
  });

  it('clamps to longitude [-180, 180] and latitude [-90, 90] beyond the world', () => {
    const far = boxOfView(P, { k: 1, x: 50_000, y: 50_000 });
    const other = boxOfView(P, { k: 1, x: -50_000, y: -50_000 });
    for (const b of [far, other]) {
      expect(b.west).toBeGreaterThanOrEqual(-180);
      expect(b.east).toBeLessThanOrEqual(180);
      expect(b.south).toBeGreaterThanOrEqual(-90);
      expect(b.north).toBeLessThanOrEqual(90);
      expect(b.west).toBeLessThanOrEqual(b.east);
      expect(b.south).toBeLessThanOrEqual(b.north);
    }
    expect(far.west).toBe(-180);
    expect(other.east).toBe(180);
  });

  it('the pan limit is the world: ±180° of longitude, ±85° of latitude', () => {
    const [[x0, y0], [x1, y1]] = worldExtent(P);
    expect(P.invert!([x0, y0])![0]).toBeCloseTo(-180, 6);
    expect(P.invert!([x0, y0])![1]).toBeCloseTo(85, 6);
    expect(P.invert!([x1, y1])![0]).toBeCloseTo(180, 6);
    // The documented limits (clients/web/README.md, "The map").
    expect(ZOOM_LIMITS).toEqual({ min: 1, max: 64 });
    expect(ZOOM_STEP).toBe(2);
    expect(VIEWPORT_DEBOUNCE).toEqual({ waitMs: 200, maxWaitMs: 600 });
    expect(MAP_SIZE).toEqual({ width: 640, height: 360 });
  });

  it('sameBox compares by value', () => {
    const a = { west: 1, south: 2, east: 3, north: 4 };
    expect(sameBox(a, { ...a })).toBe(true);
    expect(sameBox(a, { ...a, north: 5 })).toBe(false);
    expect(sameBox(null, null)).toBe(true);
    expect(sameBox(a, null)).toBe(false);
  });
});

describe('the atlas', () => {
  it('has every state, drawn inside the view where it belongs', () => {
    const atlas = drawAtlas(P);
    expect(atlas.states.length).toBeGreaterThanOrEqual(51);
    const kansas = atlas.states.find((s) => s.name === 'Kansas');
    expect(kansas?.d).toMatch(/^M/);
    expect(atlas.nation).toMatch(/^M/);
    // Kansas's outline surrounds Kansas City's neighbourhood in projected units.
    const bounds = geoPath(P).bounds({ type: 'Feature', properties: {}, geometry: { type: 'Point', coordinates: [-98.0, 38.5] } });
    const [x, y] = bounds[0];
    const nums = (kansas?.d ?? '').match(/-?\d+(\.\d+)?/g)!.map(Number);
    const xs = nums.filter((_, i) => i % 2 === 0);
    const ys = nums.filter((_, i) => i % 2 === 1);
    expect(Math.min(...xs)).toBeLessThan(x);
    expect(Math.max(...xs)).toBeGreaterThan(x);
    expect(Math.min(...ys)).toBeLessThan(y);
    expect(Math.max(...ys)).toBeGreaterThan(y);
  });
});

describe('debounce and the viewport reporter', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('calls once with the latest arguments after the calls stop', () => {
    const fn = vi.fn();
    const d = debounce(fn, { waitMs: 200, maxWaitMs: 1_000 });
    d(1);
    vi.advanceTimersByTime(150);
    d(2);
    vi.advanceTimersByTime(150);
    expect(fn).not.toHaveBeenCalled();
    vi.advanceTimersByTime(50);
    expect(fn.mock.calls).toEqual([[2]]);
  });

  it('still calls every maxWaitMs during a long burst', () => {
    const fn = vi.fn();
    const d = debounce(fn, { waitMs: 200, maxWaitMs: 600 });
    for (let i = 0; i < 20; i++) {
      d(i);
      vi.advanceTimersByTime(50);
    }
    // 1,000 ms of calls every 50 ms: reported at 600 ms, then once quiet.
    expect(fn.mock.calls).toEqual([[11]]);
    vi.advanceTimersByTime(200);
    expect(fn.mock.calls).toEqual([[11], [19]]);
  });

  it('flush runs a pending call now; cancel drops it', () => {
    const fn = vi.fn();
    const d = debounce(fn, { waitMs: 200, maxWaitMs: 600 });
    d('a');
    d.flush();
    expect(fn.mock.calls).toEqual([['a']]);
    d('b');
    d.cancel();
    vi.advanceTimersByTime(1_000);
    expect(fn.mock.calls).toEqual([['a']]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('reports a box once it settles, skips repeats, and starts from no box', () => {
    const send = vi.fn();
    const report = viewportReporter(send);
    report(null);
    vi.advanceTimersByTime(VIEWPORT_DEBOUNCE.waitMs);
    expect(send).not.toHaveBeenCalled();
    const a = { west: -100, south: 30, east: -90, north: 40 };
    report(a);
    report({ ...a, west: -101 });
    report(a);
    vi.advanceTimersByTime(VIEWPORT_DEBOUNCE.waitMs - 1);
    expect(send).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(send.mock.calls).toEqual([[a]]);
    report({ ...a });
    vi.advanceTimersByTime(VIEWPORT_DEBOUNCE.waitMs);
    expect(send).toHaveBeenCalledTimes(1);
    report(null);
    vi.advanceTimersByTime(VIEWPORT_DEBOUNCE.waitMs);
    expect(send.mock.calls).toEqual([[a], [null]]);
  });
});
