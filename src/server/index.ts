/** Process composition: which roles run, started and stopped together. */
export { startServer, ROLES, type Role, type RunningServer, type StartServerInput } from './basalt-server.ts';
export { BASALT_VERSION } from './version.ts';
export { serverLogger, type LogFormat } from './log-destination.ts';
