/** The release of this code, from package.json. */
import { createRequire } from 'node:module';

const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };

/** Basalt's version, recorded in `services` rows. */
export const BASALT_VERSION: string = pkg.version;
