/** Loads the RBD addon in a process of its own and prints what happened: `loaded`, or the error's message. */
import { loadRbdAddon } from '../../../../src/drivers/rbd/rbd-addon.ts';

try {
  loadRbdAddon();
  process.stdout.write('loaded\n');
} catch (err) {
  process.stdout.write(`${(err as Error).message}\n`);
}
