/** Volume drivers: the contract, registration records, the loader, the guard, and the drivers a backend can name. */
export * from './volume-driver.ts';
export { GuardedDriver } from './driver-guard.ts';
export { checkContractVersion, defineDriver, option, type DriverContext, type DriverOptionGroup, type DriverRegistration } from './driver-registration.ts';
export { findDriver, openDriver, REGISTERED_DRIVERS } from './driver-registry.ts';
export { FileDriver, type FileDriverOptions } from './file/file-driver.ts';
export { fileRegistration } from './file/file-registration.ts';
export { MemoryDriver, type MemoryDriverOptions } from './memory/memory-driver.ts';
export { memoryRegistration } from './memory/memory-registration.ts';
export { RbdDriver, type RbdDriverOptions } from './rbd/rbd-driver.ts';
export { rbdRegistration } from './rbd/rbd-registration.ts';
