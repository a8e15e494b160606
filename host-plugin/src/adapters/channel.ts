// Dom0Channel over xenstore: /local/domain/<domid>/<dir>/<key>, with watches for answers.
import { isXenstoreError, type XenstoreClient } from "@xenroam/xenstore";
import type { Dom0Channel } from "../ports.js";

export function createDom0Channel(xs: XenstoreClient, dir: string): Dom0Channel {
  const path = (domid: number, key: string) => `/local/domain/${domid}/${dir}/${key}`;
  return {
    read: (domid, key) => xs.tryRead(path(domid, key)),
    write: (domid, key, value) => xs.write(path(domid, key), value),
    remove: async (domid, key) => {
      try {
        await xs.rm(path(domid, key));
      } catch (err) {
        if (!isXenstoreError(err, "ENOENT")) throw err;
      }
    },
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
