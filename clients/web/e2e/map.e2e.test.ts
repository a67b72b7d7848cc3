/**
 * The dashboard's map in real Chromium against the REAL system (`clearpath serve`,
 * map updates published over gRPC by the CLI): the state outlines are drawn from
 * the bundle with no request beyond the bridge, and zooming or panning the map
 * moves the map_updates subscription's box in place, so only the packages inside
 * it reach the page.
 *
 * Run with `npm -w clients/web run e2e` (builds first), or after
 * `npm -w clients/web run build`:
 * `npx -w clients/web vitest run --config vitest.e2e.config.ts e2e/map.e2e.test.ts`.
 * Every wait is bounded; every process is stopped after the test.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isolatedContext, launchChromium } from './chromium';
import { ARTIFACTS, CLEARPATH_BIN, DIST_DIR, clearpathAvailable, publishMany, startClearpath, stopAll, type EventFrame } from './clearpath';

const WAIT = { timeout: 15_000 };

if (!clearpathAvailable()) throw new Error(`no clearpath at ${CLEARPATH_BIN}: run \`make setup\` (or set CLEARPATH_BIN)`);
if (!existsSync(join(DIST_DIR, 'index.html'))) throw new Error(`no dashboard build in ${DIST_DIR}: run \`npm -w clients/web run build\``);

let browser: Browser;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
  await stopAll();
});

interface Box {
  west: number;
  south: number;
  east: number;
  north: number;
}

interface Opened {
  page: Page;
  /** Every URL the page requested; console errors; the client's WebSocket messages (text). */
  seen: { requests: string[]; console: string[]; sent: string[] };
}

/** A fresh page on `base + path`, allowed to reach nothing but `base`, recording what it asks for and sends. */
async function open(base: string, path: string): Promise<Opened> {
  const context = await isolatedContext(browser, base);
  contexts.push(context);
  const page = await context.newPage();
  const seen = { requests: [] as string[], console: [] as string[], sent: [] as string[] };
  page.on('request', (r) => seen.requests.push(r.url()));
  page.on('console', (m) => {
    if (m.type() === 'error') seen.console.push(m.text());
  });
  page.on('websocket', (ws) => ws.on('framesent', (f) => seen.sent.push(String(f.payload))));
  await page.goto(base + path, WAIT);
  return { page, seen };
}

/** A map_update at (longitude, latitude). */
function mapUpdate(packageId: string, longitude: number, latitude: number): EventFrame {
  return {
    type: 'map_update',
    data: {
      package_id: packageId,
      vehicle_id: `van-${packageId}`,
      latitude,
      longitude,
      heading: 90,
      speed_kmh: 40,
      route_id: 'r-1',
      next_stop: 'Depot',
      status: 'in_transit',
    },
  };
}

function parseBox(text: string | null): Box | null {
  if (!text) return null;
  const [west, south, east, north] = text.split(',').map(Number) as [number, number, number, number];
  return { west, south, east, north };
}

function inside(box: Box, [lon, lat]: [number, number]): boolean {
  return lon >= box.west && lon <= box.east && lat >= box.south && lat <= box.north;
}

/** Waits until the map's box (its `data-viewport`) is the one the bridge confirmed, and is not the whole world; returns it. */
async function settledBox(page: Page, previous: string | null): Promise<Box> {
  const handle = await page.waitForFunction(
    (prev) => {
      const m = document.querySelector<HTMLElement>('[data-testid="map"]');
      const box = m?.dataset['viewport'] ?? '';
      return box !== '' && box !== prev && box === m?.dataset['confirmedViewport'] ? box : null;
    },
    previous,
    WAIT,
  );
  return parseBox((await handle.jsonValue()) as string)!;
}

async function pointIds(page: Page): Promise<string[]> {
  return page.getByTestId('map-point').evaluateAll((els) => els.map((e) => e.getAttribute('data-package-id') ?? ''));
}

function point(page: Page, id: string) {
  return page.locator(`[data-testid="map-point"][data-package-id="${id}"]`);
}

const KANSAS_CITY: [number, number] = [-94.58, 39.1];
const SEATTLE: [number, number] = [-122.33, 47.61];
const MIAMI: [number, number] = [-80.19, 25.76];

describe('the map against clearpath serve', () => {
  it('draws the states offline; zooming and panning move the map_updates box in place', async () => {
    const serve = await startClearpath('serve-map', ['serve', '--grpc-port', '0', '--http-port', '0'], { core: true, bridge: true });
    const core = serve.core!;
    const { page, seen } = await open(serve.url!, '/?topics=map_updates');
    await page.locator('[data-testid="connection-state"][data-state="connected"]').waitFor(WAIT);
    await page.locator('[data-testid="topic-toggle-map_updates"][data-confirmed="true"]').waitFor(WAIT);

    // The outlines: a path per state, painted (a real size on screen), from the bundle.
    const states = page.getByTestId('map-state');
    expect(await states.count()).toBeGreaterThanOrEqual(51);
    const kansas = await page.locator('[data-testid="map-state"][data-name="Kansas"]').boundingBox();
    expect(kansas?.width).toBeGreaterThan(20);
    expect(kansas?.height).toBeGreaterThan(10);

    // At the widest zoom the map asks for no box: a package anywhere arrives.
    await publishMany(core, [mapUpdate('wide-sea', ...SEATTLE), mapUpdate('wide-kc', ...KANSAS_CITY)]);
    await point(page, 'wide-kc').waitFor({ ...WAIT, state: 'attached' });
    expect(await pointIds(page)).toEqual(expect.arrayContaining(['wide-sea', 'wide-kc']));
    expect(seen.sent.filter((m) => m.includes('"viewport"'))).toEqual([]);
    await page.getByTestId('map').screenshot({ path: join(ARTIFACTS, 'map.png') });

    // Zoom in twice with + (about the middle of the US): the bridge confirms the visible box.
    await page.getByTestId('map-zoom-in').click();
    await page.getByTestId('map-zoom-in').click();
    const box = await settledBox(page, null);
    expect(inside(box, KANSAS_CITY)).toBe(true);
    expect(inside(box, SEATTLE)).toBe(false);
    expect(inside(box, MIAMI)).toBe(false);
    const moves = seen.sent.map((m) => JSON.parse(m) as { type: string; data: { bbox?: Box | null } }).filter((m) => m.type === 'viewport');
    expect(moves.at(-1)?.data.bbox).toEqual(box);
    // Debounced: two clicks, one message (or two if the debounce fired between them, never more).
    expect(moves.length).toBeLessThanOrEqual(2);

    // Outside, inside, outside, inside, in one Publish: order holds on the topic, so when the
    // last inside one is on the page, the outside ones would have been too.
    const centre: [number, number] = [(box.west + box.east) / 2, (box.south + box.north) / 2];
    await publishMany(core, [
      mapUpdate('out-sea', ...SEATTLE),
      mapUpdate('in-kc', ...KANSAS_CITY),
      mapUpdate('out-mia', ...MIAMI),
      mapUpdate('in-centre', ...centre),
    ]);
    await point(page, 'in-centre').waitFor({ ...WAIT, state: 'attached' });
    await point(page, 'in-kc').waitFor({ ...WAIT, state: 'attached' });
    let ids = await pointIds(page);
    expect(ids).not.toContain('out-sea');
    expect(ids).not.toContain('out-mia');
    expect(await point(page, 'in-centre').getAttribute('data-in-view')).toBe('true');
    expect(await point(page, 'wide-sea').getAttribute('data-in-view')).toBe('false');
    await page.getByTestId('map').screenshot({ path: join(ARTIFACTS, 'map-zoomed.png') });

    // Drag the map to the left: the box moves east, in place (no resubscribe).
    const svg = (await page.getByTestId('package-map').boundingBox())!;
    const y = svg.y + svg.height / 2;
    await page.mouse.move(svg.x + svg.width * 0.75, y);
    await page.mouse.down();
    for (let i = 1; i <= 10; i++) await page.mouse.move(svg.x + svg.width * (0.75 - 0.04 * i), y);
    await page.mouse.up();
    const east = await settledBox(page, `${box.west},${box.south},${box.east},${box.north}`);
    expect(east.west).toBeGreaterThan(box.west);
    expect(east.east).toBeGreaterThan(box.east);
    const subscribes = seen.sent.filter((m) => m.includes('"subscribe"'));
    const newOnly: [number, number] = [(box.east + east.east) / 2, (east.south + east.north) / 2];
    expect(inside(east, newOnly) && !inside(box, newOnly)).toBe(true);
    const leftBehind: [number, number] = [(box.west + east.west) / 2, (east.south + east.north) / 2];
    expect(inside(east, leftBehind)).toBe(false);
    await publishMany(core, [mapUpdate('out-behind', ...leftBehind), mapUpdate('in-east', ...newOnly)]);
    await point(page, 'in-east').waitFor({ ...WAIT, state: 'attached' });
    expect(await pointIds(page)).not.toContain('out-behind');
    expect(seen.sent.filter((m) => m.includes('"subscribe"'))).toEqual(subscribes);

    // Reset: the whole world again, confirmed; a far package arrives again.
    await page.getByTestId('map-reset').click();
    await page.locator('[data-testid="map"][data-viewport=""][data-confirmed-viewport=""]').waitFor(WAIT);
    await publishMany(core, [mapUpdate('wide-mia', ...MIAMI)]);
    await point(page, 'wide-mia').waitFor({ ...WAIT, state: 'attached' });
    ids = await pointIds(page);
    expect(ids).not.toContain('out-mia');

    // Nothing but the bridge was asked for, and nothing went wrong.
    const origin = new URL(serve.url!).origin;
    expect(seen.requests.filter((u) => !u.startsWith(origin) && !u.startsWith(origin.replace(/^http/, 'ws')))).toEqual([]);
    expect(seen.console).toEqual([]);
    expect(await page.getByTestId('last-error').count()).toBe(0);
  });
});
