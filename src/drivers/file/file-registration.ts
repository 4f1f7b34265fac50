/** The registration of the `file` driver: its options and its factory. */
import path from 'node:path';
import { defineDriver, option } from '../driver-registration.ts';
import { FileDriver } from './file-driver.ts';

/** `volume_driver = file`: sparse raw files in a folder, the reference driver. */
export const fileRegistration = defineDriver({
  name: 'file',
  contractVersion: '1.2',
  description: 'file (sparse raw files in a folder, reflinks where the filesystem has them: the reference)',
  options: {
    file_volume_dir: option<string>({
      type: 'string', default: (ctx) => path.join(ctx.stateDir, 'volumes', ctx.backend ?? ''),
      help: 'Folder holding the volume and snapshot files of a file backend (created at start). Members of a cluster share it. Default: <state_dir>/volumes/<backend>.',
    }),
    total_capacity_gb: option<number>({
      type: 'float', default: 0, min: 0,
      help: 'Capacity to report in GiB; 0 means the size of the filesystem holding file_volume_dir.',
    }),
  },
  create: ({ backendName, options }) => new FileDriver({
    poolName: backendName, directory: options.file_volume_dir, totalCapacityGiB: options.total_capacity_gb,
  }),
});
