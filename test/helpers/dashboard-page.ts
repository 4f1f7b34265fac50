/**
 * The dashboard in a browser, for tests: Debian's Chromium driven by
 * Playwright (playwright-core; scripts/install-test-tools.sh installs the
 * browser), where screenshots go, and how to read the dashboard's tables.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { waitFor } from './server.ts';

const CHROMIUM = '/usr/bin/chromium';
/** Debian's Chromium on a machine without outside network: no background connections, no sandbox (root). */
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** A fresh browser profile, closed (and removed) after the test. */
export async function browser(t: TestContext): Promise<BrowserContext> {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/install-test-tools.sh installs Debian's chromium`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 860 }, timezoneId: 'UTC',
  });
  t.after(async () => {
    await context.close();
    await fs.promises.rm(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  });
  return context;
}

/** Where screenshots go: kept after the run, so a person can look at them (TEST_OUTPUT_DIR, else a temporary folder). */
export function screenshotDir(): string {
  const base = process.env.TEST_OUTPUT_DIR ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  return fs.mkdtempSync(path.join(base, 'basalt-dashboard-'));
}

/** The cell of a row (by id) and column (by name) of one of the page's tables. */
export const cell = (page: Page, table: string, id: string, col: string) => page.locator(`[data-testid="${table}"] tr[data-id="${id}"] td[data-col="${col}"]`);

/** Waits until the cell exists and its text is `want` (the pages refresh every few seconds). */
export async function cellIs(page: Page, table: string, id: string, col: string, want: string): Promise<void> {
  let last: string | null = null;
  try {
    await waitFor(`${table} ${id} ${col} = ${want}`, async () => {
      const c = cell(page, table, id, col);
      last = (await c.count()) > 0 ? (await c.textContent())?.trim() ?? null : null;
      return last === want;
    }, 30_000);
  } catch (err) {
    throw new Error(`${(err as Error).message} (shown: ${JSON.stringify(last)})`);
  }
}

/** The ids of a table's rows as shown. */
export async function rowIds(page: Page, table: string): Promise<string[]> {
  return page.locator(`[data-testid="${table}"] tbody tr`).evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id') ?? ''));
}

/** Clicks a page's link in the navigation and waits for the page to have loaded once. */
export async function open(page: Page, name: string): Promise<void> {
  await page.click(`[data-testid="nav-${name}"]`);
  await page.locator(`main[data-page="${name}"] [data-testid="loaded-at"]`).first().filter({ hasNotText: 'loading' }).waitFor();
}


/** Saves numbered full-page screenshots into a fresh {@link screenshotDir}, printing each one's path as a test diagnostic. */
export function screenshots(t: TestContext): (page: Page, name: string) => Promise<void> {
  const dir = screenshotDir();
  let n = 0;
  return async (page, name) => {
    const file = path.join(dir, `${String(++n).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    t.diagnostic(`screenshot: ${file}`);
  };
}
