/** Projection for the package map: equirectangular, fitted to the points shown. */

export interface Bounds {
  minLat: number;
  maxLat: number;
  minLon: number;
  maxLon: number;
}

export interface Viewport extends Bounds {
  width: number;
  height: number;
}

const MIN_SPAN_DEG = 2;

/**
 * The area to draw: the points' bounding box with a margin, at least
 * MIN_SPAN_DEG wide, widened to the drawing's aspect ratio so that the map is
 * not stretched (longitudes shrink by cos(latitude)).
 */
export function fitViewport(points: readonly { latitude: number; longitude: number }[], width: number, height: number): Viewport {
  if (points.length === 0) return { minLat: 24, maxLat: 50, minLon: -125, maxLon: -66, width, height };
  let minLat = Infinity;
  let maxLat = -Infinity;
  let minLon = Infinity;
  let maxLon = -Infinity;
  for (const p of points) {
    minLat = Math.min(minLat, p.latitude);
    maxLat = Math.max(maxLat, p.latitude);
    minLon = Math.min(minLon, p.longitude);
    maxLon = Math.max(maxLon, p.longitude);
  }
  const midLat = (minLat + maxLat) / 2;
  const midLon = (minLon + maxLon) / 2;
  const k = Math.max(0.2, Math.cos((midLat * Math.PI) / 180));
  let latSpan = Math.max(MIN_SPAN_DEG, (maxLat - minLat) * 1.2);
  let lonSpan = Math.max(MIN_SPAN_DEG, (maxLon - minLon) * 1.2);
  // Match the aspect ratio: lonSpan * k / latSpan == width / height.
  const aspect = width / height;
  if ((lonSpan * k) / latSpan < aspect) lonSpan = (latSpan * aspect) / k;
  else latSpan = (lonSpan * k) / aspect;
  return {
    minLat: Math.max(-90, midLat - latSpan / 2),
    maxLat: Math.min(90, midLat + latSpan / 2),
    minLon: midLon - lonSpan / 2,
    maxLon: midLon + lonSpan / 2,
    width,
    height,
  };
}

export function project(v: Viewport, latitude: number, longitude: number): [number, number] {
  const x = ((longitude - v.minLon) / (v.maxLon - v.minLon)) * v.width;
  const y = ((v.maxLat - latitude) / (v.maxLat - v.minLat)) * v.height;
  return [x, y];
}

/** Round grid steps (degrees) giving about `target` lines across `span`. */
export function gridStep(span: number, target = 6): number {
  const raw = span / target;
  const steps = [0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 45, 90];
  return steps.find((s) => s >= raw) ?? 90;
}

export function gridLines(min: number, max: number, step: number): number[] {
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-9; v += step) out.push(Number(v.toFixed(4)));
  return out;
}
