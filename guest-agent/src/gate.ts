// What a correspondent's UDP port gives a stranger, bounded (issue 12): a token bucket per source address
// before anything is parsed, and refusals logged a few at a time — the first of each window, then a count —
// so that a flood of forged datagrams costs neither the CPU to verify each nor a log line each. Pure.

export interface LimiterOptions {
  /** Datagrams a source may send each second, sustained. */
  readonly perSecond: number;
  /** And at once. */
  readonly burst: number;
  /** Sources remembered; the longest idle goes first beyond this. */
  readonly maxSources: number;
}

export class SourceLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly o: LimiterOptions) {}

  /** Whether a datagram from `source` at `now` (ms) may be looked at. */
  admit(source: string, now: number): boolean {
    const b = this.buckets.get(source);
    if (!b) {
      if (this.buckets.size >= this.o.maxSources) {
        const oldest = this.buckets.keys().next().value;
        if (oldest !== undefined) this.buckets.delete(oldest);
      }
      this.buckets.set(source, { tokens: this.o.burst - 1, at: now });
      return true;
    }
    // Map order is insertion order: a source seen again moves to the end (least recently used first out).
    this.buckets.delete(source);
    b.tokens = Math.min(this.o.burst, b.tokens + ((now - b.at) / 1000) * this.o.perSecond);
    b.at = now;
    this.buckets.set(source, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

/** Distinct reasons counted per window; the rest count together. */
const MAX_KINDS = 16;

/** Refusals, logged as the first of each window (with its reason) and then one count per window. */
export class RefusalLog {
  private windowStart = -Infinity;
  private suppressed = 0;
  private readonly reasons = new Map<string, number>();
  constructor(
    private readonly log: (event: string, fields: Record<string, unknown>) => void,
    private readonly windowMs = 10_000,
  ) {}

  refused(fields: { from?: string; reason: string } & Record<string, unknown>, now: number): void {
    if (now - this.windowStart >= this.windowMs) {
      this.flush();
      this.windowStart = now;
      this.log("binding_refused", fields);
      return;
    }
    this.suppressed++;
    // A stranger chooses the text of a reason (a field's name, an address): its kinds are bounded.
    const text = fields.reason.replace(/[0-9a-f:.]{3,}|\d+/gi, "…").slice(0, 80);
    const kind = this.reasons.has(text) || this.reasons.size < MAX_KINDS ? text : "(other reasons)";
    this.reasons.set(kind, (this.reasons.get(kind) ?? 0) + 1);
  }

  /** The count of what was not logged since the window began (called by refused, and on a timer). */
  flush(): void {
    if (this.suppressed === 0) return;
    this.log("bindings_refused", {
      count: this.suppressed,
      windowMs: this.windowMs,
      reasons: Object.fromEntries([...this.reasons].sort((a, b) => b[1] - a[1]).slice(0, 5)),
    });
    this.suppressed = 0;
    this.reasons.clear();
  }
}
