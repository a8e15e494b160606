// NetlinkError: every kernel refusal, converted once at the adapter boundary into errno + operation + link.

/** errno names and numbers on Linux for the codes xenroam meets; others keep their name and errno 0. */
const ERRNO: Readonly<Record<string, number>> = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ERANGE: 34,
  ELOOP: 40,
  ENOTSUP: 95,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENOBUFS: 105,
  ETIMEDOUT: 110,
  EHOSTUNREACH: 113,
};

export class NetlinkError extends Error {
  override readonly name = "NetlinkError";
  readonly errno: number;
  constructor(
    readonly code: string,
    readonly operation: string,
    readonly ifname: string | undefined,
    detail?: string,
  ) {
    super(`${operation}${ifname ? ` ${ifname}` : ""}: ${code}${detail ? ` (${detail})` : ""}`);
    this.errno = ERRNO[code] ?? 0;
  }
}

export function isNetlinkError(err: unknown, code?: string): err is NetlinkError {
  return err instanceof NetlinkError && (code === undefined || err.code === code);
}

/** The one place that reads the npm netlink package's error text ("Request rejected: EEXIST"). */
export function toNetlinkError(err: unknown, operation: string, ifname: string | undefined): NetlinkError {
  if (err instanceof NetlinkError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const rejected = /^Request rejected: (E[A-Z0-9]+|-?\d+)$/.exec(message);
  if (rejected?.[1]) return new NetlinkError(rejected[1], operation, ifname);
  const sys = err as { code?: unknown };
  if (typeof sys.code === "string" && /^E[A-Z0-9]+$/.test(sys.code)) {
    return new NetlinkError(sys.code, operation, ifname, message);
  }
  return new NetlinkError("EIO", operation, ifname, message);
}
