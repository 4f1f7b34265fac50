/** The volume manager, its job kinds, the volume service and the stuck-volume rule. */
export * from './volume-jobs.ts';
export * from './volume-manager.ts';
export * from './volume-service.ts';
export * from './stuck-volumes.ts';
export * from './volume-handlers.ts';
export * from './lifecycle.ts';
export * from './volume-quota.ts';
export * from './attachment-manager.ts';
