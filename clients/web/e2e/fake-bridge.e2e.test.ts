/**
 * The built dashboard in real Chromium against the fake bridge (e2e/fake-bridge.mjs).
 * Run with `npm -w clients/web run e2e` (builds first). Every wait is bounded.
 */
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isolatedContext, launchChromium } from './chromium';
import { startFakeBridge, type FakeBridge } from './fake-bridge.mjs';

const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/web/', import.meta.url));
const WAIT = { timeout: 15_000 };

let browser: Browser;
let bridge: FakeBridge;
let context: BrowserContext;
let page: Page;
let consoleErrors: string[];
let blocked: string[];

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
});

beforeEach(async () => {
  bridge = await startFakeBridge({ rate: 20 });
  context = await isolatedContext(browser, bridge.url);
  page = await context.newPage();
  consoleErrors = [];
  blocked = [];
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('requestfailed', (r) => {
    if (!r.url().startsWith(bridge.url)) blocked.push(r.url());
  });
});
afterEach(async () => {
  await context?.close();
  await bridge?.close();
});

async function waitConnected(): Promise<void> {
  await page.locator('[data-testid="connection-state"][data-state="connected"]').waitFor(WAIT);
}

async function logTotal(): Promise<number> {
  return Number(await page.getByTestId('message-log').getAttribute('data-total'));
}

describe('dashboard in Chromium', () => {
  it('shows live data from the bridge, with nothing fetched from elsewhere', async () => {
    await page.goto(`${bridge.url}/`);
    await waitConnected();
    expect(await page.getByTestId('endpoint').textContent()).toBe(`ws://127.0.0.1:${bridge.port}/ws/connect`);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="package-row"]').length >= 5, null, WAIT);
    await page.locator('[data-testid="metric-total_packages"]:not([data-value=""])').waitFor(WAIT);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="map-point"]').length >= 3, null, WAIT);
    await page.locator('[data-testid="anomaly-row"]').first().waitFor(WAIT);
    const ids = await page.getByTestId('package-row').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-package-id')));
    expect(new Set(ids).size).toBe(ids.length);
    await page.screenshot({ path: `${ARTIFACTS}dashboard.png`, fullPage: true });
    expect(consoleErrors).toEqual([]);
    expect(blocked).toEqual([]);
  });

  it('reconnects after the bridge drops it and resumes without gaps or duplicates', async () => {
    await page.goto(`${bridge.url}/`);
    await waitConnected();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="message-log"]')?.getAttribute('data-total')) >= 30, null, WAIT);
    bridge.refuse(true);
    bridge.killAll();
    await page.getByText(/Reconnecting \(attempt 2\/5\)/).waitFor(WAIT);
    await page.screenshot({ path: `${ARTIFACTS}reconnecting.png` });
    // Events go on while the page is away; they must be replayed.
    bridge.refuse(false);
    await waitConnected();
    const before = await logTotal();
    await page.waitForFunction((n) => Number(document.querySelector('[data-testid="message-log"]')?.getAttribute('data-total')) >= n + 40, before, WAIT);
    bridge.setRate(0);
    const offsets = bridge.offsets();
    // Everything published reaches the page: the last offset of each subscribed topic shows up.
    await page.waitForFunction(
      (expected) => {
        const seen: Record<string, number> = {};
        for (const el of document.querySelectorAll('[data-testid="log-entry"][data-offset]')) {
          const t = el.getAttribute('data-topic') ?? '';
          seen[t] = Math.max(seen[t] ?? 0, Number(el.getAttribute('data-offset')));
        }
        return Object.entries(seen).every(([t, o]) => o === expected[t]);
      },
      offsets,
      WAIT,
    );
    const entries = await page
      .getByTestId('log-entry')
      .evaluateAll((els) => els.flatMap((e) => (e.hasAttribute('data-offset') ? [[e.getAttribute('data-topic') ?? '', Number(e.getAttribute('data-offset'))] as const] : [])));
    const byTopic = new Map<string, number[]>();
    for (const [topic, offset] of entries) byTopic.set(topic, [...(byTopic.get(topic) ?? []), offset]);
    for (const [topic, list] of byTopic) {
      const ascending = [...list].reverse();
      for (let i = 1; i < ascending.length; i++) {
        expect(ascending[i], `${topic} offsets ${ascending.join(',')}`).toBe(ascending[i - 1]! + 1);
      }
    }
    // The browser itself logs the refused handshakes; nothing else may be logged.
    expect(consoleErrors.filter((e) => !e.startsWith('WebSocket connection to'))).toEqual([]);
  });

  it('uses ?endpoint= and reflects the endpoint subscriptions in the toggles', async () => {
    await page.goto(`${bridge.url}/?endpoint=/ws/dashboard`);
    await waitConnected();
    await page.locator('[data-testid="topic-toggle-dashboard_metrics"][data-confirmed="true"]').waitFor(WAIT);
    expect(await page.getByTestId('topic-toggle-notifications').isChecked()).toBe(true);
    expect(await page.getByTestId('topic-toggle-package_updates').isChecked()).toBe(false);
    await page.getByTestId('topic-toggle-anomalies').check();
    await page.locator('[data-testid="topic-toggle-anomalies"][data-confirmed="true"]').waitFor(WAIT);
    await page.locator('[data-testid="anomaly-row"]').first().waitFor(WAIT);
    const types = await page.getByTestId('log-entry').evaluateAll((els) => [...new Set(els.map((e) => e.getAttribute('data-type')))]);
    expect(types.filter((t) => ['package_update', 'map_update', 'agent_activity', 'system_health'].includes(t ?? ''))).toEqual([]);
  });

  it('stays responsive at 200 events per second', async () => {
    bridge.setRate(200);
    await page.goto(`${bridge.url}/`);
    await waitConnected();
    // Measure the longest gap between animation frames over 4 s of load.
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
    const started = Date.now();
    await page.getByTestId('topic-toggle-map_updates').uncheck({ timeout: 5_000 });
    const toggleMs = Date.now() - started;
    expect(await page.getByTestId('message-log').getAttribute('data-count')).toBe('200');
    expect(await page.getByTestId('package-row').count()).toBeLessThanOrEqual(200);
    console.log(`200 ev/s: longest frame gap ${maxGap.toFixed(0)} ms, toggle took ${toggleMs} ms`);
    expect(maxGap).toBeLessThan(1_000);
    expect(toggleMs).toBeLessThan(2_000);
    expect(consoleErrors).toEqual([]);
  });
});
