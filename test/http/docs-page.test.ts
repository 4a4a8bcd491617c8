import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { CONFIG_DEFAULTS } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { createHarness } from '../support/app-harness.js';
import { loadRealService, realFixture, type RealService } from '../support/real-service.js';

/** Debian's chromium, which scripts/install.sh installs; playwright-core downloads no browser of its own. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Flags for a headless browser on a closed network, as root: without the background-networking
 * ones chromium keeps trying to reach Google's hosts and logs every refusal.
 */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

describe('/docs in a real browser (Debian chromium via playwright-core)', function () {
  let real: RealService;
  let running: RunningServer;
  let browser: Browser;

  before(async function () {
    // The suite is the proof that /docs works: a missing browser fails here, it never skips.
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/install.sh (it installs Debian's chromium) or set CHROMIUM_PATH`);
    real = await loadRealService(await realFixture(), 'docs-v1');
    const { app, logger } = createHarness(real.service);
    running = await startServer(app, { ...CONFIG_DEFAULTS, host: '127.0.0.1', port: 0 }, logger, { handleSignals: false });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });

  after(async function () {
    await browser?.close();
    await running?.shutdown('test over');
    await real?.close();
  });

  it('is linked from /, loads with no console errors, lists /retrieve and /documents, and a "try it out" call of /retrieve returns results', async function () {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console: ${message.text()} (${message.location().url})`);
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('requestfailed', (failed) => problems.push(`request failed: ${failed.url()} ${failed.failure()?.errorText}`));
    page.on('request', (sent) => {
      if (!sent.url().startsWith(running.url)) problems.push(`request off this server: ${sent.url()}`);
    });

    // A page that fails (a script the CSP refuses, say) shows as a selector never appearing: say why.
    page.setDefaultTimeout(20_000);
    try {
      // A person finds the page from the server's root.
      await page.goto(`${running.url}/`);
      await page.locator('a[href="/docs"]').click();
      await page.waitForURL(`${running.url}/docs`);
      const retrieve = page.locator('#operations-default-retrieve');
      await retrieve.locator('.opblock-summary-path', { hasText: '/retrieve' }).waitFor();
      await page.locator('#operations-default-getDocument').waitFor();

      await retrieve.locator('.opblock-summary').click();
      await retrieve.locator('button.try-out__btn').click();
      await retrieve.locator('button.execute').click();
      const status = retrieve.locator('.live-responses-table .response .response-col_status');
      await status.waitFor();
      assert.equal((await status.innerText()).trim(), '200');
      const body = JSON.parse(await retrieve.locator('.live-responses-table .response-col_description pre.microlight').first().innerText()) as {
        result: { document: { id: string; contents: string }; score: number }[][];
      };
      // The request is the document's first example: one query, topk 3, with scores.
      assert.equal(body.result.length, 1);
      assert.equal(body.result[0]!.length, 3);
      for (const hit of body.result[0]!) {
        assert.match(hit.document.id, /^\d+$/);
        assert.equal(typeof hit.score, 'number');
      }
    } catch (error) {
      throw new Error(`${(error as Error).message}\nwhat the browser reported: ${JSON.stringify(problems, null, 2)}`);
    }
    assert.deepEqual(problems, []);
  });
});
