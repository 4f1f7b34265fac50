/** Small shared pieces: the clock and id helpers. */
export * from './clock.ts';
export * from './ids.ts';
export * from './caller.ts';
export * from './addon.ts';
