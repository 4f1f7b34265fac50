/** The scheduler role. */
export { Scheduler, type SchedulerOptions } from './scheduler.ts';
