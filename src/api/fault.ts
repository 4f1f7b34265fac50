/**
 * The one fault mapper: every error an API handler throws becomes Cinder's
 * fault body here, e.g. `{"itemNotFound": {"code": 404, "message": "…"}}`.
 * Unknown errors become a generic 500 and are logged with the request id;
 * their text never reaches the client.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { BasaltError } from '../errors/index.ts';

/** Cinder's fault names by HTTP status; anything else is `computeFault`. */
const FAULT_NAMES: Record<number, string> = {
  400: 'badRequest', 401: 'unauthorized', 403: 'forbidden', 404: 'itemNotFound', 405: 'badMethod',
  409: 'conflictingRequest', 413: 'overLimit', 415: 'badMediaType', 501: 'notImplemented', 503: 'serviceUnavailable',
};

/** The fault body for a status and message. */
export function faultBody(status: number, message: string): Record<string, { code: number; message: string }> {
  return { [FAULT_NAMES[status] ?? 'computeFault']: { code: status, message } };
}

/** Fastify error handler. */
export function handleError(err: FastifyError | Error, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  let status: number;
  let message: string;
  if (err instanceof BasaltError) {
    status = err.status;
    message = status >= 500 && err.code === 'INTERNAL' ? 'The server has either erred or is incapable of performing the requested operation.' : err.message;
    if (status >= 500) req.log.error({ err }, 'request failed');
  } else if ((err as FastifyError).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    status = 415;
    message = 'Unsupported Content-Type';
  } else if ((err as FastifyError).code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    status = 413;
    message = 'Request is too large.';
  } else if ((err as FastifyError).code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err instanceof SyntaxError
    || (err as FastifyError).code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    status = 400;
    message = 'Malformed request body';
  } else {
    status = 500;
    message = 'The server has either erred or is incapable of performing the requested operation.';
    req.log.error({ err }, 'unexpected error');
  }
  return reply.code(status).type('application/json').send(faultBody(status, message));
}
