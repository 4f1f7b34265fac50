/**
 * The answer to a request Node's HTTP parser refuses before the web framework
 * sees it (a NUL or newline in a header value, headers too large, a request
 * line that is not HTTP, a request too slow to arrive): a Cinder fault with
 * `Connection: close`, then the connection ends. The parser cannot resume after
 * such an error, so the connection cannot be kept alive; saying so lets a
 * keep-alive client open a new one for its next request instead of meeting a
 * reset. Logged once at debug level without a stack: these are client mistakes.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { faultBody } from './fault.ts';

/** The status answering a parser error, by Node's error code; anything else is a 400. */
const STATUS_BY_CODE: ReadonlyMap<string, number> = new Map([
  ['ERR_HTTP_REQUEST_TIMEOUT', 408],
  ['HPE_HEADER_OVERFLOW', 431],
]);

/** The message of the fault, by status. */
const MESSAGES: ReadonlyMap<number, string> = new Map([
  [400, 'Malformed request: the HTTP request could not be parsed'],
  [408, 'Request timed out before it was complete'],
  [431, 'Request header fields are too large'],
]);

/** Connections already answered and being closed. */
const refused = new WeakSet<Socket>();

/**
 * Fastify's `clientErrorHandler` (Node's `clientError` event): answers as
 * described above, unless the connection is already gone or an answer has
 * started on it (then it is only closed).
 */
export function handleClientError(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket): void {
  const code = err.code ?? 'unknown';
  // The parser may report the rest of a refused connection again (its end, say): one line is enough.
  if (code === 'ECONNRESET' || socket.destroyed || refused.has(socket)) {
    if (!socket.destroyed && !socket.writable) socket.destroy();
    return;
  }
  refused.add(socket);
  // A request already being served on this connection (its body cut short, say) is
  // answered and logged by the fault mapper; a response under way must not be interleaved.
  const pending = (socket as Socket & { _httpMessage?: unknown })._httpMessage;
  if (!socket.writable || pending) {
    socket.destroy();
    return;
  }
  const status = STATUS_BY_CODE.get(code) ?? 400;
  this.log.debug({ code, status }, 'client error: request refused by the HTTP parser');
  const body = JSON.stringify(faultBody(status, MESSAGES.get(status)!));
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\n`
    + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  // Do not wait on a client that never reads: the answer is best effort.
  socket.setTimeout(5000, () => socket.destroy());
}
