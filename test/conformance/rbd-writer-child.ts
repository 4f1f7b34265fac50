/**
 * A volume service's writer in a process of its own, for the rbd takeover
 * test: opens a volume through the rbd driver (made from its registration
 * with the options in argv[2], JSON `{ options, vol }`), writes 4 KiB of 0xa1
 * at offset 0 and flushes, then prints `ready`. Each line `write` on stdin
 * then writes 4 KiB of 0xa2 at 0 and flushes, printing `ok`, or `error CODE`
 * with the code of the driver's error (or of its cause).
 */
import readline from 'node:readline';
import { GuardedDriver, rbdRegistration, type VolumeRef } from '../../src/drivers/index.ts';

const { options, vol } = JSON.parse(process.argv[2]!) as { options: Record<string, unknown>; vol: VolumeRef };
const driver = new GuardedDriver(rbdRegistration.create({ backendName: 'ceph', options: options as never }), 600_000);
await driver.init();
const h = await driver.openVolume(vol);
await h.write(0, Buffer.alloc(4096, 0xa1));
await h.flush();
process.stdout.write('ready\n');
for await (const line of readline.createInterface({ input: process.stdin })) {
  if (line !== 'write') continue;
  try {
    await h.write(0, Buffer.alloc(4096, 0xa2));
    await h.flush();
    process.stdout.write('ok\n');
  } catch (err) {
    const e = err as { code?: string; cause?: { code?: string } };
    process.stdout.write(`error ${e.cause?.code ?? e.code}\n`);
  }
}
