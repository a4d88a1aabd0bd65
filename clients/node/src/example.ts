// The example client: exercises ChatStore through a router and checks what a chat service
// relies on. Exits 0 only if every check held; otherwise prints what failed and exits 1
// (2 if it ran out of time).
//
//   node dist/example.js HOST:PORT        (the router address scrollback-local prints)
import { randomBytes } from "node:crypto";

import { type Bytes, ChatStoreClient, ChatStoreError, Direction, ErrorCode } from "./client.js";

const kRunBudgetMs = 30_000; // The whole run, connection included.
const kInboxWaitMs = 10_000; // Inbox fan-out is asynchronous: how long to poll for it.
const kMaxBodyBytes = 64 * 1024; // ShardLimits.max_body_bytes, the default node limit.

class CheckFailed extends Error {}

function check(ok: boolean, what: string): void {
  if (!ok) throw new CheckFailed(what);
  console.log(`  ok  ${what}`);
}

// A random id in [1, 2^63): unique without coordination (docs/client-guide.md, choosing ids).
function randomId(): bigint {
  return (randomBytes(8).readBigUInt64BE() >> 1n) | 1n;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

// Calls `fn` and returns the ChatStoreError it throws; fails the check if it throws nothing.
async function expectError(what: string, fn: () => Promise<unknown>): Promise<ChatStoreError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof ChatStoreError) return err;
    throw err;
  }
  throw new CheckFailed(`${what}: expected an error, the call succeeded`);
}

async function run(address: string): Promise<void> {
  const client = await ChatStoreClient.connect(address);
  try {
    const conv = randomId();
    const alice = randomId();
    const bob = randomId();
    console.log(`example: router ${address}, conversation ${conv}, users ${alice} and ${bob}`);
    // Alice's client message ids: one per message, reused only when retrying that message.
    const idPrefix = `example-${randomBytes(8).toString("hex")}`;
    const fromAlice = (id: string, body: Bytes) =>
      ({ convId: conv, senderId: alice, clientMsgId: `${idPrefix}-${id}`, body });

    // A conversation: alice creates it with bob as a founding member (no system message).
    const created = await client.createConversation(conv, alice, [bob], "example");
    check(created.convId === conv && created.memberCount === 2, "conversation created, 2 members");

    // A send, then its retry with the same clientMsgId: answered as a duplicate, same seq.
    const first = await client.sendMessage(fromAlice("1", "hello"));
    check(first.seq === 1n && !first.duplicate, `first send has seq 1 (got ${first.seq})`);
    const retry = await client.sendMessage(fromAlice("1", "hello"));
    check(
      retry.duplicate && retry.seq === first.seq,
      `its retry is a duplicate of seq 1 (got seq ${retry.seq}, duplicate ${retry.duplicate})`,
    );

    // Four more messages in one batch (each item succeeds or fails on its own).
    const batch = await client.sendBatch(["2", "3", "4", "5"].map((n) => fromAlice(n, `msg ${n}`)));
    const seqs = batch.map((r) => (r instanceof ChatStoreError ? r.message : r.seq)).join();
    check(seqs === "2,3,4,5", `a batch of 4 sends gets seqs 2..5 (got ${seqs})`);

    // History, newest first, in pages of 2: [5 4] [3 2] [1]. Each page's nextCursorSeq is the
    // exclusive cursor for the next one; hasMore turns false on the page that reaches seq 1.
    const seen: bigint[] = [];
    let cursorSeq = 0n; // 0: from the newest.
    for (let pages = 0; ; ++pages) {
      if (pages === 5) throw new CheckFailed("history paging did not end after 5 pages of 2");
      const page = await client.readHistory({
        convId: conv,
        direction: Direction.NEWEST_FIRST,
        cursorSeq,
        limit: 2,
      });
      seen.push(...page.messages.map((m) => m.seq));
      if (!page.hasMore) break;
      cursorSeq = page.nextCursorSeq;
    }
    check(seen.join() === "5,4,3,2,1", `history pages newest first give 5..1 (got ${seen.join()})`);
    const oldest = await client.readHistory({
      convId: conv,
      direction: Direction.OLDEST_FIRST,
      limit: 1,
    });
    const firstBody = text(oldest.messages.get(0).body.toUint8Array());
    check(oldest.hasMore && firstBody === "hello", "an oldest-first page starts with seq 1's body");

    // Bob's inbox: fan-out is asynchronous, so poll until the conversation shows seq 5.
    const deadline = Date.now() + kInboxWaitMs;
    let unread = -1n;
    for (;;) {
      const inbox = await client.listInbox(bob, new Uint8Array(), 20);
      const entry = inbox.entries.find((e) => e.convId === conv);
      if (entry && entry.lastSeq === 5n) {
        unread = entry.unreadCount;
        break;
      }
      if (Date.now() > deadline) {
        throw new CheckFailed(`the conversation did not reach bob's inbox in ${kInboxWaitMs} ms`);
      }
      await sleep(50);
    }
    check(unread === 5n, `bob's inbox shows the conversation at seq 5, 5 unread (got ${unread})`);
    const read = await client.markRead(bob, conv, 5n);
    check(read.unreadCount === 0n && read.readSeq === 5n, "markRead moves bob's read cursor to 5");

    // The body limit at its edge: 64 KiB is accepted (and read back whole: a reply larger than
    // one socket read), one byte more is invalidArgument naming the field.
    const largest = randomBytes(kMaxBodyBytes);
    const sentLargest = await client.sendMessage(fromAlice("64k", largest));
    const readLargest = await client.getMessage(conv, sentLargest.seq);
    check(largest.equals(readLargest.body.toUint8Array()), "a 64 KiB body is read back intact");
    // A semi-sync send: acknowledged once a replica has it too (the local cluster keeps 3
    // copies), so a failover would not lose it.
    const durable = await client.sendMessage(fromAlice("semi-sync", "kept twice"), {
      ack: "semi-sync",
      timeoutMs: 5000,
    });
    check(durable.seq > 0n && durable.token.lsn > 0n, `a semi-sync send is acknowledged (seq ${durable.seq})`);

    // Read-your-writes from a replica: the send's token, passed back with a session read.
    const mine = await client.sendMessage(fromAlice("session", "read me back"));
    const readMine = await client.getMessage(conv, mine.seq, {
      consistency: "session",
      token: mine.token,
    });
    check(
      new TextDecoder().decode(readMine.body.toUint8Array()) === "read me back" && mine.token.lsn > 0n,
      `a session read with the send's token sees it (lsn ${mine.token.lsn})`,
    );
    const stale = await client.readHistory({ convId: conv, limit: 1 }, { consistency: "replica" });
    check(stale.messages.length === 1, "a replica read of history answers");
    const tooBig = await expectError("a body over 64 KiB", () =>
      client.sendMessage(fromAlice("too-big", new Uint8Array(kMaxBodyBytes + 1))),
    );
    check(
      tooBig.code === ErrorCode.INVALID_ARGUMENT && tooBig.field === "body" && !tooBig.retryable,
      `a body over 64 KiB is invalidArgument naming "body" (got ${tooBig.message})`,
    );

    // "Not found" is a typed error too.
    const missing = await expectError("a missing message", () => client.getMessage(conv, 999n));
    check(
      missing.code === ErrorCode.NOT_FOUND,
      `getMessage of seq 999 is notFound (got ${missing.message})`,
    );
  } finally {
    client.close();
  }
}

async function main(): Promise<number> {
  const address = process.argv[2];
  if (!address || process.argv.length > 3) {
    console.error("usage: node dist/example.js HOST:PORT   (a scrollback-router's address)");
    return 2;
  }
  try {
    await run(address);
    console.log("example: every check passed");
    return 0;
  } catch (err) {
    const what = err instanceof CheckFailed ? `check failed: ${err.message}` : String(err);
    console.error(`example: FAILED: ${what}`);
    return 1;
  }
}

// Bound the run: a hung connection or call must not hang CI. unref(): the timer alone does not
// keep the process alive.
setTimeout(() => {
  console.error(`example: FAILED: did not finish within ${kRunBudgetMs / 1000} s`);
  process.exit(2);
}, kRunBudgetMs).unref();

// Exit explicitly: nothing left behind (a socket, a timer) may keep a finished run alive.
main().then((code) => process.exit(code));
