// Builds the web dashboard (dashboard/, React + Vite) into dashboard/dist, which
// the API serves at /dashboard/ when dashboard_enabled is on. Run by npm's
// install script, so `npm ci` leaves it built; needs nothing from the network.
// Without Vite (an install that omits dev dependencies) it says so and exits 0:
// the server then answers /dashboard/ with a 503 naming this command.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dashboard');
let vite;
try {
  vite = await import('vite');
} catch {
  console.log('# dashboard not built: Vite is not installed (dev dependencies omitted); `npm run build:dashboard` builds it');
  process.exit(0);
}
await vite.build({ root, configFile: path.join(root, 'vite.config.ts'), logLevel: 'warn' });
console.log(`# dashboard built into ${path.join(root, 'dist')}`);
