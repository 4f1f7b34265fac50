/** Small shared pieces: the clock, id helpers, own-property access, shared flushes and Keystone's password login body. */
export * from './clock.ts';
export * from './ids.ts';
export * from './caller.ts';
export * from './addon.ts';
export * from './own-property.ts';
export * from './shared-flush.ts';
export * from './foreground.ts';
export * from './keystone-password.ts';
