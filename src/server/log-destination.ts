/**
 * Where `basalt server` writes its JSON log lines: standard output, through
 * pino's asynchronous buffer, made safe for a destination that cannot be
 * written (stdout redirected to a file on a full filesystem).
 */
import fs from 'node:fs';
import pino from 'pino';
import PinoPretty from 'pino-pretty';

/**
 * Most bytes of log lines held while the destination cannot be written; lines
 * beyond are dropped (and counted) rather than growing the process without
 * bound while a disk is full.
 */
export const LOG_BUFFER_MAX_BYTES = 16 * 1024 * 1024;

/**
 * The destination stream of the server's logger. Log lines leave through an
 * asynchronous buffer: a synchronous write to a slow reader (a pipe, journald)
 * blocks the event loop, and the database — not the log — is the record of
 * what happened (bench/api: 100 creates 2.3 s -> 1.3 s with stdout on a pipe).
 *
 * A write that fails (ENOSPC, EIO) does not crash the process, as the stream's
 * unhandled `error` event otherwise would: the first failure of an episode is
 * said once on standard error, lines wait in the buffer (up to
 * {@link LOG_BUFFER_MAX_BYTES}, then are dropped) and are written again with the
 * next line; the first write that works ends the episode, with a line saying
 * how many were dropped. (pino's own default destination only ignores EPIPE.)
 */
export function logDestination(fd = 1): pino.DestinationStream & NodeJS.EventEmitter {
  const stream = pino.destination({ dest: fd, sync: false, maxLength: LOG_BUFFER_MAX_BYTES });
  let failing = false;
  let dropped = 0;
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (failing) return;
    failing = true;
    try {
      fs.writeSync(2, `basalt: log lines cannot be written (${err.code ?? err.message}); they are kept up to ${LOG_BUFFER_MAX_BYTES} bytes and written when the destination works again\n`);
    } catch { /* nowhere left to say it */ }
  });
  stream.on('drop', () => { dropped++; });
  stream.on('write', () => {
    if (!failing) return;
    failing = false;
    const line = JSON.stringify({ level: 40, time: Date.now(), service: 'basalt', dropped, msg: 'log lines can be written again; lines beyond the buffer were dropped meanwhile' });
    dropped = 0;
    stream.write(`${line}\n`);
  });
  return stream;
}

/** The two shapes of the server's log: JSON lines for machines, one readable line per event for a terminal. */
export type LogFormat = 'json' | 'pretty';

/**
 * A logger for `basalt server`: JSON lines (ISO times, so a line read alone
 * says when) through {@link logDestination}, or with `pretty` one line per
 * event for a person at a terminal (pino-pretty: local time, level, the
 * request id first when there is one, then the message and its fields).
 */
export function serverLogger(level: string, format: LogFormat): pino.Logger {
  const options = { level, base: { service: 'basalt' }, timestamp: pino.stdTimeFunctions.isoTime };
  if (format === 'json') return pino(options, logDestination());
  const pretty = PinoPretty({
    destination: 1, sync: false, colorize: Boolean(process.stdout.isTTY), translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,service,request_id', messageFormat: '{if request_id}[{request_id}] {end}{msg}', singleLine: true,
  });
  return pino(options, pretty);
}
