/** The Cinder v3 API. */
export { buildApi } from './app.ts';
export { isLoopback } from './auth.ts';
export type { ApiDeps } from './context.ts';
export { MAX_VERSION, MIN_VERSION } from './microversion.ts';
export { Observability, type ObservedProcess } from './observability.ts';
