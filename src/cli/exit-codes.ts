/**
 * How the `basalt` command ends: one line on stderr naming what went wrong
 * and what to do, never a stack, and an exit code that scripts can tell
 * apart (README "Exit codes").
 */
import { CommanderError } from 'commander';
import { BasaltError } from '../errors/index.ts';

/** Exit codes of the `basalt` command. */
export const EXIT = {
  ok: 0,
  /** An operation ran and failed (a volume in error, a damaged backup), or Basalt itself failed (HTTP 5xx). */
  failed: 1,
  /** The command line is wrong (unknown option, bad value). */
  usage: 2,
  /** What the command names does not exist (HTTP 404, or no resource has that name). */
  notFound: 3,
  /** The service refused the request (HTTP 4xx other than 404: bad input, wrong status, over quota, not allowed). */
  refused: 4,
  /** The API could not be reached at all. */
  unreachable: 5,
} as const;

/** An error the CLI itself raises, with the exit code it ends with. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

/** The exit code for an error that ends the command. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof CliError) return err.exitCode;
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  // Refusals are the API's (CliError above); an error raised here on this machine (a full state
  // directory at start, a damaged backup) is a failure, unless what was named does not exist.
  if (err instanceof BasaltError && err.status === 404) return EXIT.notFound;
  return EXIT.failed;
}

/**
 * The one line said about an error. A stack only with BASALT_DEBUG set: an
 * error the CLI did not foresee is still one line, naming where to look.
 */
export function describeError(err: unknown): string {
  if (err instanceof CliError || err instanceof BasaltError || err instanceof CommanderError) return err.message;
  if (process.env.BASALT_DEBUG) return (err as Error)?.stack ?? String(err);
  return `${(err as Error)?.message ?? String(err)} (unexpected: run again with BASALT_DEBUG=1 for details)`;
}
