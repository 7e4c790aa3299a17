// Drives a headless Chromium through the hub's pages, as a person would:
// home page, search, machine page, the file browser down to /etc/os-release,
// and the VHD download link.
//
// Run by crates/hub/tests/browser.rs, which passes:
//   HUB_URL          the hub, http://127.0.0.1:PORT
//   CHROMIUM         the browser binary
//   EXPECT_TEXT      what /etc/os-release holds
//   DOWNLOAD_TO      where to save the downloaded disk
// and NODE_PATH pointing at the node_modules holding playwright-core.
'use strict';

const { chromium } = require('playwright-core');

const hub = process.env.HUB_URL;
const expected = process.env.EXPECT_TEXT;
const STEP = 30000;

function check(ok, what) {
    if (!ok) {
        throw new Error(what);
    }
    console.log(`browser: ok: ${what}`);
}

async function main() {
    const browser = await chromium.launch({
        executablePath: process.env.CHROMIUM,
        headless: true,
        // Root cannot use Chromium's sandbox.
        args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
        timeout: 60000,
    });
    try {
        const context = await browser.newContext({ acceptDownloads: true });
        const page = await context.newPage();
        page.setDefaultTimeout(STEP);
        page.setDefaultNavigationTimeout(STEP);
        // A page that breaks its own content security policy, or fails to
        // load something, says so on the console.
        const problems = [];
        page.on('console', (m) => {
            if (m.type() === 'error') problems.push(m.text());
        });
        page.on('pageerror', (e) => problems.push(String(e)));

        const home = await page.goto(`${hub}/`);
        check(home.status() === 200, 'the home page answers 200');
        check((await page.locator('h1').first().textContent()) === 'Machines', 'the home page is titled Machines');

        await page.locator('input[name="q"]').first().fill('box');
        await Promise.all([
            page.waitForURL(/\/search\?q=box/),
            page.locator('form button').first().click(),
        ]);
        check(await page.getByText('1 machine(s) match').isVisible(), 'the search finds one machine');

        await Promise.all([
            page.waitForURL(/\/m\/acme\/box$/),
            page.getByRole('link', { name: 'acme/box:1' }).click(),
        ]);
        check((await page.locator('h1').textContent()) === 'acme/box', 'the machine page opens');
        const machinePage = page.url();

        await page.getByRole('link', { name: 'Browse the files of acme/box:1' }).click();
        await page.waitForURL(/\/files\/$/);
        await page.getByRole('link', { name: 'disk 0' }).click();
        await page.waitForURL(/\/files\/0\/$/);
        check(await page.getByText('MBR partition table').isVisible(), 'the disk shows its partition table');
        await page.locator('tr', { hasText: 'ext4' }).getByRole('link').click();
        await page.waitForURL(/\/files\/0\/2\/$/);
        await page.getByRole('link', { name: 'etc/', exact: true }).click();
        await page.waitForURL(/\/files\/0\/2\/etc\/$/);
        check((await page.locator('h1').textContent()) === '/etc', 'the browser lists /etc');
        await page.getByRole('link', { name: 'os-release', exact: true }).click();
        await page.waitForURL(/\/etc\/os-release$/);
        const shown = await page.locator('pre.file').textContent();
        check(shown === expected, '/etc/os-release is shown with its exact text');
        check((await page.locator('nav.crumbs a').count()) >= 5, 'breadcrumbs lead back up');

        // The download link beside it gives the same bytes.
        const [file] = await Promise.all([
            page.waitForEvent('download', { timeout: STEP }),
            page.getByRole('link', { name: 'download' }).click(),
        ]);
        check(file.suggestedFilename() === 'os-release', 'the file downloads as os-release');
        const fs = require('fs');
        const path = `${process.env.DOWNLOAD_TO}.os-release`;
        await file.saveAs(path);
        check(fs.readFileSync(path, 'utf8') === expected, 'the downloaded file holds the same text');

        {
            await page.goto(machinePage);
            const link = page.locator('a[href$=".vhd"]').first();
            const [disk] = await Promise.all([
                page.waitForEvent('download', { timeout: 120000 }),
                link.click(),
            ]);
            await disk.saveAs(process.env.DOWNLOAD_TO);
            check(fs.statSync(process.env.DOWNLOAD_TO).size > 0, `the disk downloads as ${disk.suggestedFilename()}`);
        }
        check(problems.length === 0, `no console errors (${problems.join('; ')})`);
        await context.close();
    } finally {
        await browser.close();
    }
}

main().then(
    () => console.log('browser: done'),
    (e) => {
        console.error(`browser: FAILED: ${e && e.stack ? e.stack : e}`);
        process.exit(1);
    },
);
