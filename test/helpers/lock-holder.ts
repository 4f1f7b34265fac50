/** Takes a named lock on a coordination backend and holds it until killed: `lock-holder.ts URL NAME [OWNER]` (OWNER: its incarnation id). */
import { openCoordinator } from '../../src/coordination/index.ts';

const [url, name, owner] = process.argv.slice(2);
await openCoordinator(url!, { owner }).lock(name!, 10_000);
console.log('held');
setInterval(() => undefined, 1 << 30);
