/**
 * A smoke test of the fake bridge (e2e/fake-bridge.mjs), the stand-in for front-end work
 * without the Python services: the built dashboard still connects to it and shows its data.
 * The product is tested against the real system in system.e2e.test.ts.
 */
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isolatedContext, launchChromium } from './chromium';
import { startFakeBridge, type FakeBridge } from './fake-bridge.mjs';

const WAIT = { timeout: 15_000 };

let browser: Browser;
let bridge: FakeBridge;

beforeAll(async () => {
  browser = await launchChromium();
  bridge = await startFakeBridge({ rate: 20 });
});
afterAll(async () => {
  await browser?.close();
  await bridge?.close();
});

it('the dashboard runs against the fake bridge', async () => {
  const context = await isolatedContext(browser, bridge.url);
  try {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(`${bridge.url}/`, WAIT);
    await page.locator('[data-testid="connection-state"][data-state="connected"]').waitFor(WAIT);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="package-row"]').length >= 5, null, WAIT);
    await page.locator('[data-testid="metric-total_packages"]:not([data-value=""])').waitFor(WAIT);
    expect(errors).toEqual([]);
  } finally {
    await context.close();
  }
});

it('resumes with ?since= after a reconnect and shows a notice when the history is lost', async () => {
  const context = await isolatedContext(browser, bridge.url);
  try {
    const page = await context.newPage();
    const sockets: string[] = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await page.goto(`${bridge.url}/?topics=package_updates`, WAIT);
    await page.locator('[data-testid="connection-state"][data-state="connected"]').waitFor(WAIT);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="package-row"]').length >= 2, null, WAIT);
    bridge.dropAll(1001);
    await expect.poll(() => sockets.length, WAIT).toBe(2);
    expect(sockets[1]).toMatch(new RegExp(`[?&]since=package_updates:${bridge.epoch}:\\d+`));
    await page.locator('[data-testid="connection-state"][data-state="connected"]').waitFor(WAIT);
    expect(await page.getByTestId('gap-notice').count()).toBe(0);

    bridge.resetHistory();
    const notice = page.getByTestId('gap-notice');
    await notice.waitFor(WAIT);
    expect(await notice.getAttribute('data-topic')).toBe('package_updates');
    expect(await notice.getAttribute('data-reason')).toBe('epoch_changed');
  } finally {
    await context.close();
  }
});
