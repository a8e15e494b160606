// When the agent looks at its channel: on every event, and again with backoff after a pass that failed — after
// a resume no further event may come, and the switch must not wait for one. A channel error reopens the channel
// (a fresh xenstore connection, whose watch fires again): on real Xen a guest's /dev/xen/xenbus descriptor that
// was open across the suspend answered EINVAL and then nothing, while a fresh one answered at once.

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

export function createKicker<C>(ports: KickerPorts<C>): (reason: string) => void {
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  ports.signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  const kick = (reason: string): void => {
    const connection = ports.connection();
    if (connection === undefined || ports.signal.aborted) return;
    clearTimeout(timer);
    ports.converge(reason).then(
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
        if (ports.isChannelError(err)) {
          // The first time at once (a resume is when every millisecond counts), then with the backoff.
          const delayMs = failures === 1 ? 0 : retryMs;
          ports.log("converge_failed", { reason, error, failures, next: "reopen", delayMs });
          timer = setTimeout(() => {
            if (ports.connection() === connection) ports.reopen(connection);
          }, delayMs);
          return;
        }
        ports.log("converge_failed", { reason, error, failures, retryMs });
        timer = setTimeout(() => kick("retry"), retryMs);
      },
    );
  };
  return kick;
}
