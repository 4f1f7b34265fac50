/** The data path: Basalt's NBD server. */
export { NBD_BOUNDS, NbdServer, type ExportProvider, type NbdExport, type NbdServerOptions } from './nbd-server.ts';
export * as nbd from './nbd-protocol.ts';
