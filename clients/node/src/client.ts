// A small ChatStore client (schema/chatstore.capnp) over one Cap'n Proto connection, usually to
// a scrollback-router. Each method makes one call with a deadline and turns the reply's typed
// error into a thrown ChatStoreError; replies are the generated readers (src/gen/, built from
// the schema by `npm run generate`).
//
// Contracts worth knowing (docs/client-guide.md has the rest):
//   - Ids are unsigned 64-bit: bigint. 0 is never a valid conversation, user or seq.
//   - Bodies and client message ids are bytes (Data); titles are UTF-8 text.
//   - sendMessage is idempotent on (convId, senderId, clientMsgId): a retry answers with the
//     first seq and duplicate = true, so retrying a send after any failure is safe.
//   - A ChatStoreError with `retryable` set may succeed later (after a pause); any other code
//     will fail the same way again.
import { Connection, ConnectionError, type ConnectOptions } from "./transport.js";
import {
  ChatStore,
  Consistency,
  Direction,
  type ChatStore$Client,
  type HistoryRequest,
  type ReadOptions as WireReadOptions,
  type WriteOptions as WireWriteOptions,
  AckMode,
  type SendRequest,
  type SendResult,
} from "./gen/chatstore.js";
import {
  ErrorCode,
  type Conversation,
  type Error as WireError,
  type HistoryPage,
  type InboxEntry,
  type Message,
} from "./gen/types.js";

export { Direction, ErrorCode };

// The schema's name of each ErrorCode value ("notFound"), derived from the generated constants.
const kCodeNames = new Map<number, string>(
  Object.entries(ErrorCode).map(([key, value]) => [
    value,
    key.toLowerCase().replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
  ]),
);

// Retryable after a pause (schema/types.capnp, ErrorCode). A router already retries notOwner
// and unavailable a few times with backoff before answering with them.
const kRetryable = new Set<number>([
  ErrorCode.NOT_OWNER,
  ErrorCode.NOT_PRIMARY,
  ErrorCode.STALE_EPOCH,
  ErrorCode.OVERLOADED,
  ErrorCode.UNAVAILABLE,
]);
// notReplicated (a semi-sync write no replica confirmed in time) is not in the list: the write
// is committed on the primary. Retrying a send is safe (idempotent on clientMsgId); other
// writes should check the state first.

// A typed error from Scrollback, or `unavailable` for a call whose connection failed or whose
// deadline passed (its outcome is then unknown).
export class ChatStoreError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly field = "", // invalidArgument: the offending input (engine name, e.g. "body").
    readonly mapVersion = 0n, // notOwner: the node's shard-map version.
  ) {
    super(`${kCodeNames.get(code) ?? `code ${code}`}${field ? ` (${field})` : ""}: ${message}`);
    this.name = "ChatStoreError";
  }
  get codeName(): string {
    return kCodeNames.get(this.code) ?? `code ${this.code}`;
  }
  get retryable(): boolean {
    return kRetryable.has(this.code);
  }
}

// The one place that reads the schema's Error struct. `holder` is whatever struct carries an
// `error` field: today the results of most calls, SendResult for sendMessage (under `result`)
// and for each sendBatch item. Absent, or code `ok`, means success.
export function errorOf(holder: { _hasError(): boolean; error: WireError }): ChatStoreError | null {
  if (!holder._hasError() || holder.error.code === ErrorCode.OK) return null;
  const e = holder.error;
  return new ChatStoreError(e.code, e.message, e.field, e.mapVersion);
}

function throwIfError(holder: { _hasError(): boolean; error: WireError }): void {
  const error = errorOf(holder);
  if (error) throw error;
}

export type Bytes = Uint8Array | string; // A string is sent as its UTF-8 bytes.

export interface SendInput {
  convId: bigint;
  senderId: bigint;
  clientMsgId: Bytes; // 1..64 bytes, unique per (conversation, sender); reuse it on retries.
  body: Bytes; // 1 byte .. 64 KiB (default node limit).
}

// Where a write landed: pass it back in ReadOptions.token to read your own writes.
export interface WriteToken {
  shardId: bigint;
  epoch: bigint;
  lsn: bigint;
}

export interface Sent {
  seq: bigint;
  sentAtMs: bigint;
  duplicate: boolean; // A retry of an earlier send: nothing was written, seq is the first's.
  token: WriteToken;
}

// Which copy of a shard may answer a read (docs/replication.md). Default: strong (the primary).
//  - "replica": any replica at most maxLagMs stale (default: the node's, 1 s), else the primary.
//  - "session": a replica that has applied `token` (read-your-writes), else the primary.
export interface ReadOptions {
  consistency?: "strong" | "replica" | "session";
  token?: WriteToken;
  maxLagMs?: number;
}

// When a write is acknowledged (docs/replication.md, Acknowledgement). Default: the node's.
//  - "async": once the primary committed it.
//  - "semi-sync": once a replica applied it too; else notReplicated after timeoutMs (default:
//    the node's, 1 s). The write may then still be committed: retrying is safe.
export interface WriteOptions {
  ack?: "async" | "semi-sync";
  timeoutMs?: number;
}

// How long a node may hold a write's reply for its replicas, added to the call's deadline.
function ackWaitMs(write: WriteOptions | undefined): number {
  return write === undefined || write.ack === "async" ? 0 : write.timeoutMs ?? 0;
}

function setWrite(init: () => WireWriteOptions, write: WriteOptions | undefined): void {
  if (write === undefined || (write.ack === undefined && write.timeoutMs === undefined)) return;
  const out = init();
  out.ack = write.ack === "semi-sync" ? AckMode.SEMI_SYNC
    : write.ack === "async" ? AckMode.ASYNC
    : AckMode.DEFAULT;
  out.timeoutMs = write.timeoutMs ?? 0;
}

function setRead(init: () => WireReadOptions, read: ReadOptions | undefined): void {
  if (read === undefined || (read.consistency ?? "strong") === "strong") return;
  const out = init();
  out.consistency = read.consistency === "replica" ? Consistency.REPLICA : Consistency.SESSION;
  out.maxLagMs = read.maxLagMs ?? 0;
  if (read.token !== undefined) {
    const token = out._initToken();
    token.shardId = read.token.shardId;
    token.epoch = read.token.epoch;
    token.lsn = read.token.lsn;
  }
}

function sentOf(r: SendResult): Sent {
  const t = r.token;
  return {
    seq: r.seq,
    sentAtMs: r.sentAtMs,
    duplicate: r.duplicate,
    token: { shardId: t.shardId, epoch: t.epoch, lsn: t.lsn },
  };
}

export interface HistoryQuery {
  convId: bigint;
  direction?: Direction; // Default: newest first.
  cursorSeq?: bigint; // Exclusive; 0 (default) starts at the end in `direction`.
  fromTimeMs?: bigint; // Instead of cursorSeq: start at this server time (inclusive).
  limit: number; // 1..200 (default node limit).
}

export interface InboxPage {
  entries: InboxEntry[]; // Most recent activity first.
  nextCursor: Uint8Array; // Opaque; pass back to continue. Empty when hasMore is false.
  hasMore: boolean;
}

export interface ClientOptions extends ConnectOptions {
  // Default: 5,000 ms, as Scrollback's own smart client. A call with no reply by then fails
  // with ChatStoreError `unavailable` (its outcome unknown).
  callTimeoutMs?: number;
}

function setBytes(init: (length: number) => { copyBuffer(src: Uint8Array): void }, v: Bytes) {
  const bytes = typeof v === "string" ? new TextEncoder().encode(v) : v;
  init(bytes.length).copyBuffer(bytes);
}

function fillSend(out: SendRequest, input: SendInput): void {
  out.convId = input.convId;
  out.senderId = input.senderId;
  setBytes((n) => out._initClientMsgId(n), input.clientMsgId);
  setBytes((n) => out._initBody(n), input.body);
}

export class ChatStoreClient {
  private constructor(
    private readonly connection: Connection,
    // The bootstrap capability of a router or node, used as a ChatStore. (A node's bootstrap is
    // a Node, which extends ChatStore; capnp-es's generated Node client lacks the inherited
    // methods, so ChatStore is the right type for both.)
    readonly raw: ChatStore$Client,
    private readonly timeoutMs: number,
  ) {}

  // Connects to a router (or node) at "host:port".
  static async connect(address: string, options: ClientOptions = {}): Promise<ChatStoreClient> {
    const connection = await Connection.connect(address, options);
    return new ChatStoreClient(
      connection,
      connection.rpc.bootstrap(ChatStore),
      options.callTimeoutMs ?? 5000,
    );
  }

  close(): void {
    this.connection.close();
  }

  // Awaits one call with the deadline; connection failures become ChatStoreError `unavailable`.
  // Public so that callers can reach the methods not wrapped here through `raw`.
  async call<T>(what: string, reply: { promise(): Promise<T> }, extraMs = 0): Promise<T> {
    try {
      return await this.connection.call(what, reply.promise(), this.timeoutMs + extraMs);
    } catch (err) {
      if (err instanceof ConnectionError) {
        throw new ChatStoreError(ErrorCode.UNAVAILABLE, err.message);
      }
      // An RPC exception: the server or the connection failed (schema: treat as unavailable).
      throw new ChatStoreError(ErrorCode.UNAVAILABLE, `${what}: ${String(err)}`);
    }
  }

  // Fails with alreadyExists if convId is taken (also when a retry of this very call already
  // created it: compare getConversation's creatorId to tell).
  async createConversation(
    convId: bigint,
    creatorId: bigint,
    memberIds: bigint[],
    title = "",
    write?: WriteOptions,
  ): Promise<Conversation> {
    const reply = await this.call(
      "createConversation",
      this.raw.createConversation((p) => {
        p.convId = convId;
        p.creatorId = creatorId;
        const members = p._initMemberIds(memberIds.length);
        memberIds.forEach((id, i) => members.set(i, id));
        p.title = title;
        setWrite(() => p._initOptions(), write);
      }),
      ackWaitMs(write),
    );
    throwIfError(reply);
    return reply.conversation;
  }

  async getConversation(convId: bigint, read?: ReadOptions): Promise<Conversation> {
    const reply = await this.call(
      "getConversation",
      this.raw.getConversation((p) => {
        p.convId = convId;
        setRead(() => p._initOptions(), read);
      }),
    );
    throwIfError(reply);
    return reply.conversation;
  }

  async sendMessage(input: SendInput, write?: WriteOptions): Promise<Sent> {
    const reply = await this.call(
      "sendMessage",
      this.raw.sendMessage((p) => {
        fillSend(p._initRequest(), input);
        setWrite(() => p._initOptions(), write);
      }),
      ackWaitMs(write),
    );
    throwIfError(reply); // API version 2: the call's outcome is the top-level error.
    return sentOf(reply.result);
  }

  // Up to 1,000 sends in one call; one outcome per input, in order. Each send succeeds or fails
  // on its own; the call throws when it failed as a whole (its top-level error: e.g. too many
  // sends) or the connection failed.
  async sendBatch(inputs: SendInput[], write?: WriteOptions): Promise<Array<Sent | ChatStoreError>> {
    const reply = await this.call(
      "sendBatch",
      this.raw.sendBatch((p) => {
        const list = p._initRequests(inputs.length);
        inputs.forEach((input, i) => fillSend(list.get(i), input));
        setWrite(() => p._initOptions(), write);
      }),
      ackWaitMs(write),
    );
    throwIfError(reply);
    return reply.results.map(
      (r) => errorOf(r) ?? sentOf(r),
    );
  }

  // Throws notFound when the conversation or the message does not exist.
  async getMessage(convId: bigint, seq: bigint, read?: ReadOptions): Promise<Message> {
    const reply = await this.call(
      "getMessage",
      this.raw.getMessage((p) => {
        p.convId = convId;
        p.seq = seq;
        setRead(() => p._initOptions(), read);
      }),
    );
    throwIfError(reply);
    return reply.message;
  }

  async readHistory(query: HistoryQuery, read?: ReadOptions): Promise<HistoryPage> {
    const reply = await this.call(
      "readHistory",
      this.raw.readHistory((p) => {
        const r: HistoryRequest = p._initRequest();
        r.convId = query.convId;
        r.direction = query.direction ?? Direction.NEWEST_FIRST;
        r.cursorSeq = query.cursorSeq ?? 0n;
        r.hasFromTime = query.fromTimeMs !== undefined;
        r.fromTimeMs = query.fromTimeMs ?? 0n;
        r.limit = query.limit;
        setRead(() => p._initOptions(), read);
      }),
    );
    throwIfError(reply);
    return reply.page;
  }

  // A user's conversations by last activity. `cursor`: empty for the first page, then the
  // previous page's nextCursor.
  async listInbox(
    userId: bigint,
    cursor: Uint8Array,
    limit: number,
    read?: ReadOptions,
  ): Promise<InboxPage> {
    const reply = await this.call(
      "listInbox",
      this.raw.listInbox((p) => {
        p.userId = userId;
        if (cursor.length > 0) setBytes((n) => p._initCursor(n), cursor);
        p.limit = limit;
        setRead(() => p._initOptions(), read);
      }),
    );
    throwIfError(reply);
    return {
      entries: reply.entries.toArray(),
      nextCursor: reply._hasNextCursor()
        ? new Uint8Array(reply.nextCursor.toUint8Array()) // A copy, not a view of the reply.
        : new Uint8Array(),
      hasMore: reply.hasMore,
    };
  }

  // Moves the user's read cursor to `seq` (never backwards).
  async markRead(userId: bigint, convId: bigint, seq: bigint, write?: WriteOptions):
      Promise<InboxEntry> {
    const reply = await this.call(
      "markRead",
      this.raw.markRead((p) => {
        p.userId = userId;
        p.convId = convId;
        p.seq = seq;
        setWrite(() => p._initOptions(), write);
      }),
      ackWaitMs(write),
    );
    throwIfError(reply);
    return reply.entry;
  }
}
