/**
 * The runtime guard the core wraps around every driver. It runs `init` once
 * before any other call, serialises calls when the driver cannot run them in
 * parallel, applies a timeout, and turns stray throws into `DriverError`
 * (keeping the original as `cause`) so backend text never leaks.
 *
 * It implements every method explicitly: a new contract method must be added
 * here on purpose, never forwarded blindly.
 */
import { BasaltError, DriverError, InvalidInputError } from '../errors/index.ts';
import {
  DRIVER_CONTRACT_VERSION,
  type BackendStats, type DriverCapabilities, type SnapshotRef, type VolumeDriver, type VolumeHandle, type VolumeRef,
} from './volume-driver.ts';

/** A driver behind the guard. */
export class GuardedDriver implements VolumeDriver {
  readonly contractVersion = DRIVER_CONTRACT_VERSION;
  readonly capabilities: DriverCapabilities;
  private initialised: Promise<void> | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  /**
   * @throws DriverError when the driver declares an unknown contract major version.
   */
  constructor(private readonly driver: VolumeDriver, private readonly timeoutMs: number) {
    const [major] = driver.contractVersion.split('.');
    const [ours] = DRIVER_CONTRACT_VERSION.split('.');
    if (major !== ours) {
      throw new DriverError(`Driver contract ${driver.contractVersion} is not supported (core implements ${DRIVER_CONTRACT_VERSION})`);
    }
    this.capabilities = driver.capabilities;
  }

  init(): Promise<void> {
    this.initialised ??= this.call('init', () => this.driver.init?.() ?? Promise.resolve(), false).catch((err) => {
      this.initialised = undefined; // let a later call try again
      throw err;
    });
    return this.initialised;
  }

  getStats(): Promise<BackendStats> {
    return this.call('getStats', () => this.driver.getStats());
  }

  createVolume(vol: VolumeRef): Promise<void> {
    return this.call('createVolume', () => this.driver.createVolume(vol));
  }

  deleteVolume(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    return this.call('deleteVolume', () => this.driver.deleteVolume(vol));
  }

  extendVolume(vol: VolumeRef, newSizeGiB: number): Promise<void> {
    if (!(newSizeGiB > vol.sizeGiB)) {
      return Promise.reject(new DriverError(`extendVolume needs a larger size than ${vol.sizeGiB} GiB`));
    }
    return this.call('extendVolume', () => this.driver.extendVolume(vol, newSizeGiB));
  }

  createSnapshot(snap: SnapshotRef): Promise<void> {
    return this.call('createSnapshot', () => this.driver.createSnapshot(snap));
  }

  deleteSnapshot(snap: Pick<SnapshotRef, 'id'>): Promise<void> {
    return this.call('deleteSnapshot', () => this.driver.deleteSnapshot(snap));
  }

  createVolumeFromSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    if (vol.sizeGiB < snap.sizeGiB) return Promise.reject(new DriverError(`A volume from snapshot ${snap.id} needs at least ${snap.sizeGiB} GiB`));
    return this.call('createVolumeFromSnapshot', () => this.driver.createVolumeFromSnapshot(vol, snap));
  }

  cloneVolume(vol: VolumeRef, source: VolumeRef): Promise<void> {
    if (vol.sizeGiB < source.sizeGiB) return Promise.reject(new DriverError(`A clone of ${source.id} needs at least ${source.sizeGiB} GiB`));
    return this.call('cloneVolume', () => this.driver.cloneVolume(vol, source));
  }

  /** @throws BasaltError NOT_IMPLEMENTED when the driver does not declare `supportsRevertToSnapshot`. */
  revertToSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    const revert = this.driver.revertToSnapshot;
    if (!this.capabilities.supportsRevertToSnapshot || !revert) {
      return Promise.reject(new BasaltError('NOT_IMPLEMENTED', 'This backend cannot revert a volume to a snapshot.'));
    }
    return this.call('revertToSnapshot', () => revert.call(this.driver, vol, snap));
  }

  /** Opens the volume; the returned handle checks every range before the driver sees it. */
  async openVolume(vol: VolumeRef): Promise<VolumeHandle> {
    const inner = await this.call('openVolume', () => this.driver.openVolume(vol));
    const check = (offset: number, length: number): void => {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > inner.sizeBytes) {
        throw new InvalidInputError(`Range ${offset}+${length} is outside the volume (${inner.sizeBytes} bytes)`);
      }
    };
    // Block I/O is the hot path: rather than a timer per call, one watchdog per
    // handle fails calls that outlive the timeout.
    const pending = new Map<number, { started: number; method: string; reject: (e: Error) => void }>();
    let seq = 0;
    const watchdog = setInterval(() => {
      const now = Date.now();
      for (const [k, p] of pending) {
        if (now - p.started <= this.timeoutMs) continue;
        pending.delete(k);
        p.reject(new DriverError(`Driver call ${p.method} timed out after ${this.timeoutMs} ms`, { retryable: true }));
      }
    }, Math.max(10, Math.min(1000, this.timeoutMs / 4)));
    watchdog.unref();
    const guard = <T>(method: string, fn: () => Promise<T>): Promise<T> => new Promise<T>((resolve, reject) => {
      const k = seq++;
      pending.set(k, { started: Date.now(), method, reject });
      fn().then(
        (v) => { if (pending.delete(k)) resolve(v); },
        (err: unknown) => {
          if (!pending.delete(k)) return;
          reject(err instanceof BasaltError ? err : new DriverError(`Driver call ${method} failed`, { cause: err, retryable: isTransient(err) }));
        },
      );
    });
    return {
      sizeBytes: inner.sizeBytes,
      fd: inner.fd,
      read: async (offset, length) => { check(offset, length); return guard('read', () => inner.read(offset, length)); },
      write: async (offset, data) => { check(offset, data.length); return guard('write', () => inner.write(offset, data)); },
      flush: () => guard('flush', () => inner.flush()),
      trim: async (offset, length) => {
        check(offset, length);
        if (inner.trim) await guard('trim', () => inner.trim!(offset, length));
      },
      writeZeroes: async (offset, length, mayPunch) => {
        check(offset, length);
        if (inner.writeZeroes) return guard('writeZeroes', () => inner.writeZeroes!(offset, length, mayPunch));
        const zero = Buffer.alloc(Math.min(length, 1024 * 1024));
        for (let done = 0; done < length; done += zero.length) {
          const n = Math.min(zero.length, length - done);
          await guard('write', () => inner.write(offset + done, n === zero.length ? zero : zero.subarray(0, n)));
        }
      },
      blockStatus: async (offset, length) => {
        check(offset, length);
        if (!inner.blockStatus) return [{ length, hole: false, zero: false }];
        const extents = await guard('blockStatus', () => inner.blockStatus!(offset, length));
        return extents.length ? extents : [{ length, hole: false, zero: false }];
      },
      close: () => {
        clearInterval(watchdog);
        return this.withTimeout('close', () => inner.close());
      },
    };
  }

  async close(): Promise<void> {
    await this.tail.catch(() => undefined);
    await this.driver.close?.();
  }

  private async call<T>(method: string, fn: () => Promise<T>, needsInit = true): Promise<T> {
    if (needsInit) await this.init();
    const run = (): Promise<T> => this.withTimeout(method, fn);
    if (this.capabilities.canRunInParallel) return run();
    const result = this.tail.then(run, run);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async withTimeout<T>(method: string, fn: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DriverError(`Driver call ${method} timed out after ${this.timeoutMs} ms`, { retryable: true })), this.timeoutMs);
    });
    try {
      return await Promise.race([fn(), timeout]);
    } catch (err) {
      if (err instanceof BasaltError) throw err;
      throw new DriverError(`Driver call ${method} failed`, { cause: err, retryable: isTransient(err) });
    } finally {
      clearTimeout(timer);
    }
  }
}

/** System errors worth retrying: the backend may recover by itself. */
function isTransient(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EAGAIN' || code === 'EBUSY' || code === 'EINTR' || code === 'ETIMEDOUT' || code === 'EMFILE' || code === 'ENFILE';
}
