/** The release of this code, from package.json. */
import fs from 'node:fs';
import { rootPath } from '../common/root.ts';

const pkg = JSON.parse(fs.readFileSync(rootPath('package.json'), 'utf8')) as { version: string };

/** Basalt's version, recorded in `services` rows. */
export const BASALT_VERSION: string = pkg.version;
