/**
 * The one fault mapper: every error an API handler throws becomes Cinder's
 * fault body here, e.g. `{"itemNotFound": {"code": 404, "message": "…"}}`.
 * Unknown errors become a generic 500 and are logged with the request id;
 * their text never reaches the client. A write refused because the state
 * directory is full is a 413 `overLimit` (503 when it fails to write) with
 * `Retry-After`, logged at debug (the database logs each episode once); a
 * PostgreSQL database out of reach is a 503 with `Retry-After`, one log line
 * without a stack. A client's mistake the web framework
 * catches (a body that is too large, aborted or not JSON, a path that is not
 * valid percent-encoding or names nothing) is answered with its status as a
 * fault too, and logged once at debug level without a stack: a client must not
 * be able to flood the log.
 */
import http from 'node:http';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { BasaltError, isStateDirectoryUnwritable } from '../errors/index.ts';

/** Cinder's fault names by HTTP status; anything else is `computeFault` (as in Cinder's `Fault`). */
const FAULT_NAMES: ReadonlyMap<number, string> = new Map([
  [400, 'badRequest'], [401, 'unauthorized'], [403, 'forbidden'], [404, 'itemNotFound'], [405, 'badMethod'],
  [409, 'conflictingRequest'], [413, 'overLimit'], [415, 'badMediaType'], [501, 'notImplemented'], [503, 'serviceUnavailable'],
]);

/**
 * Seconds a client is asked to wait (`Retry-After`) before writing again while
 * the state directory is full: freeing space takes an operator, not a moment.
 */
const STATE_DIRECTORY_RETRY_AFTER_S = 30;

/** Seconds a client is asked to wait while the database is out of reach: a restart or a failover takes seconds. */
const DATABASE_RETRY_AFTER_S = 5;

/** The message of Cinder's generic 500. */
const INTERNAL_MESSAGE = 'The server has either erred or is incapable of performing the requested operation.';

/**
 * The web framework's (and Node's) errors a client causes, by code: the status
 * and message of their fault. Any other error with a 4xx `statusCode` keeps its
 * status with the status's own words.
 */
const CLIENT_ERRORS: ReadonlyMap<string, readonly [number, string]> = new Map([
  ['FST_ERR_CTP_INVALID_MEDIA_TYPE', [415, 'Unsupported Content-Type']],
  ['FST_ERR_CTP_INVALID_TYPE', [415, 'Unsupported Content-Type']],
  ['FST_ERR_CTP_EMPTY_TYPE', [415, 'Unsupported Content-Type']],
  ['FST_ERR_CTP_BODY_TOO_LARGE', [413, 'Request is too large.']],
  ['FST_ERR_CTP_EMPTY_JSON_BODY', [400, 'Malformed request body']],
  ['FST_ERR_CTP_INVALID_JSON_BODY', [400, 'Malformed request body']],
  ['FST_ERR_CTP_INVALID_CONTENT_LENGTH', [400, 'Malformed request body: its length differs from Content-Length']],
  ['ECONNRESET', [400, 'Malformed request body: the client aborted it']],
  ['FST_ERR_BAD_URL', [400, 'Malformed request URL: the path is not valid percent-encoding']],
  // A path segment longer than the router takes names nothing that exists.
  ['FST_ERR_MAX_PARAM_LENGTH', [404, 'The resource could not be found.']],
]);

/** The fault body for a status and message. */
export function faultBody(status: number, message: string): Record<string, { code: number; message: string }> {
  return { [FAULT_NAMES.get(status) ?? 'computeFault']: { code: status, message } };
}

/** The status and message of a client's mistake the framework reported, or undefined for anything else. */
function clientError(err: FastifyError | Error): readonly [number, string] | undefined {
  const code = (err as FastifyError).code;
  const known = code === undefined ? undefined : CLIENT_ERRORS.get(code);
  if (known) return known;
  if (err instanceof SyntaxError) return [400, 'Malformed request body'];
  const status = (err as FastifyError).statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return [status, http.STATUS_CODES[status] ?? 'Bad Request'];
  return undefined;
}

/**
 * Fastify error handler (and, through {@link handleFrameworkError}, the
 * router's): answers every error as a Cinder fault.
 */
export function handleError(err: FastifyError | Error, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  let status: number;
  let message: string;
  const client = err instanceof BasaltError ? undefined : clientError(err);
  if (err instanceof BasaltError) {
    status = err.status;
    message = status >= 500 && err.code === 'INTERNAL' ? INTERNAL_MESSAGE : err.message;
    if (isStateDirectoryUnwritable(err)) {
      // The database logged the episode once, with its cause; each refused request only at debug.
      req.log.debug({ code: err.code, status }, 'write refused: state directory unwritable');
      reply.header('Retry-After', String(STATE_DIRECTORY_RETRY_AFTER_S));
    } else if (err.code === 'DATABASE_UNAVAILABLE' || err.code === 'COORDINATION_UNAVAILABLE') {
      // An outage the readiness check reports too: one line per request, no stack.
      req.log.warn({ code: err.code, cause: (err.cause as Error | undefined)?.message }, 'request failed: a service Basalt runs on is unreachable');
      reply.header('Retry-After', String(DATABASE_RETRY_AFTER_S));
    } else if (status >= 500) req.log.error({ err }, 'request failed');
  } else if (client) {
    [status, message] = client;
    // The client's mistake, not the service's: one quiet line, no stack.
    req.log.debug({ code: (err as FastifyError).code, status }, 'client error');
  } else {
    status = 500;
    message = INTERNAL_MESSAGE;
    req.log.error({ err }, 'unexpected error');
  }
  return reply.code(status).type('application/json').send(faultBody(status, message));
}

/**
 * Fastify's `frameworkErrors` handler: the router's own errors (a path that
 * is not valid percent-encoding, a segment longer than it takes) as Cinder
 * faults. These requests skip the `onRequest` hooks, so the request id is
 * set here.
 */
export function handleFrameworkError(err: FastifyError, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  reply.header('x-openstack-request-id', req.id);
  // The router answers before the body is read: when there is one (perhaps malformed, found
  // only after this answer), the connection ends with the answer instead of being cut later.
  if (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0) reply.header('Connection', 'close');
  return handleError(err, req, reply);
}
