/** The data path: Basalt's NBD server. */
export { NBD_BOUNDS, NbdServer, pastTheEnd, type ExportProvider, type NbdExport, type NbdServerOptions } from './nbd-server.ts';
export { CHANGED_BLOCK_BYTES, ChangedBlockTracker, type ChangedBlocksCut, type ChangedRange, type ChangeWriter } from './changed-blocks.ts';
export * as nbd from './nbd-protocol.ts';
export { QOS_KEYS, QosLimiter, qosLimits, type QosLimits } from './qos.ts';
