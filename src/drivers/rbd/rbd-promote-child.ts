/**
 * One forced promotion of a mirrored image, in a process of its own
 * (`RbdMirrorHost.promoteByForce`, `rbd-mirror.ts`): Ceph Pacific's librbd
 * can segfault in it, and then only this process ends.
 *
 *   node --import tsx rbd-promote-child.ts '{"conf":…,"user":…,"keyring":…,"settings":{…},"pool":…,"image":…}'
 *
 * Prints `promoted` and exits 0; on a failure prints the error's code and
 * message as one JSON line on stderr and exits 1.
 */
import { loadRbdAddon } from './rbd-addon.ts';

interface Job { conf: string | null; user: string; keyring: string | null; settings: Record<string, string>; pool: string; image: string }

const job = JSON.parse(process.argv[2] ?? '{}') as Job;
const rbd = loadRbdAddon();
try {
  const cluster = await rbd.connect(job.conf, job.user, job.keyring, job.settings);
  const img = await rbd.openImage(cluster, job.pool, job.image, null, false);
  try {
    if (!(await rbd.mirrorInfo(img)).primary) await rbd.mirrorPromote(img, 1);
  } finally {
    await rbd.closeImage(img);
  }
  await rbd.shutdown(cluster);
  process.stdout.write('promoted\n');
} catch (err) {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`${JSON.stringify({ code: e.code ?? 'unknown', message: e.message ?? String(err) })}\n`);
  process.exitCode = 1;
}
