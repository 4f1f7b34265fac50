/** The release of this code, from package.json. */
import { MANIFEST } from '../common/root.ts';

/** Basalt's version, recorded in `services` rows. */
export const BASALT_VERSION: string = MANIFEST.version;
