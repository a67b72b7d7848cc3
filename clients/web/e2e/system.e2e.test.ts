/**
 * The built dashboard in real Chromium against the REAL system: `clearpath serve`
 * (core over gRPC + bridge over WebSocket, serving clients/web/dist at `/`), with
 * events published over gRPC by the CLI (`clearpath publish`).
 *
 * Run with `npm -w clients/web run e2e` (builds first). `CLEARPATH_BIN` overrides
 * `<repo>/.venv/bin/clearpath`, `CHROMIUM_PATH` overrides `/usr/bin/chromium`.
 * Every wait is bounded; every process is stopped (SIGTERM, then SIGKILL) after its test.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isolatedContext, launchChromium } from './chromium';
import {
  ARTIFACTS,
  CLEARPATH_BIN,
  DIST_DIR,
  LinePublisher,
  clearpathAvailable,
  freePort,
  packageUpdate,
  publishMany,
  publishOne,
  startClearpath,
  stopAll,
  type Service,
} from './clearpath';

/** The issue's bound from publish to the event on screen. */
const PUBLISH_TO_SCREEN_MS = 1_000;
const WAIT = { timeout: 15_000 };

if (!clearpathAvailable()) throw new Error(`no clearpath at ${CLEARPATH_BIN}: run \`make setup\` (or set CLEARPATH_BIN)`);
if (!existsSync(join(DIST_DIR, 'index.html'))) throw new Error(`no dashboard build in ${DIST_DIR}: run \`npm -w clients/web run build\``);

let browser: Browser;
const contexts: BrowserContext[] = [];
/** Processes that live for a whole describe block, not one test. */
const shared = new Set<Service>();

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
  await stopAll(shared);
});

interface Opened {
  page: Page;
  /** Console errors, and requests that went anywhere but the bridge. */
  problems: { console: string[]; offsite: string[] };
}

/** A fresh context and page on `base + path`, allowed to reach nothing but `base`. */
async function open(base: string, path = '/'): Promise<Opened> {
  const context = await isolatedContext(browser, base);
  contexts.push(context);
  const page = await context.newPage();
  const problems = { console: [] as string[], offsite: [] as string[] };
  page.on('console', (m) => {
    if (m.type() === 'error') problems.console.push(m.text());
  });
  page.on('requestfailed', (r) => {
    if (!r.url().startsWith(base)) problems.offsite.push(r.url());
  });
  await page.goto(base + path, WAIT);
  return { page, problems };
}

function state(page: Page, value: string) {
  return page.locator(`[data-testid="connection-state"][data-state="${value}"]`);
}

async function waitSubscribed(page: Page, topic: string): Promise<void> {
  await page.locator(`[data-testid="topic-toggle-${topic}"][data-confirmed="true"]`).waitFor(WAIT);
}

/** [topic, offset] of every event line in the message log, oldest first. */
async function logOffsets(page: Page): Promise<[string, number][]> {
  const newestFirst = await page
    .getByTestId('log-entry')
    .evaluateAll((els) =>
      els.flatMap((e) => (e.hasAttribute('data-offset') ? [[e.getAttribute('data-topic') ?? '', Number(e.getAttribute('data-offset'))] as [string, number]] : [])),
    );
  return newestFirst.reverse();
}

async function logTotal(page: Page): Promise<number> {
  return Number(await page.getByTestId('message-log').getAttribute('data-total'));
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function fileWritten(path: string): void {
  expect(existsSync(path), path).toBe(true);
  expect(statSync(path).size, path).toBeGreaterThan(1_000);
}

describe('dashboard against clearpath serve', () => {
  it('is served by the bridge, connects, and shows events published over gRPC within a second', async () => {
    const serve = await startClearpath('serve', ['serve', '--grpc-port', '0', '--http-port', '0'], { core: true, bridge: true });
    const { page, problems } = await open(serve.url!);
    await state(page, 'connected').waitFor(WAIT);
    await expect.poll(() => page.getByTestId('connection-state').textContent(), WAIT).toBe('Connected');
    expect(await page.getByTestId('endpoint').textContent()).toBe(`${serve.url!.replace(/^http/, 'ws')}/ws/connect`);
    await waitSubscribed(page, 'package_updates');

    // Record when each row and log line first appears, in the page, by wall clock.
    await page.evaluate(() => {
      const seen: Record<string, number> = {};
      (window as unknown as { __seen: Record<string, number> }).__seen = seen;
      const scan = () => {
        const at = Date.now();
        for (const row of document.querySelectorAll('[data-testid="package-row"]')) {
          const key = `row:${row.getAttribute('data-package-id')}`;
          seen[key] ??= at;
        }
        for (const line of document.querySelectorAll('[data-testid="log-entry"][data-type="package_update"]')) {
          const key = `log:${/LAT-\d+/.exec(line.textContent ?? '')?.[0]}`;
          seen[key] ??= at;
        }
      };
      new MutationObserver(scan).observe(document.body, { subtree: true, childList: true });
    });

    // One publisher process for all: its start-up is not the system's latency.
    // Its first event (LAT-0) is not timed, it only shows the publisher is up.
    // Then one at a time, spread over the dashboard's 250 ms render batching.
    const publisher = new LinePublisher(serve.core!);
    const samples: { row: number; log: number }[] = [];
    try {
      publisher.send(packageUpdate('lat-0', 'LAT-0'));
      await page.locator('[data-testid="package-row"][data-package-id="lat-0"]').waitFor(WAIT);
      for (let i = 1; i <= 8; i++) {
        const id = `lat-${i}`;
        const sentAt = publisher.send(packageUpdate(id, `LAT-${i}`));
        const seen = await page.waitForFunction(
          ({ id, tn }) => {
            const s = (window as unknown as { __seen: Record<string, number> }).__seen;
            const row = s[`row:${id}`];
            const log = s[`log:${tn}`];
            return row !== undefined && log !== undefined ? { row, log } : null;
          },
          { id, tn: `LAT-${i}` },
          { timeout: 10_000 },
        );
        const at = (await seen.jsonValue()) as { row: number; log: number };
        samples.push({ row: at.row - sentAt, log: at.log - sentAt });
        await page.waitForTimeout(90 + 37 * i);
      }
    } finally {
      await publisher.close();
    }
    const worst = samples.map((s) => Math.max(s.row, s.log));
    const sorted = [...worst].sort((a, b) => a - b);
    console.log(
      `publish → package row and log line (ms): ${samples.map((s) => `${s.row}/${s.log}`).join(' ')}; ` +
        `median ${sorted[Math.floor(sorted.length / 2)]}, max ${sorted[sorted.length - 1]}`,
    );
    for (const ms of worst) expect(ms).toBeLessThan(PUBLISH_TO_SCREEN_MS);

    // Exactly those nine, in order, each once.
    const row = page.locator('[data-testid="package-row"][data-package-id="lat-3"]');
    expect(await row.getAttribute('data-status')).toBe('in_transit');
    expect(await row.textContent()).toContain('Chicago Distribution Center');
    expect((await logOffsets(page)).filter(([t]) => t === 'package_updates').map(([, o]) => o)).toEqual(range(1, 9));
    expect(problems).toEqual({ console: [], offsite: [] });
  });
});

describe('bridge restart: separate core and bridge processes', () => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`shows reconnecting, then recovers every event published while the bridge was down (${signal})`, async () => {
      const core = await startClearpath(`core-${signal}`, ['serve', '--no-bridge', '--grpc-port', '0'], { core: true });
      // The page must find the bridge again at the same URL: a fixed port, free a moment ago.
      const port = await freePort();
      const bridgeArgs = ['bridge', '--core', core.core!, '--http-port', String(port)];
      let bridge: Service = await startClearpath(`bridge-1-${signal}`, bridgeArgs, { bridge: true });
      const { page, problems } = await open(bridge.url!);
      await state(page, 'connected').waitFor(WAIT);
      await waitSubscribed(page, 'package_updates');

      const before = await publishOne(core.core!, packageUpdate('before-1', 'BEFORE-1'));
      expect(before.position.offset).toBe(1);
      await page.locator('[data-testid="package-row"][data-package-id="before-1"]').waitFor(WAIT);

      await bridge.stop(signal);
      await state(page, 'reconnecting').waitFor(WAIT);
      await page.getByText(/Reconnecting \(attempt \d+\)/).waitFor(WAIT);
      await page.screenshot({ path: join(ARTIFACTS, `reconnecting-${signal}.png`) });

      // Published over gRPC while no bridge runs: only the core has them.
      const down = range(1, 5).map((i) => packageUpdate(`down-${i}`, `DOWN-${i}`, i % 2 ? 'in_transit' : 'delayed'));
      await publishMany(core.core!, down);
      expect(await page.locator('[data-testid="package-row"][data-package-id^="down-"]').count()).toBe(0);
      expect(await page.getByTestId('connection-state').getAttribute('data-state')).toBe('reconnecting');

      bridge = await startClearpath(`bridge-2-${signal}`, bridgeArgs, { bridge: true });
      await state(page, 'connected').waitFor({ timeout: 30_000 });
      for (let i = 1; i <= 5; i++) {
        await page.locator(`[data-testid="package-row"][data-package-id="down-${i}"]`).waitFor(WAIT);
      }
      // And live again after the replay.
      const after = await publishOne(core.core!, packageUpdate('after-1', 'AFTER-1'));
      expect(after.position.offset).toBe(7);
      await page.locator('[data-testid="package-row"][data-package-id="after-1"]').waitFor(WAIT);

      // No gap, no duplicate: every offset 1..7 of package_updates exactly once, in order.
      await expect.poll(async () => (await logOffsets(page)).filter(([t]) => t === 'package_updates').map(([, o]) => o), WAIT).toEqual(range(1, 7));
      expect(await page.getByTestId('package-table').getAttribute('data-count')).toBe('7');
      expect(await page.locator('[data-testid="package-row"][data-package-id="down-2"]').getAttribute('data-status')).toBe('delayed');
      // The bridge resumed the topic (no "history lost", no gap notice).
      expect(await page.getByText('history lost').count()).toBe(0);
      expect(await page.getByTestId('gap-notice').count()).toBe(0);
      await page.screenshot({ path: join(ARTIFACTS, `recovered-${signal}.png`), fullPage: true });
      // The browser itself logs refused handshakes while the bridge is down; nothing else may be logged.
      expect(problems.console.filter((e) => !e.startsWith('WebSocket connection to'))).toEqual([]);
      expect(problems.offsite).toEqual([]);
    });
  }
});

describe('core restart: history lost', () => {
  it('shows a gap notice when an in-memory core restarts under a running bridge', async () => {
    // The core comes back on the same port: the bridge's upstream finds it again.
    const grpcPort = await freePort();
    const coreArgs = ['serve', '--no-bridge', '--grpc-port', String(grpcPort)];
    let core: Service = await startClearpath('core-1-restart', coreArgs, { core: true });
    const bridge = await startClearpath('bridge-restart', ['bridge', '--core', core.core!, '--http-port', '0'], { bridge: true });
    const { page } = await open(bridge.url!, '/?topics=package_updates');
    await state(page, 'connected').waitFor(WAIT);
    await waitSubscribed(page, 'package_updates');
    await publishOne(core.core!, packageUpdate('old-1', 'OLD-1'));
    await page.locator('[data-testid="package-row"][data-package-id="old-1"]').waitFor(WAIT);
    expect(await page.getByTestId('gap-notice').count()).toBe(0);

    await core.stop('SIGKILL');
    core = await startClearpath('core-2-restart', coreArgs, { core: true });
    const notice = page.getByTestId('gap-notice');
    await notice.waitFor({ timeout: 30_000 });
    expect(await notice.getAttribute('data-topic')).toBe('package_updates');
    expect(await notice.getAttribute('data-reason')).toBe('epoch_changed');
    // The socket stayed open, and the new epoch's events arrive.
    expect(await page.getByTestId('connection-state').getAttribute('data-state')).toBe('connected');
    const fresh = await publishOne(core.core!, packageUpdate('new-1', 'NEW-1'));
    expect(fresh.position.offset).toBe(1);
    await page.locator('[data-testid="package-row"][data-package-id="new-1"]').waitFor(WAIT);
    await page.screenshot({ path: join(ARTIFACTS, 'gap-notice.png') });
  });
});

describe('dashboard with the simulator (clearpath serve --simulate)', () => {
  let sim: Service;
  beforeAll(async () => {
    sim = await startClearpath('serve-simulate', ['serve', '--grpc-port', '0', '--http-port', '0', '--simulate', '--seed', '7'], {
      core: true,
      bridge: true,
    });
    shared.add(sim);
  });
  afterAll(async () => {
    shared.delete(sim);
    await sim?.stop();
  });

  it('fills every panel, keeps updating, stays responsive; screenshot saved', async () => {
    const { page, problems } = await open(sim.url!);
    await state(page, 'connected').waitFor(WAIT);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="package-row"]').length >= 5, null, WAIT);
    await page.locator('[data-testid="metric-total_packages"]:not([data-value=""])').waitFor(WAIT);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="map-point"]').length >= 3, null, WAIT);
    await page.locator('[data-testid="anomaly-row"]').first().waitFor({ timeout: 30_000 });

    // Keeps updating: the log total grows, again and again.
    const t0 = await logTotal(page);
    await page.waitForFunction((n) => Number(document.querySelector('[data-testid="message-log"]')?.getAttribute('data-total')) > n + 10, t0, WAIT);
    const t1 = await logTotal(page);
    await page.waitForFunction((n) => Number(document.querySelector('[data-testid="message-log"]')?.getAttribute('data-total')) > n + 10, t1, WAIT);

    // Responsive: the longest gap between animation frames over 3 s.
    const maxGap = await page.evaluate(
      () =>
        new Promise<number>((done) => {
          let last = performance.now();
          let worst = 0;
          const end = last + 3_000;
          const tick = (t: number) => {
            worst = Math.max(worst, t - last);
            last = t;
            if (t < end) requestAnimationFrame(tick);
            else done(worst);
          };
          requestAnimationFrame(tick);
        }),
    );
    // A toggle click reflects at once, and the bridge confirms the unsubscribe.
    const toggle = page.getByTestId('topic-toggle-map_updates');
    const clickedAt = Date.now();
    await toggle.click({ timeout: 5_000 });
    await page.locator('[data-testid="topic-toggle-map_updates"]:not(:checked)').waitFor({ timeout: 5_000 });
    const uncheckedMs = Date.now() - clickedAt;
    await page.locator('[data-testid="topic-toggle-map_updates"][data-confirmed="false"]').waitFor({ timeout: 5_000 });
    const confirmedMs = Date.now() - clickedAt;
    await page.locator('[data-testid="log-entry"][data-type="unsubscribed"]').first().waitFor(WAIT);
    console.log(`simulator (default rate): longest frame gap ${maxGap.toFixed(0)} ms; toggle unchecked in ${uncheckedMs} ms, bridge confirmed in ${confirmedMs} ms`);
    expect(maxGap).toBeLessThan(1_000);
    expect(confirmedMs).toBeLessThan(2_000);

    // After the unsubscribed frame, no map_update arrives (a second of traffic later).
    const total = await logTotal(page);
    await page.waitForFunction((n) => Number(document.querySelector('[data-testid="message-log"]')?.getAttribute('data-total')) > n + 10, total, WAIT);
    const types = await page.getByTestId('log-entry').evaluateAll((els) => els.map((e) => e.getAttribute('data-type')));
    const newest = types.slice(0, types.indexOf('unsubscribed'));
    expect(newest.length).toBeGreaterThan(10);
    expect(newest).not.toContain('map_update');

    // Back on: confirmed again, map updates flow again.
    await toggle.click({ timeout: 5_000 });
    await page.locator('[data-testid="topic-toggle-map_updates"][data-confirmed="true"]').waitFor({ timeout: 5_000 });
    await page.waitForFunction(
      () => {
        const entries = [...document.querySelectorAll('[data-testid="log-entry"]')].map((e) => e.getAttribute('data-type'));
        return entries.indexOf('map_update') !== -1 && entries.indexOf('map_update') < entries.indexOf('subscribed');
      },
      null,
      WAIT,
    );

    const ids = await page.getByTestId('package-row').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-package-id')));
    expect(new Set(ids).size).toBe(ids.length);
    const shot = join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    fileWritten(shot);
    expect(problems).toEqual({ console: [], offsite: [] });
  });

  it('on /ws/dashboard: shows the endpoint subscriptions in the toggles and takes one more', async () => {
    const { page, problems } = await open(sim.url!, '/?endpoint=/ws/dashboard');
    await state(page, 'connected').waitFor(WAIT);
    await waitSubscribed(page, 'dashboard_metrics');
    await waitSubscribed(page, 'notifications');
    expect(await page.getByTestId('topic-toggle-package_updates').isChecked()).toBe(false);
    await page.locator('[data-testid="metric-total_packages"]:not([data-value=""])').waitFor(WAIT);
    await page.getByTestId('topic-toggle-anomalies').check({ timeout: 5_000 });
    await waitSubscribed(page, 'anomalies');
    await page.locator('[data-testid="anomaly-row"]').first().waitFor({ timeout: 30_000 });
    const types = await page.getByTestId('log-entry').evaluateAll((els) => [...new Set(els.map((e) => e.getAttribute('data-type')))]);
    expect(types.filter((t) => ['package_update', 'map_update', 'agent_activity', 'system_health'].includes(t ?? ''))).toEqual([]);
    expect(problems).toEqual({ console: [], offsite: [] });
  });
});

describe('dashboard under load (clearpath serve --simulate --rate 200)', () => {
  it('stays responsive at 200 events per second, with bounded tables', async () => {
    const serve = await startClearpath('serve-simulate-200', ['serve', '--grpc-port', '0', '--http-port', '0', '--simulate', '--rate', '200', '--seed', '11'], {
      core: true,
      bridge: true,
    });
    const { page, problems } = await open(serve.url!);
    await state(page, 'connected').waitFor(WAIT);
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="message-log"]')?.getAttribute('data-total')) >= 400, null, WAIT);
    // Measure the longest gap between animation frames over 4 s of load, and the events that arrived.
    const t0 = await logTotal(page);
    const maxGap = await page.evaluate(
      () =>
        new Promise<number>((done) => {
          let last = performance.now();
          let worst = 0;
          const end = last + 4_000;
          const tick = (t: number) => {
            worst = Math.max(worst, t - last);
            last = t;
            if (t < end) requestAnimationFrame(tick);
            else done(worst);
          };
          requestAnimationFrame(tick);
        }),
    );
    const rate = ((await logTotal(page)) - t0) / 4;
    const clickedAt = Date.now();
    await page.getByTestId('topic-toggle-map_updates').uncheck({ timeout: 5_000 });
    await page.locator('[data-testid="topic-toggle-map_updates"][data-confirmed="false"]').waitFor({ timeout: 5_000 });
    const toggleMs = Date.now() - clickedAt;
    console.log(`200 ev/s simulated: ${rate.toFixed(0)} log lines/s on the page, longest frame gap ${maxGap.toFixed(0)} ms, toggle confirmed in ${toggleMs} ms`);
    expect(rate).toBeGreaterThan(100);
    expect(maxGap).toBeLessThan(1_000);
    expect(toggleMs).toBeLessThan(2_000);
    expect(await page.getByTestId('message-log').getAttribute('data-count')).toBe('200');
    expect(await page.getByTestId('package-row').count()).toBeLessThanOrEqual(200);
    expect(await page.getByTestId('connection-state').getAttribute('data-state')).toBe('connected');
    expect(problems).toEqual({ console: [], offsite: [] });
  });
});
