/** Named locks across processes. */
export * from './coordinator.ts';
