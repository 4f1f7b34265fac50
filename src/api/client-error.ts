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
  // A response already under way on this connection must not be interleaved (as Node does).
  const pending = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (!socket.writable || pending?.headersSent) {
    socket.destroy();
    return;
  }
  const status = STATUS_BY_CODE.get(code) ?? 400;
  // A request being served (its body's chunks malformed, say) is logged by the fault mapper when it ends.
  if (!pending) this.log.debug({ code, status }, 'client error: request refused by the HTTP parser');
  const body = JSON.stringify(faultBody(status, MESSAGES.get(status)!));
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\n`
    + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  // Do not wait on a client that never reads: the answer is best effort.
  socket.setTimeout(5000, () => socket.destroy());
}

/**
 * The server's `connect` listener: a CONNECT request (a tunnel, which this API
 * does not offer) is answered 405 with a fault and `Connection: close`. Without
 * a listener Node would drop the connection without a word.
 */
export function refuseConnect(this: FastifyInstance, _req: http.IncomingMessage, socket: Socket): void {
  this.log.debug({ method: 'CONNECT' }, 'client error: CONNECT refused');
  const body = JSON.stringify(faultBody(405, 'CONNECT is not supported'));
  socket.on('error', () => { /* the client may already be gone */ });
  socket.end(
    `HTTP/1.1 405 ${http.STATUS_CODES[405]}\r\nConnection: close\r\nContent-Type: application/json\r\n`
    + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  socket.setTimeout(5000, () => socket.destroy());
}

/**
 * The server's `checkExpectation` listener: a request whose `Expect` is not
 * `100-continue` is answered 417 with a fault (Node's own answer has no body)
 * and `Connection: close`.
 */
export function refuseExpectation(this: FastifyInstance, req: http.IncomingMessage, res: http.ServerResponse): void {
  this.log.debug({ expect: req.headers.expect }, 'client error: expectation refused');
  const body = JSON.stringify(faultBody(417, 'Expectation Failed: only 100-continue is supported'));
  // Its body is never read: the connection ends after the answer.
  res.writeHead(417, { Connection: 'close', 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }).end(body);
}
