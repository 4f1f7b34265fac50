/** The durable job queue: kinds, the queue, workers and the sweeper. */
export * from './job-kind.ts';
export { JobQueue, LeaseLostError, describe, type JobQueueOptions } from './job-queue.ts';
export { Worker, type WorkerOptions } from './worker.ts';
export { Sweeper, type SweepRule, type SweeperOptions } from './sweeper.ts';
export { RoleService, type RoleServiceOptions } from './role-service.ts';
