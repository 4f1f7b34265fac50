/**
 * Issue 13, defect 11: when a client disconnects (NBD_CMD_DISC) the server
 * flushes the volume; a flush that fails then cannot be reported to the
 * client any more, so it is logged at warn with the export's name instead of
 * being dropped: acknowledged writes may not be durable, and an operator must hear it.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import pino from 'pino';
import type { VolumeHandle } from '../../src/drivers/index.ts';
import { NbdServer } from '../../src/export/index.ts';
import { openExport } from '../helpers/nbd-raw.ts';

const REQUEST_MAGIC = 0x25609513;
const CMD_DISC = 2;

/** A small in-memory volume whose flush fails, as a disk that went away would. */
function failingFlushHandle(): VolumeHandle {
  const data = Buffer.alloc(1024 * 1024);
  return {
    sizeBytes: data.length,
    read: async (offset, length) => Buffer.from(data.subarray(offset, offset + length)),
    write: async (offset, chunk) => { chunk.copy(data, offset); },
    flush: async () => { throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }); },
    close: async () => undefined,
  };
}

test('issue 13 defect 11: a flush that fails when the client disconnects is logged, not dropped', async (t) => {
  const lines: Array<{ level: number; msg: string; export?: string; err?: { message: string } }> = [];
  const server = new NbdServer({
    provider: {
      find: async (name) => (name === 'vol' ? { name, readOnly: false, open: async () => failingFlushHandle() } : undefined),
      list: async () => [],
    },
    log: pino({ level: 'warn' }, { write: (line: string) => { lines.push(JSON.parse(line)); } }),
    dataPlane: 'event-loop',
  });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(() => server.close());

  const c = await openExport('127.0.0.1', port, 'vol');
  const disc = Buffer.alloc(28);
  disc.writeUInt32BE(REQUEST_MAGIC, 0);
  disc.writeUInt16BE(CMD_DISC, 6);
  const closed = once(c.sock, 'close');
  c.sock.write(disc);
  await closed; // the server ends the connection after its flush on disconnect

  const warned = lines.filter((l) => l.msg === 'NBD flush on disconnect failed');
  assert.equal(warned.length, 1, JSON.stringify(lines));
  assert.equal(warned[0]!.level, 40, 'at warn');
  assert.equal(warned[0]!.export, 'vol');
  assert.match(warned[0]!.err!.message, /EIO/);
});
