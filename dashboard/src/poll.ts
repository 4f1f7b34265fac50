/**
 * `usePoll`: loads something now and again every few seconds while the page
 * shows it, so the dashboard follows the service without a reload. A load
 * still running when the next is due is not doubled; unmounting aborts it.
 */
import { useEffect, useRef, useState } from 'react';

/** What a polled load has produced so far. */
export interface Polled<T> {
  /** The latest successful result; kept while a later load fails. */
  data?: T;
  /** The latest failure's message; cleared by the next success. */
  error?: string;
  /** When the latest load finished (success or not). */
  at?: Date;
}

/** Polls `load` every `intervalMs` (and at once); `key` changes restart it. */
export function usePoll<T>(load: (signal: AbortSignal) => Promise<T>, intervalMs: number, key: string): Polled<T> {
  const [state, setState] = useState<Polled<T>>({});
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    const abort = new AbortController();
    let busy = false;
    const tick = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        const data = await loadRef.current(abort.signal);
        if (!abort.signal.aborted) setState({ data, at: new Date() });
      } catch (err) {
        if (!abort.signal.aborted) setState((s) => ({ ...s, error: (err as Error).message, at: new Date() }));
      } finally {
        busy = false;
      }
    };
    setState({});
    void tick();
    const timer = setInterval(() => void tick(), intervalMs);
    return () => {
      abort.abort();
      clearInterval(timer);
    };
  }, [key, intervalMs]);
  return state;
}
