// Opens the gateway's API reference (/docs, Swagger UI) in the system Chromium, offline.
//
// Run by tests/gateway/test_apidocs.py (which starts the service and the gateway):
//   SWITCHBOARD_URL=http://127.0.0.1:PORT TOKEN=… ARTIFACTS=dir node docs.mjs
// Every request to another origin is aborted and recorded, as are console errors, page errors
// and Content-Security-Policy violations. The script waits for the operations to render,
// authorizes with TOKEN through the "Authorize" dialog, runs "Try it out" on
// RoomService_ListRooms against the same gateway; screenshots go to test-artifacts/docs.png
// (the overview) and docs-try-it-out.png.
// Prints one JSON object on stdout. Never downloads a browser: it launches /usr/bin/chromium
// (CHROMIUM overrides) with a fresh profile.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.SWITCHBOARD_URL;
const ORIGIN = new URL(BASE).origin;
const ARTIFACTS = process.env.ARTIFACTS ?? "test-artifacts";
const STEP_MS = 15000;
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const LIST_ROOMS = "#operations-RoomService-RoomService_ListRooms";

const result = { steps: [], requests: [], blocked: [], consoleErrors: [], pageErrors: [], csp: [] };

const started = Date.now();

function step(name) {
  result.steps.push(`${name} (${Date.now() - started} ms)`);
  process.stderr.write(`docs: ${name}\n`);
}

async function open(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === ORIGIN) {
      result.requests.push(url.slice(ORIGIN.length));
      return route.continue();
    }
    result.blocked.push(url);
    return route.abort("blockedbyclient");
  });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("pageerror", (error) => result.pageErrors.push(error.message));
  page.on("console", (message) => {
    if (/Content Security Policy|Refused to/.test(message.text())) result.csp.push(message.text());
    else if (message.type() === "error") result.consoleErrors.push(message.text());
  });
  await page.exposeFunction("reportViolation", (text) => result.csp.push(text));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) =>
      window.reportViolation(`${event.violatedDirective}: ${event.blockedURI}`));
  });
  return page;
}

async function authorize(page) {
  await page.click("button.authorize");
  const dialog = page.locator(".modal-ux");
  await dialog.locator("input").first().fill(process.env.TOKEN);
  await dialog.locator("button.authorize").click();
  await dialog.locator("button.btn-done").click();
  await dialog.waitFor({ state: "detached" });
}

async function tryListRooms(page) {
  const operation = page.locator(LIST_ROOMS);
  await operation.locator(".opblock-summary-control").click();
  await operation.locator("button.try-out__btn").click();
  await operation.locator("button.execute").click();
  const status = operation.locator(".live-responses-table tbody .response-col_status").first();
  await status.waitFor();
  result.tryItOutStatus = (await status.innerText()).trim();
  result.tryItOutBody = await operation.locator(".live-responses-table .microlight").first().innerText();
  result.tryItOutCurl = await operation.locator(".curl-command .curl").first().innerText();
}

async function scenario(browser) {
  const page = await open(browser);

  step("open /docs");
  await page.goto(`${BASE}/docs`);
  await page.locator(".opblock-tag").first().waitFor();
  await page.locator(".opblock").first().waitFor();
  result.title = await page.locator(".info .title").first().innerText();
  result.tags = await page.$$eval(".opblock-tag", (tags) => tags.map((tag) => tag.dataset.tag));
  result.operations = await page.$$eval(".opblock", (blocks) => blocks.map((block) => block.id));
  result.summaries = await page.$$eval(".opblock-summary-description", (items) =>
    items.map((item) => item.textContent.trim()));
  result.screenshots = [join(ARTIFACTS, "docs.png"), join(ARTIFACTS, "docs-try-it-out.png")];
  await page.screenshot({ path: result.screenshots[0] });

  step("authorize with the bearer token");
  await authorize(page);

  step("try it out: ListRooms");
  await tryListRooms(page);

  await page.locator(LIST_ROOMS).evaluate((element) => element.scrollIntoView());
  await page.screenshot({ path: result.screenshots[1] });
  step("done");
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
  });
  try {
    await scenario(browser);
    result.ok = true;
  } catch (error) {
    result.ok = false;
    result.failure = String(error?.message ?? error);
  } finally {
    await browser.close();
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
