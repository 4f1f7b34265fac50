/** Small shared pieces: the clock, id helpers, own-property access and shared flushes. */
export * from './clock.ts';
export * from './ids.ts';
export * from './caller.ts';
export * from './addon.ts';
export * from './own-property.ts';
export * from './shared-flush.ts';
