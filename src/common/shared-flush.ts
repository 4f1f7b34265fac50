/**
 * A flush shared by everyone who asked for one while it was not yet running:
 * the group commit of write-ahead logs and databases, here for any `fsync`.
 *
 * Each caller is answered by a flush that *started* after its request, so
 * whatever it wrote before asking is covered; requests that arrive while a
 * flush runs share the next one. The flush itself runs wherever `flushOnce`
 * runs it (libuv's thread pool for `fs` promises), so the event loop goes on.
 */
export class SharedFlush {
  /** Requests (or commits) noted so far. */
  #noted = 0;
  /** Every request up to this one is covered by a finished flush. */
  #covered = 0;
  #running: Promise<void> | undefined;
  /** Flushes started so far. */
  flushes = 0;

  /** @param flushOnce one flush (e.g. `fdatasync` of a file); its failure fails the callers it would have covered. */
  constructor(private readonly flushOnce: () => Promise<void>) {}

  /** Notes something written that a later {@link until} must cover; returns its number. */
  note(): number {
    return ++this.#noted;
  }

  /** The number of the latest request noted. */
  get noted(): number {
    return this.#noted;
  }

  /**
   * Resolves once request `seq` is covered: joins the flush in progress when
   * that one started after it, or starts the next.
   * @throws Error from the flush: what it would have covered is not known to be durable.
   */
  async until(seq: number): Promise<void> {
    while (this.#covered < seq) {
      if (!this.#running) {
        const upTo = this.#noted;
        this.flushes++;
        this.#running = this.flushOnce().then(() => { this.#covered = Math.max(this.#covered, upTo); }).finally(() => { this.#running = undefined; });
      }
      await this.#running;
    }
  }

  /** Notes a request and waits until a flush covers it. */
  flush(): Promise<void> {
    return this.until(this.note());
  }

  /** Waits for the flush in progress, if any (its failure ignored). */
  async settled(): Promise<void> {
    await this.#running?.catch(() => undefined);
  }
}
