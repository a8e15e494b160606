// Dom0Channel over xenstore: /local/domain/<domid>/<dir>/<key>, with watches for answers.
import { isXenstoreError, type XenstoreClient } from "@xenroam/xenstore";
import type { Dom0Channel } from "../ports.js";

/**
 * `reconnect`: a connection xenstored dropped (a restart) is opened again once, and the call retried on it —
 * an abort must still reach a guest whose migration failed because xenstored went away.
 */
export function createDom0Channel(
  first: XenstoreClient,
  dir: string,
  reconnect?: () => Promise<XenstoreClient>,
): Dom0Channel {
  let xs = first;
  const path = (domid: number, key: string) => `/local/domain/${domid}/${dir}/${key}`;
  const onLive = async <T>(op: (c: XenstoreClient) => Promise<T>): Promise<T> => {
    try {
      return await op(xs);
    } catch (err) {
      if (!reconnect || !xs.lost) throw err;
      xs = await reconnect();
      return op(xs);
    }
  };
  return {
    read: (domid, key) => onLive((c) => c.tryRead(path(domid, key))),
    write: (domid, key, value) => onLive((c) => c.write(path(domid, key), value)),
    remove: (domid, key) =>
      onLive(async (c) => {
        try {
          await c.rm(path(domid, key));
        } catch (err) {
          if (!isXenstoreError(err, "ENOENT")) throw err;
        }
      }),
    async waitFor(domid, key, accept, timeoutMs) {
      const watch = await xs.watch(path(domid, key));
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), timeoutMs);
      });
      const it = watch[Symbol.asyncIterator]();
      try {
        for (;;) {
          const next = await Promise.race([it.next(), deadline]);
          if (next === undefined || next.done) return undefined;
          const value = await xs.tryRead(path(domid, key));
          if (value !== undefined && accept(value)) return value;
        }
      } finally {
        clearTimeout(timer);
        await watch.close();
      }
    },
  };
}
