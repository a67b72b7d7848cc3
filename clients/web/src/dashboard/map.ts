/**
 * The package map's geometry, pure: the projection, the zoom limits, what part
 * of the world a zoom transform shows, and the debounced report of that area
 * (the viewport subscription). No DOM measurement: everything works in the
 * map's fixed drawing size (`MAP_SIZE`, its SVG viewBox), so jsdom tests and a
 * real browser compute the same boxes.
 *
 * The projection is Web Mercator fitted to the contiguous US. Mercator is
 * invertible everywhere on screen (Albers USA is not, outside its insets) and
 * maps a longitude/latitude rectangle to a screen rectangle, so the visible
 * area is exactly the box between the inverted corners of the view.
 */
import { geoMercator, type GeoProjection } from 'd3-geo';
import type { BoundingBox } from '../frames';

/** A zoom transform as d3-zoom gives it: screen = k × projected + (x, y). */
export interface ViewTransform {
  k: number;
  x: number;
  y: number;
}

/** The map's drawing size (SVG viewBox units); CSS scales it to the panel. */
export const MAP_SIZE = { width: 640, height: 360 } as const;

/** What the map shows at the widest zoom (scale 1), as the page opens and after reset. */
export const CONTIGUOUS_US: BoundingBox = { west: -125, south: 24.4, east: -66.9, north: 49.4 };

/**
 * Zoom scales: 1 is the contiguous US (the widest; Alaska and Hawaii are a pan
 * away), 64 about 80 km across.
 */
export const ZOOM_LIMITS = { min: 1, max: 64 } as const;

/** The zoom buttons' step. */
export const ZOOM_STEP = 2;

/** Panning stops at these latitudes (Mercator's own world edge is at ±85.05°). */
const WORLD_LAT = 85;

/**
 * How the visible box is reported while the user pans and zooms: once the view has
 * been still for `waitMs`, and at least every `maxWaitMs` during a long gesture.
 */
export const VIEWPORT_DEBOUNCE = { waitMs: 200, maxWaitMs: 600 } as const;

/** Box edges are rounded outward to this many decimals (about 11 m): shorter messages, never a smaller box. */
const BOX_DECIMALS = 4;

/** Mercator fitted (with `padding` units on each side) to `CONTIGUOUS_US` in a `width` × `height` drawing. */
export function usProjection(width: number = MAP_SIZE.width, height: number = MAP_SIZE.height, padding = 8): GeoProjection {
  const { west, south, east, north } = CONTIGUOUS_US;
  return geoMercator().fitExtent(
    [
      [padding, padding],
      [width - padding, height - padding],
    ],
    {
      type: 'MultiPoint',
      coordinates: [
        [west, south],
        [east, north],
      ],
    },
  );
}

/** The world in projected units (longitude ±180, latitude ±85): d3-zoom's translate extent, so a pan never leaves it. */
export function worldExtent(projection: GeoProjection): [[number, number], [number, number]] {
  const [x0, y0] = projection([-180, WORLD_LAT]) ?? [0, 0];
  const [x1, y1] = projection([180, -WORLD_LAT]) ?? [0, 0];
  return [
    [x0, y0],
    [x1, y1],
  ];
}

function clamp(value: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, value));
}

function roundDown(value: number): number {
  const f = 10 ** BOX_DECIMALS;
  return Math.floor(value * f + 1e-9) / f;
}

function roundUp(value: number): number {
  const f = 10 ** BOX_DECIMALS;
  return Math.ceil(value * f - 1e-9) / f;
}

/**
 * The box a `width` × `height` view shows under transform `t`: its corners
 * inverted through `t` and the projection, rounded outward to 4 decimals and
 * clamped to longitude [-180, 180], latitude [-90, 90].
 *
 * `projection` must be an unrotated cylindrical one (as `usProjection`'s
 * Mercator): longitude is read straight from x, unwrapped, because
 * `projection.invert` wraps it into [-180, 180] and would turn a view past the
 * antimeridian into a box on the wrong side of the world.
 */
export function boxOfView(
  projection: GeoProjection,
  t: ViewTransform,
  width: number = MAP_SIZE.width,
  height: number = MAP_SIZE.height,
): BoundingBox {
  const [tx] = projection.translate();
  const degreesPerUnit = 180 / Math.PI / projection.scale();
  const lonAt = (sx: number) => ((sx - t.x) / t.k - tx) * degreesPerUnit;
  const latAt = (sy: number) => projection.invert?.([tx, (sy - t.y) / t.k])?.[1] ?? (sy <= 0 ? 90 : -90);
  return {
    west: clamp(roundDown(lonAt(0)), -180, 180),
    south: clamp(roundDown(latAt(height)), -90, 90),
    east: clamp(roundUp(lonAt(width)), -180, 180),
    north: clamp(roundUp(latAt(0)), -90, 90),
  };
}

/**
 * The viewport to subscribe with under transform `t`: null (no box: every
 * position, wherever it is) at the widest zoom, whatever the pan; the visible
 * box once zoomed in.
 */
export function viewportOf(
  projection: GeoProjection,
  t: ViewTransform,
  width: number = MAP_SIZE.width,
  height: number = MAP_SIZE.height,
): BoundingBox | null {
  return t.k <= ZOOM_LIMITS.min + 1e-6 ? null : boxOfView(projection, t, width, height);
}

/** `[x, y]` on screen of a longitude/latitude under `t` (null if the projection cannot place it). */
export function toScreen(projection: GeoProjection, t: ViewTransform, longitude: number, latitude: number): [number, number] | null {
  const p = projection([longitude, latitude]);
  if (!p || !Number.isFinite(p[0]) || !Number.isFinite(p[1])) return null;
  return [t.x + t.k * p[0], t.y + t.k * p[1]];
}

/** Whether screen point `p` is inside the `width` × `height` view. */
export function onScreen(p: readonly [number, number] | null, width: number = MAP_SIZE.width, height: number = MAP_SIZE.height): boolean {
  return p !== null && p[0] >= 0 && p[0] <= width && p[1] >= 0 && p[1] <= height;
}

/** Same box, or both null. */
export function sameBox(a: BoundingBox | null, b: BoundingBox | null): boolean {
  if (a === null || b === null) return a === b;
  return a.west === b.west && a.south === b.south && a.east === b.east && a.north === b.north;
}

/** `west,south,east,north`, or `''` for none: the map's `data-viewport`. */
export function formatBox(box: BoundingBox | null): string {
  return box === null ? '' : `${box.west},${box.south},${box.east},${box.north}`;
}

export interface Debounced<A extends unknown[]> {
  /** Schedules `fn(...args)` (the latest arguments win). */
  (...args: A): void;
  /** Runs a pending call now. */
  flush(): void;
  /** Drops a pending call. */
  cancel(): void;
}

/**
 * `fn` called with the latest arguments once calls have stopped for `waitMs`,
 * and at the latest `maxWaitMs` after the first call of a burst (a long pan
 * still reports as it goes). At most one timer is pending at a time.
 */
export function debounce<A extends unknown[]>(
  fn: (...args: A) => void,
  timing: { waitMs: number; maxWaitMs: number },
): Debounced<A> {
  let timer: ReturnType<typeof setTimeout> | null = null;
  let first = 0;
  let pending: A | null = null;
  const run = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    const args = pending;
    pending = null;
    if (args) fn(...args);
  };
  const debounced = (...args: A) => {
    const now = Date.now();
    if (pending === null) first = now;
    pending = args;
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(run, Math.max(0, Math.min(timing.waitMs, first + timing.maxWaitMs - now)));
  };
  debounced.flush = run;
  debounced.cancel = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    pending = null;
  };
  return debounced;
}

/**
 * Reports the viewport to `send` (e.g. `setViewport`), debounced with `timing`,
 * and only when it differs from the last one reported; nothing was reported
 * before the first call (the client starts with no box).
 */
export function viewportReporter(
  send: (box: BoundingBox | null) => void,
  timing: { waitMs: number; maxWaitMs: number } = VIEWPORT_DEBOUNCE,
): Debounced<[BoundingBox | null]> {
  let last: BoundingBox | null = null;
  return debounce((box: BoundingBox | null) => {
    if (sameBox(box, last)) return;
    last = box;
    send(box);
  }, timing);
}
