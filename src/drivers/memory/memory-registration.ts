/** The registration of the `memory` driver: its options and its factory. */
import { defineDriver, option } from '../driver-registration.ts';
import { MemoryDriver } from './memory-driver.ts';

/** `volume_driver = memory`: volumes in the process's memory, the test double. */
export const memoryRegistration = defineDriver({
  name: 'memory',
  contractVersion: '1.2',
  description: 'memory (the test double: volumes live in the process and are lost when it exits)',
  options: {
    total_capacity_gb: option<number>({
      type: 'float', default: 0, min: 0,
      help: 'Capacity to report in GiB; 0 means 1024.',
    }),
  },
  create: ({ backendName, options }) => new MemoryDriver({ poolName: backendName, totalCapacityGiB: options.total_capacity_gb }),
});
