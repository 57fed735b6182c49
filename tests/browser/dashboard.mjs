// /dashboard in headless Chromium (Debian's, via playwright-core: no browser is downloaded).
// Every request leaving 127.0.0.1 is blocked and fails the run, as do console errors, failed
// requests, HTTP errors and CSP violations. Waits until the tiles show traffic and every chart
// holds points, switches the range, hovers a chart and reads the value, saves a screenshot.
// Usage: node dashboard.mjs <base url> <screenshot.png>
import { chromium } from 'playwright-core';

const [base, screenshot] = process.argv.slice(2);
const WAIT = 30_000; // a no-hang guard, not a timing assertion
const problems = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === '127.0.0.1') return route.continue();
    problems.push(`request leaving 127.0.0.1: ${url}`);
    return route.abort();
  });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`failed request: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });

  await page.goto(`${base}/dashboard`);
  const csp = (await page.request.get(`${base}/dashboard`)).headers()['content-security-policy'] || '';
  if (!csp.startsWith("default-src 'self'")) problems.push(`CSP header: ${csp}`);

  // Tiles show traffic.
  await page.waitForFunction(() => {
    const v = document.querySelector('.tile[data-title="Request rate"] .value');
    return v && parseFloat(v.textContent) > 0;
  }, null, { timeout: WAIT });

  // Every chart holds points.
  const everyChartHasPoints = () => {
    const charts = [...document.querySelectorAll('canvas[data-title]')];
    return charts.length > 0 && charts.every((c) => Number(c.dataset.points) > 0);
  };
  const waitForPoints = (when) =>
    page.waitForFunction(everyChartHasPoints, null, { timeout: WAIT }).catch(async () => {
      const empty = await page.$$eval('canvas[data-title]', (cs) =>
        cs.filter((c) => Number(c.dataset.points) === 0).map((c) => c.dataset.title));
      problems.push(`${when}: charts without points: ${empty.join(', ') || '(no charts)'}`);
    });
  await waitForPoints('5 min range');
  const charts = await page.$$eval('canvas[data-title]', (cs) => cs.map((c) => c.dataset.title));

  // Another range: the history from before (the page asks again from scratch).
  await page.click('#ranges button[data-range="60"]');
  await waitForPoints('1 min range');

  // Hover the request-rate chart and read the value under the pointer.
  const chart = page.locator('canvas[data-title="Request rate"]');
  const box = await chart.boundingBox();
  await page.mouse.move(box.x + box.width * 0.97, box.y + box.height / 2);
  const tooltip = page.locator('#tooltip');
  await tooltip.waitFor({ state: 'visible', timeout: WAIT });
  const text = await tooltip.textContent();
  const read = /requests\/s: ([\d.]+) ?[kMG]? ?\/s/.exec(text);
  if (!read || !(parseFloat(read[1]) > 0)) problems.push(`hover read-out: ${JSON.stringify(text)}`);

  const tiles = await page.$$eval('.tile', (ts) => ts.map((t) => t.textContent.replace(/\s+/g, ' ')));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`${charts.length} charts with points; hover: ${JSON.stringify(text)}`);
  console.log(`tiles: ${tiles.join(' | ')}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
