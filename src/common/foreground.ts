/**
 * The API's requests in flight, which background work of the same process
 * defers to.
 *
 * One event loop serves the API and runs the jobs of the scheduler and the
 * volume services. A job that runs while requests wait adds its steps to
 * every one of them: in bench/api.ts (100 creates at concurrency 10, the
 * creates' own jobs running in between) a POST's median was 9–11 ms, and
 * 5.6–7 ms with the jobs' claims held back until the burst of requests had
 * been answered; the volumes were available just as soon (0.2 s), since the
 * same work runs, only after the answers.
 *
 * So a worker asks {@link quiet} before each claim: it goes ahead once no
 * request has been in flight for {@link idleMs}, or after {@link waitMs} at
 * the most. Not as soon as none is: clients that send their next request
 * right after an answer leave the API empty for a fraction of a millisecond,
 * and a job claimed in that gap delayed the ten requests arriving behind it,
 * which then came back together and left the next gap: rounds of 6–9 ms
 * medians beside rounds of 4 ms. With a 2 ms window every round's median was
 * 3.5–5.3 ms (6 December, 3 alternating runs of 7 rounds), the volumes still
 * available in 0.22 s. Under an API that never rests, a worker thus still
 * claims a job every {@link waitMs} (20 a second at the default), and jobs
 * already running are not held at all.
 */
export class Foreground {
  #inFlight = 0;
  #counted = 0;
  readonly #waiting = new Set<() => void>();
  /** Fires {@link idleMs} after the last request ended, unless another one starts first. */
  #idleTimer: NodeJS.Timeout | undefined;
  /** When the last request in flight ended (ms, monotonic); 0 when none ever did. */
  #idleSince = 0;

  /**
   * @param waitMs the longest a claim waits for the requests to end; 0 never waits.
   * @param idleMs how long no request must have been in flight: clients that send their next
   *   request as soon as they have an answer leave the API empty for a fraction of a
   *   millisecond between requests, and work claimed in such a gap delays every request that
   *   arrives while it runs (bench/api.ts, 100 creates at concurrency 10: a POST's median was
   *   6–8 ms in the rounds where that happened, 4 ms in the others; see foreground.test.ts).
   */
  constructor(readonly waitMs = 50, readonly idleMs = 2) {}

  /** Requests in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests counted so far. */
  get counted(): number {
    return this.#counted;
  }

  /** Counts a request from now until the returned function is called (at most once counted, however often it is called). */
  enter(): () => void {
    this.#inFlight++;
    this.#counted++;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (--this.#inFlight > 0) return;
      this.#idleSince = performance.now();
      if (this.#waiting.size > 0) this.#idleTimer = setTimeout(() => this.#wake(), this.idleMs);
    };
  }

  /** Resolves when no request has been in flight for {@link idleMs}, or after {@link waitMs}, whichever comes first. */
  quiet(): Promise<void> {
    if (this.waitMs <= 0) return Promise.resolve();
    if (this.#inFlight === 0 && (this.#idleSince === 0 || performance.now() - this.#idleSince >= this.idleMs)) return Promise.resolve();
    return new Promise((resolve) => {
      const go = (): void => {
        clearTimeout(timer);
        this.#waiting.delete(go);
        resolve();
      };
      const timer = setTimeout(go, this.waitMs);
      this.#waiting.add(go);
      // Idle, but not for long enough yet: go when it has been.
      if (this.#inFlight === 0 && !this.#idleTimer) this.#idleTimer = setTimeout(() => this.#wake(), this.idleMs - (performance.now() - this.#idleSince));
    });
  }

  #wake(): void {
    this.#idleTimer = undefined;
    // The timer's clock is libuv's whole milliseconds: it may fire a fraction of one before
    // performance.now() says the window passed. It passed: a quiet() right after must not wait again.
    this.#idleSince = Math.min(this.#idleSince, performance.now() - this.idleMs);
    for (const go of this.#waiting) go();
  }
}
