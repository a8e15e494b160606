// When the agent looks at its channel: on every event, and again with backoff after a pass that failed — after
// a resume no further event may come, and the switch must not wait for one. Channel errors that persist reopen
// the channel (a fresh xenstore connection, whose watch fires again). Not at the first one: closing the device
// while a read is blocked on it holds one of libuv's threads until that old descriptor sees an event.

import type { Log } from "./core.js";

export interface KickerPorts<C> {
  /** One pass of the agent (Agent.converge). */
  converge(reason: string): Promise<void>;
  /** The channel's current connection; undefined while it reconnects (its watch will kick). */
  connection(): C | undefined;
  /** Whether an error came from the channel itself (then reopening it may help). */
  isChannelError(err: unknown): boolean;
  /** Drop this connection; the daemon reconnects and kicks. */
  reopen(connection: C): void;
  readonly log: Log;
  readonly signal: AbortSignal;
}

export const RETRY_FIRST_MS = 100;
export const RETRY_MAX_MS = 5000;
/** Consecutive channel errors after which the connection is reopened. */
export const REOPEN_AFTER = 3;

export function createKicker<C>(ports: KickerPorts<C>): (reason: string) => void {
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  let watched: Promise<void> | undefined;
  ports.signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  const kick = (reason: string): void => {
    const connection = ports.connection();
    if (connection === undefined || ports.signal.aborted) return;
    clearTimeout(timer);
    const run = ports.converge(reason);
    // A kick during a pass joins it (Agent.converge coalesces): its outcome is handled once.
    if (run === watched) return;
    watched = run;
    run.then(
      () => {
        failures = 0;
      },
      (err: unknown) => {
        // A connection lost meanwhile (expected right after a resume): reconnecting kicks again.
        if (ports.connection() !== connection || ports.signal.aborted) return;
        failures += 1;
        const retryMs = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(failures - 1, 6));
        const error = err instanceof Error ? err.message : String(err);
        clearTimeout(timer);
        if (ports.isChannelError(err) && failures % REOPEN_AFTER === 0) {
          ports.log("converge_failed", { reason, error, failures, next: "reopen" });
          ports.reopen(connection);
          return;
        }
        ports.log("converge_failed", { reason, error, failures, retryMs });
        timer = setTimeout(() => kick("retry"), retryMs);
      },
    );
  };
  return kick;
}
