/**
 * The drill's host, in a process of its own (test/functional/rbd-mirror-drill.test.ts):
 * opens the image through librbd (argv: JSON `{ conf, user, keyring, pool, image, block }`)
 * and writes numbered blocks one at a time, each flushed, printing `SEQ` once
 * acknowledged, until a write fails or it is killed. A process, not the test's
 * own: a write left in flight on a cluster that died never returns, and kept
 * the test file's process alive after its last test (CI run, 300 s timeout).
 */
import { loadRbdAddon } from '../../src/drivers/rbd/rbd-addon.ts';

const o = JSON.parse(process.argv[2]!) as { conf: string; user: string; keyring: string; pool: string; image: string; block: number };
const rbd = loadRbdAddon();
const client = await rbd.connect(o.conf, o.user, o.keyring, { rados_osd_op_timeout: '5', rados_mon_op_timeout: '5' });
const img = await rbd.openImage(client, o.pool, o.image, null, false);
process.stdout.write('ready\n');
for (let seq = 0; seq < 2048; seq++) {
  const buf = Buffer.alloc(o.block);
  for (let i = 0; i < o.block; i += 8) buf.writeUInt32LE(seq, i), buf.writeUInt32LE(0xb10c, i + 4);
  try {
    await rbd.aioWrite(img, seq * o.block, buf);
    await rbd.aioFlush(img);
  } catch {
    process.exit(0); // the cluster is gone
  }
  process.stdout.write(`${seq}\n`);
  await new Promise((r) => setTimeout(r, 20));
}
process.exit(0);
