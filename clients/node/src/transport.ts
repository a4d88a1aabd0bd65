// A Cap'n Proto RPC connection over TCP for capnp-es, which ships the RPC protocol (level 1)
// but no stream transport, and whose Conn.shutdown() only closes the transport: calls still in
// flight when a connection drops would never settle. This file supplies both halves:
//
//   - FrameReader: splits a byte stream into Cap'n Proto messages (standard stream framing).
//   - SocketTransport: capnp-es's Transport interface on a net.Socket.
//   - Connection: a transport plus an RPC Conn, where every call has a deadline and every call
//     still pending when the socket closes fails at once with ConnectionError.
import net from "node:net";

import { Conn, Message, type Transport } from "capnp-es";
import { Message as RpcMessage } from "capnp-es/capnp/rpc";

// Refuse frames larger than the server ever sends or accepts: Scrollback's nodes and routers
// read with a 64 MiB traversal limit (NodeOptions::max_message_bytes, RpcServerOptions).
const kMaxMessageBytes = 64 * 1024 * 1024;
// Cap'n Proto's C++ reader refuses 512 segments or more; such a count is a corrupt stream.
const kMaxSegments = 511;

// The standard Cap'n Proto stream framing, all integers little-endian
// (Cap'n Proto's "serialization over a stream", its encoding spec):
//
//   uint32             segment count minus one (N - 1)
//   uint32 x N         size of each segment, in 8-byte words
//   0 or 4 bytes       padding, so that the header is a whole number of words (present when
//                      N is even: 4 + 4N is then not a multiple of 8)
//   segments           N segments, back to back, sizes as above
//
// TCP delivers bytes, not messages: one read may hold several messages, or a part of one (a
// large message spans many reads; even its header may be split). FrameReader buffers chunks and
// copies each message out exactly once, when all its bytes have arrived.
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0; // Total bytes in `chunks`.

  // Adds a chunk read from the socket; returns the messages it completed (possibly none), each
  // as the bytes of one framed message (header included), ready for `new Message(bytes, false)`.
  // Throws on a frame that cannot be valid (too many segments, too large): the stream is then
  // out of step and the connection must be closed.
  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const messages: Buffer[] = [];
    for (;;) {
      const size = this.frameSize();
      if (size === undefined || this.buffered < size) return messages;
      messages.push(this.take(size));
    }
  }

  // The byte size of the first frame, header included, or undefined while its header is
  // incomplete.
  private frameSize(): number | undefined {
    if (this.buffered < 4) return undefined;
    const segmentCount = this.peek(4).readUInt32LE(0) + 1;
    if (segmentCount > kMaxSegments) {
      throw new Error(`malformed frame: ${segmentCount} segments (at most ${kMaxSegments})`);
    }
    const headerBytes = 4 * (segmentCount + 1) + (segmentCount % 2 === 0 ? 4 : 0);
    if (this.buffered < headerBytes) return undefined;
    const header = this.peek(headerBytes);
    let bodyBytes = 0;
    for (let i = 0; i < segmentCount; ++i) bodyBytes += header.readUInt32LE(4 + 4 * i) * 8;
    if (bodyBytes > kMaxMessageBytes) {
      throw new Error(`frame of ${bodyBytes} bytes exceeds the ${kMaxMessageBytes}-byte limit`);
    }
    return headerBytes + bodyBytes;
  }

  // The first `n` buffered bytes (n <= buffered), without consuming them.
  private peek(n: number): Buffer {
    if (this.chunks[0].length < n) {
      // A header split across reads: merge just the leading chunks that hold it.
      let count = 0;
      for (let bytes = 0; bytes < n; ++count) bytes += this.chunks[count].length;
      this.chunks.splice(0, count, Buffer.concat(this.chunks.slice(0, count)));
    }
    return this.chunks[0].subarray(0, n);
  }

  // Removes and returns the first `n` buffered bytes (n <= buffered) as one buffer.
  private take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      const used = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, used);
      filled += used;
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    this.buffered -= n;
    return out;
  }
}

// capnp-es's Transport on a connected socket. Conn reads by calling recvMessage() in a loop;
// rejecting it with `undefined` (as here, once the socket is closed) ends that loop quietly.
export class SocketTransport implements Transport {
  private readonly reader = new FrameReader();
  private readonly received: RpcMessage[] = [];
  private waiting: { resolve: (m: RpcMessage) => void; reject: (e?: unknown) => void } | null =
    null;
  private isClosed = false;
  // Settles once, when the socket closes, with the reason (an Error for a failure).
  readonly closed: Promise<Error>;

  constructor(private readonly socket: net.Socket) {
    let reason: Error | undefined;
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.isClosed = true;
        this.waiting?.reject(undefined);
        this.waiting = null;
        resolve(reason ?? new Error("connection closed"));
      });
    });
    socket.on("error", (err) => (reason ??= err)); // The first error is the cause.
    socket.on("data", (chunk: Buffer) => {
      try {
        for (const bytes of this.reader.push(chunk)) {
          this.deliver(new Message(bytes, /*packed=*/ false).getRoot(RpcMessage));
        }
      } catch (err) {
        socket.destroy(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  sendMessage(msg: RpcMessage): void {
    // Dropped once closed: every call still waiting has been failed by Connection.
    // No backpressure: the socket buffers what the kernel does not take yet.
    if (this.isClosed || this.socket.destroyed) return;
    this.socket.write(new Uint8Array(msg.segment.message.toArrayBuffer()));
  }

  recvMessage(): Promise<RpcMessage> {
    const next = this.received.shift();
    if (next) return Promise.resolve(next);
    if (this.isClosed) return Promise.reject(undefined);
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  close(): void {
    this.socket.destroy();
  }

  private deliver(message: RpcMessage): void {
    if (this.waiting) {
      const { resolve } = this.waiting;
      this.waiting = null;
      resolve(message);
    } else {
      this.received.push(message);
    }
  }
}

// The connection failed or was closed while a call waited, or a call outlived its deadline.
// Either way the call's outcome is unknown: it may or may not have been applied.
export class ConnectionError extends Error {
  constructor(
    message: string,
    readonly timedOut: boolean,
  ) {
    super(message);
    this.name = "ConnectionError";
  }
}

export interface ConnectOptions {
  // Default: 5,000 ms. How long to wait for the TCP connection.
  connectTimeoutMs?: number;
}

// One RPC connection. Contract: a promise returned by call() always settles, with the reply,
// with the server's RPC exception, or with ConnectionError (deadline passed, or socket closed).
export class Connection {
  private readonly pending = new Set<(err: ConnectionError) => void>();
  private closeReason: Error | null = null;

  private constructor(
    private readonly transport: SocketTransport,
    readonly rpc: Conn,
    readonly address: string,
  ) {
    transport.closed.then((reason) => {
      this.closeReason = reason;
      const err = new ConnectionError(`connection to ${address} lost: ${reason.message}`, false);
      for (const fail of this.pending) fail(err);
      this.pending.clear();
    });
  }

  // Connects to "host:port".
  static async connect(address: string, options: ConnectOptions = {}): Promise<Connection> {
    const colon = address.lastIndexOf(":");
    const host = address.slice(0, colon);
    const port = Number(address.slice(colon + 1));
    if (colon <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
      throw new Error(`address must be host:port, got "${address}"`);
    }
    const timeoutMs = options.connectTimeoutMs ?? 5000;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new ConnectionError(`connecting to ${address}: no answer in ${timeoutMs} ms`, true));
      }, timeoutMs);
      s.once("connect", () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once("error", (err) => {
        clearTimeout(timer);
        reject(new ConnectionError(`connecting to ${address}: ${err.message}`, false));
      });
    });
    const transport = new SocketTransport(socket);
    const rpc = new Conn(transport);
    // Conn's read loop ends with an error only on a protocol failure: close the connection,
    // which fails the calls in flight.
    rpc.onError = (err) => socket.destroy(err instanceof Error ? err : undefined);
    return new Connection(transport, rpc, address);
  }

  // Waits for `reply` (a call's result promise) for at most `timeoutMs`.
  call<T>(what: string, reply: Promise<T>, timeoutMs: number): Promise<T> {
    if (this.closeReason) {
      reply.catch(() => {}); // Never settles usefully; keep it from being reported.
      return Promise.reject(
        new ConnectionError(`${what}: connection to ${this.address} is closed`, false),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const fail = (err: ConnectionError) => {
        clearTimeout(timer);
        this.pending.delete(fail);
        reject(new ConnectionError(`${what}: ${err.message}`, err.timedOut));
      };
      const timer = setTimeout(
        () => fail(new ConnectionError(`no reply in ${timeoutMs} ms`, true)),
        timeoutMs,
      );
      this.pending.add(fail);
      reply.then(
        (value) => {
          if (!this.pending.delete(fail)) return; // Already failed (deadline or close).
          clearTimeout(timer);
          resolve(value);
        },
        (err) => {
          if (!this.pending.delete(fail)) return;
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  close(): void {
    this.transport.close();
  }
}
