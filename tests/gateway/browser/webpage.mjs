// Drives the gateway's chat page in the system Chromium, as two users in one room.
//
// Run by tests/gateway/test_webpage.py (which starts the service and the gateway):
//   SWITCHBOARD_URL=http://127.0.0.1:PORT TOKEN_ALICE=… TOKEN_BOB=… ARCHIVE_SIZE=N ARTIFACTS=dir \
//   node webpage.mjs
// (the room `archive` must hold N messages "old 1"…"old N", 50 < N <= 100).
// Prints one JSON object on stdout: what each page showed at each step. Never downloads a
// browser: it launches /usr/bin/chromium (CHROMIUM overrides) with a fresh profile.
// Alice reaches the gateway through a relay (Cable) that the script unplugs to cut her
// connections for real, mid-stream.

import { mkdirSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.SWITCHBOARD_URL;
const ARTIFACTS = process.env.ARTIFACTS ?? "test-artifacts";
const STEP_MS = 10000;
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const result = { pageErrors: [], steps: [] };

// A TCP relay in front of the gateway that can be unplugged: every open connection is cut
// (the page's EventSource and WebSocket see their connections drop, as on a network failure)
// and new ones are closed at once until it is plugged back in.
class Cable {
  constructor(target) {
    this.target = target;
    this.sockets = new Set();
    this.plugged = true;
    this.server = createServer((client) => this.relay(client));
  }

  async listen() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${this.server.address().port}`;
  }

  relay(client) {
    if (!this.plugged) return client.destroy();
    const upstream = createConnection({ host: this.target.hostname, port: Number(this.target.port) });
    for (const [from, to] of [[client, upstream], [upstream, client]]) {
      this.sockets.add(from);
      from.pipe(to);
      from.on("error", () => to.destroy());
      from.on("close", () => {
        this.sockets.delete(from);
        to.destroy();
      });
    }
  }

  unplug() {
    this.plugged = false;
    for (const socket of this.sockets) socket.destroy();
  }

  plugIn() {
    this.plugged = true;
  }

  close() {
    this.unplug();
    this.server.close();
  }
}

function step(name) {
  result.steps.push(name);
  process.stderr.write(`webpage: ${name}\n`);
}

async function user(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("pageerror", (error) => result.pageErrors.push(`${name}: ${error.message}`));
  page.on("console", (message) => {
    if (/Content Security Policy|Refused to/.test(message.text())) {
      result.pageErrors.push(`${name}: ${message.text()}`);
    }
  });
  return { name, context, page };
}

const text = (who, selector) => who.page.locator(selector).innerText();

async function until(who, what, predicate, arg) {
  try {
    await who.page.waitForFunction(predicate, arg, { timeout: STEP_MS });
  } catch (error) {
    const seen = { messages: await messages(who), error: await text(who, "#error-text") };
    throw new Error(`${who.name}: timed out waiting for ${what}; page shows ${JSON.stringify(seen)}`);
  }
}

function messages(who) {
  return who.page.$$eval("#messages li", (items) =>
    items.map((li) => `${li.querySelector(".sender").textContent}: ${li.querySelector(".text").textContent}`),
  );
}

function untilMessages(who, expected) {
  return until(who, `messages ${JSON.stringify(expected)}`, (want) => {
    const items = [...document.querySelectorAll("#messages li")];
    const got = items.map((li) => `${li.querySelector(".sender").textContent}: ${li.querySelector(".text").textContent}`);
    return JSON.stringify(got) === JSON.stringify(want);
  }, expected);
}

const untilText = (who, selector, wanted) =>
  until(who, `${selector} = ${JSON.stringify(wanted)}`, ([sel, want]) => {
    const element = document.querySelector(sel);
    return element !== null && element.textContent.trim() === want;
  }, [selector, wanted]);

const untilState = (who, state) =>
  until(who, `status ${state}`, (want) => document.querySelector("#status").dataset.state === want, state);

async function post(who, message) {
  await who.page.fill("#message-text", message);
  await who.page.click("#post-form button[type=submit]");
  await until(who, `own message ${message}`, (want) =>
    [...document.querySelectorAll("#messages .text")].some((span) => span.textContent === want), message);
}

async function members(who) {
  return who.page.$$eval("#member-list li", (items) => items.map((li) => li.textContent));
}

async function scenario(browser, cable, aliceBase) {
  const alice = await user(browser, "alice");
  const bob = await user(browser, "bob");

  step("alice signs in with a #token= link and creates a room");
  await alice.page.goto(`${aliceBase}/#token=${process.env.TOKEN_ALICE}`);
  await untilText(alice, "#user", "alice");
  result.aliceUrlAfterSignIn = alice.page.url();
  const cookie = (await alice.context.cookies()).find((c) => c.name === "switchboard_token");
  result.aliceCookie = cookie && { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, path: cookie.path };
  result.aliceCookieReadableByScript = await alice.page.evaluate(() => document.cookie.includes("switchboard_token"));
  await alice.page.fill("#room-id", "lobby");
  await alice.page.click("#create-room-form button[type=submit]");
  await untilText(alice, "#room-title", "lobby");
  await untilState(alice, "live");
  await post(alice, "hello from alice");

  step("bob signs in by pasting his token, picks the room, sees its history");
  await bob.page.goto(`${BASE}/`);
  await bob.page.fill("#token", process.env.TOKEN_BOB);
  await bob.page.click("#sign-in-form button[type=submit]");
  await untilText(bob, "#user", "bob");
  await bob.page.click('#room-list button[data-room="rooms/lobby"]');
  await untilState(bob, "live");
  await untilMessages(bob, ["alice: hello from alice"]);

  step("each sees the other's messages live, and who is here");
  await post(bob, "hi alice");
  await untilMessages(alice, ["alice: hello from alice", "bob: hi alice"]);
  await post(alice, "hi bob");
  await untilMessages(bob, ["alice: hello from alice", "bob: hi alice", "alice: hi bob"]);
  await until(alice, "bob in the member list", () =>
    [...document.querySelectorAll("#member-list li")].some((li) => li.textContent === "bob"));
  await until(bob, "alice in the member list", () =>
    [...document.querySelectorAll("#member-list li")].some((li) => li.textContent === "alice"));
  result.aliceMembers = await members(alice);
  result.bobMembers = await members(bob);

  step("bob types: alice sees the indicator");
  await bob.page.locator("#message-text").pressSequentially("typing");
  await untilText(alice, "#typing", "bob is typing…");
  result.typingShownToAlice = await text(alice, "#typing");
  await alice.page.screenshot({ path: join(ARTIFACTS, "webpage-alice-typing.png") });

  step("a bad room id: the Status message is shown");
  await bob.page.fill("#room-id", "Not A Room");
  await bob.page.click("#create-room-form button[type=submit]");
  await until(bob, "an error", () => !document.querySelector("#error").hidden);
  result.errorShownToBob = await text(bob, "#error-text");
  await bob.page.click("#error-close");

  step("alice's connections are cut; bob posts three messages; alice comes back");
  cable.unplug();
  await untilState(alice, "reconnecting");
  await until(bob, "alice to leave the member list", () =>
    ![...document.querySelectorAll("#member-list li")].some((li) => li.textContent === "alice"));
  result.bobMembersWhileAliceIsCut = await members(bob);
  const missed = ["missed 1", "missed 2", "missed 3"];
  for (const message of missed) await post(bob, message);
  cable.plugIn();
  const everything = [
    "alice: hello from alice", "bob: hi alice", "alice: hi bob", ...missed.map((m) => `bob: ${m}`),
  ];
  await untilMessages(alice, everything);
  await untilState(alice, "live");
  await post(alice, "back online");
  everything.push("alice: back online");
  await untilMessages(bob, everything);
  await untilMessages(alice, everything);
  await until(bob, "alice back in the member list", () =>
    [...document.querySelectorAll("#member-list li")].some((li) => li.textContent === "alice"));
  result.bobMembersAfterAliceIsBack = await members(bob);

  result.aliceMessages = await messages(alice);
  result.bobMessages = await messages(bob);
  result.aliceFeed = await alice.page.$eval("#status", (s) => ({ ...s.dataset }));
  result.bobFeed = await bob.page.$eval("#status", (s) => ({ ...s.dataset }));
  result.aliceError = (await alice.page.locator("#error").isVisible()) ? await text(alice, "#error-text") : "";
  result.screenshots = [join(ARTIFACTS, "webpage-alice.png"), join(ARTIFACTS, "webpage-bob.png")];
  await alice.page.screenshot({ path: result.screenshots[0] });
  await bob.page.screenshot({ path: result.screenshots[1] });

  step("bob opens a room with a long history: newest page first, then older on demand");
  const archive = Number(process.env.ARCHIVE_SIZE);
  await bob.page.click('#room-list button[data-room="rooms/archive"]');
  await until(bob, "the newest page", () => document.querySelectorAll("#messages li").length === 50);
  result.archiveFirstPage = await messages(bob);
  result.loadOlderShown = await bob.page.locator("#load-older").isVisible();
  await bob.page.click("#load-older");
  await until(bob, "the whole history", (n) => document.querySelectorAll("#messages li").length === n, archive);
  result.archiveAll = await messages(bob);
  result.loadOlderShownAtTheStart = await bob.page.locator("#load-older").isVisible();

  step("bob signs out: the cookie is cleared");
  await bob.page.click("#sign-out");
  await until(bob, "the sign-in form", () => !document.querySelector("#sign-in").hidden);
  result.bobCookiesAfterSignOut = (await bob.context.cookies()).map((c) => c.name);
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const cable = new Cable(new URL(BASE));
  const aliceBase = await cable.listen();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
  });
  try {
    await scenario(browser, cable, aliceBase);
    result.ok = true;
  } catch (error) {
    result.ok = false;
    result.failure = String(error?.message ?? error);
  } finally {
    await browser.close();
    cable.close();
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
