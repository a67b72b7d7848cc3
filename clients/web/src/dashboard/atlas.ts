/**
 * The map's background: US state outlines from `us-atlas` (the Census Bureau's
 * 1:10,000,000 cartographic boundaries as TopoJSON), bundled by Vite into the
 * page, so the map needs no network at run time. Drawn once, as SVG path
 * strings in the projection's units; zooming only transforms their group.
 */
import { geoPath, type GeoProjection } from 'd3-geo';
import { feature, mesh } from 'topojson-client';
import type { GeometryCollection, Topology } from 'topojson-specification';
import statesTopology from 'us-atlas/states-10m.json';

export interface StateShape {
  /** FIPS code, e.g. `20`. */
  id: string;
  name: string;
  /** SVG path data. */
  d: string;
}

export interface Atlas {
  /** The 50 states, DC and the territories the atlas has. */
  states: StateShape[];
  /** The nation's outline (coasts and land borders), one path. */
  nation: string;
}

const TOPOLOGY = statesTopology as unknown as Topology<{
  states: GeometryCollection<{ name: string }>;
  nation: GeometryCollection;
}>;

/**
 * The atlas drawn with `projection`. Two decimals: outlines stay within a
 * pixel at the deepest zoom (the data's own resolution is coarser).
 */
export function drawAtlas(projection: GeoProjection): Atlas {
  const path = geoPath(projection).digits(2);
  const states = feature(TOPOLOGY, TOPOLOGY.objects.states).features.map((f) => ({
    id: String(f.id ?? ''),
    name: f.properties?.name ?? '',
    d: path(f) ?? '',
  }));
  const nation = path(mesh(TOPOLOGY, TOPOLOGY.objects.nation)) ?? '';
  return { states: states.filter((s) => s.d !== ''), nation };
}
