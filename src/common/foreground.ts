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
 * So a worker asks {@link quiet} before each claim: it goes ahead at once when
 * no request is in flight, else when the last one ends, or after
 * {@link waitMs} at the most. Under an API that never rests, a worker thus
 * still claims a job every {@link waitMs} (20 a second at the default), and
 * jobs already running are not held at all.
 */
export class Foreground {
  #inFlight = 0;
  #counted = 0;
  readonly #waiting = new Set<() => void>();

  /** @param waitMs the longest a claim waits for the requests in flight to end; 0 never waits. */
  constructor(readonly waitMs = 50) {}

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
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (--this.#inFlight === 0) {
        for (const go of this.#waiting) go();
      }
    };
  }

  /** Resolves when no request is in flight, or after {@link waitMs}, whichever comes first. */
  quiet(): Promise<void> {
    if (this.#inFlight === 0 || this.waitMs <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const go = (): void => {
        clearTimeout(timer);
        this.#waiting.delete(go);
        resolve();
      };
      const timer = setTimeout(go, this.waitMs);
      this.#waiting.add(go);
    });
  }
}
