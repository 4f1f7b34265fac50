/** Small shared pieces: the clock, id helpers and own-property access. */
export * from './clock.ts';
export * from './ids.ts';
export * from './caller.ts';
export * from './addon.ts';
export * from './own-property.ts';
