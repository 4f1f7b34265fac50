/** Quotas: limits, usage and the engine that keeps them exact. */
export * from './quota-engine.ts';
