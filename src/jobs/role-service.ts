/**
 * One running role instance that consumes jobs: it registers its `services`
 * row, releases the leases its own dead previous incarnation left, runs a
 * {@link Worker} for its target and heartbeats (with capabilities, if it has
 * any to report) until stopped.
 */
import type { Logger } from 'pino';
import { isStateDirectoryUnwritable } from '../errors/index.ts';
import type { Coordinator } from '../coordination/index.ts';
import type { ServiceRegistration, ServiceRepository, ServiceRow } from '../db/index.ts';
import type { AnyJobHandler, AnyJobKind } from './job-kind.ts';
import type { JobQueue } from './job-queue.ts';
import { Worker } from './worker.ts';

/** Settings of a {@link RoleService}. */
export interface RoleServiceOptions extends Omit<ServiceRegistration, 'payloadVersions'> {
  queue: JobQueue;
  services: ServiceRepository;
  target: string;
  /** Further targets this instance alone takes (e.g. its member target). */
  extraTargets?: readonly string[];
  handlers: readonly AnyJobHandler[];
  concurrency: number;
  pollMs: number;
  heartbeatMs: number;
  log: Logger;
  /**
   * The coordination backend of this role's locks: at start, the locks its
   * dead previous incarnation still holds are freed with its job leases.
   */
  coordinator?: Pick<Coordinator, 'releaseLocksOf'>;
  /** Called at each heartbeat; its answer is stored as the row's capabilities. */
  reportCapabilities?: () => Promise<unknown>;
  /**
   * What to do when this instance's heartbeat has not been recorded for
   * `afterMs` (measured from the start of the last beat that was: the row's
   * time is never earlier), and again once a beat is recorded in time. Peers
   * count the service dead `service_down_time` after its last recorded beat;
   * `afterMs` shorter than that lets `stale` finish first (self-fencing).
   * Default: nothing.
   */
  staleHeartbeat?: { afterMs: number; stale(): Promise<void>; fresh(): void };
}

/** A role that consumes jobs and heartbeats. */
export class RoleService {
  private worker: Worker | undefined;
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  /** Fires {@link RoleServiceOptions.staleHeartbeat} when no beat is recorded in time. */
  private watchdog: NodeJS.Timeout | undefined;
  /** Whether `staleHeartbeat.stale` was called and `fresh` not since. */
  private stale = false;
  /** The service row after registration. */
  row: ServiceRow | undefined;

  constructor(private readonly o: RoleServiceOptions) {}

  /** Registers, takes over dead leases, reports once, then starts working. */
  async start(): Promise<void> {
    const { queue, services, log } = this.o;
    // The row written at registration is this instance's first beat.
    const registeredAt = queue.clock.now();
    const cap = queue.options.payloadVersionCap ?? 0;
    const payloadVersions = Object.fromEntries(this.o.handlers.map((h) => {
      const v = (h.kind as AnyJobKind).version;
      return [h.kind.kind, cap > 0 ? Math.min(v, cap) : v];
    }));
    const { row, previousInstanceId } = await services.register(queue.db.kysely, {
      host: this.o.host, binary: this.o.binary, backend: this.o.backend, cluster: this.o.cluster,
      availabilityZone: this.o.availabilityZone, version: this.o.version, payloadVersions, instanceId: this.o.instanceId,
    });
    this.row = row;
    this.recorded(registeredAt);
    if (previousInstanceId) {
      // Locks first: a job handed over below must not wait out a lock its dead holder keeps (etcd's ttl).
      const freed = await this.o.coordinator?.releaseLocksOf(previousInstanceId).catch((err: Error) => {
        log.warn({ err: err.message, previous: previousInstanceId }, 'the locks of this service\'s previous, dead incarnation could not be freed; they end with their lease');
        return 0;
      }) ?? 0;
      if (freed > 0) log.warn({ count: freed, previous: previousInstanceId }, 'freed the locks of this service\'s previous, dead incarnation');
      const n = await queue.releaseLeasesOf(previousInstanceId);
      if (n > 0) log.warn({ count: n, previous: previousInstanceId }, 'took over jobs of this service\'s previous, dead incarnation');
    }
    await this.beat();
    this.worker = new Worker({
      queue, owner: this.o.instanceId, targets: [this.o.target, ...(this.o.extraTargets ?? [])], handlers: this.o.handlers,
      concurrency: this.o.concurrency, pollMs: this.o.pollMs, log,
    });
    this.worker.start();
    this.timer = setInterval(() => {
      this.beating ??= this.beat().finally(() => { this.beating = undefined; });
    }, this.o.heartbeatMs);
  }

  /** Stops heartbeats and the worker (waiting for running jobs to settle). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.watchdog);
    await this.beating;
    await this.worker?.stop();
  }

  /**
   * Notes a beat recorded that started at `startedAt`: re-arms the watchdog
   * for `startedAt + afterMs`, and ends a stale episode when that is still ahead.
   */
  private recorded(startedAt: number): void {
    const watch = this.o.staleHeartbeat;
    if (!watch) return;
    const leftMs = startedAt + watch.afterMs - this.o.queue.clock.now();
    if (leftMs <= 0) return; // recorded too late to count: the episode goes on
    clearTimeout(this.watchdog);
    if (this.stale) {
      this.stale = false;
      this.o.log.warn('service heartbeat recorded again; serving again');
      watch.fresh();
    }
    this.watchdog = setTimeout(() => {
      if (this.stale) return;
      this.stale = true;
      this.o.log.error({ afterMs: watch.afterMs }, 'service heartbeat not recorded in time; self-fencing until it is');
      void watch.stale().catch((err: unknown) => this.o.log.error({ err }, 'self-fencing failed'));
    }, leftMs);
  }

  private async beat(): Promise<void> {
    const startedAt = this.o.queue.clock.now();
    try {
      const caps = this.o.reportCapabilities ? await this.o.reportCapabilities() : undefined;
      await this.o.services.heartbeat(this.o.queue.db.kysely, this.row!.id, caps);
      this.recorded(startedAt);
    } catch (err) {
      // A full state directory is logged once per episode by the database; the next beat after it recovers works.
      if (isStateDirectoryUnwritable(err)) this.o.log.debug({ code: err.code }, 'heartbeat refused: state directory unwritable');
      else this.o.log.error({ err }, 'heartbeat failed');
    }
  }
}
