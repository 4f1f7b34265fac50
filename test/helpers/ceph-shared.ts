/**
 * The Ceph cluster one test run shares (see `ceph.ts`): `start` starts it,
 * prints its folder (for `TEST_CEPH_DIR`) and exits with the daemons
 * left running; `stop DIR` kills them by the pids in `DIR/pids` and removes
 * the folder. Run by `scripts/test.sh`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startCeph } from './ceph.ts';
import { pidAlive } from './process.ts';

const [command, dir] = process.argv.slice(2);
if (command === 'start') {
  const ceph = await startCeph({ fresh: true, detached: true });
  process.stdout.write(`${path.dirname(ceph.confPath)}\n`);
  process.exit(0);
} else if (command === 'stop' && dir && fs.existsSync(path.join(dir, 'ceph.conf'))) {
  const pids = fs.existsSync(path.join(dir, 'pids')) ? fs.readFileSync(path.join(dir, 'pids'), 'utf8').split('\n').filter(Boolean).map(Number) : [];
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch { /* gone already */ }
  }
  // The folder goes once they are gone (a daemon dying mid-write could recreate a file in it).
  for (let i = 0; i < 100 && pids.some(pidAlive); i++) await new Promise((r) => setTimeout(r, 50));
  fs.rmSync(dir, { recursive: true, force: true });
} else {
  process.stderr.write('usage: ceph-shared.ts start | stop DIR\n');
  process.exit(2);
}

