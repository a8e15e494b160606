// xl.cfg's `vif = [ ... ]` line, read and rewritten: the config `xl migrate -C` sends to the destination
// names, for each vif, the bridge it is attached to there (step 3: the attachments swapped). Pure. The rest
// of the file is passed through byte for byte.

export class XlConfigError extends Error {
  override readonly name = "XlConfigError";
}

export interface XlVif {
  /** Position in the list, or the spec's own devid=. */
  readonly devid: number;
  readonly mac: string | undefined;
  readonly bridge: string | undefined;
  /** The spec as written (without its quotes). */
  readonly spec: string;
}

const VIF_LINE = /^([ \t]*vif[ \t]*=[ \t]*\[)([^\]]*)(\])/m;
const ITEM = /(['"])(.*?)\1/g;

function field(spec: string, key: string): string | undefined {
  for (const part of spec.split(",")) {
    const [k, ...v] = part.split("=");
    if (k?.trim() === key) return v.join("=").trim();
  }
  return undefined;
}

/** The vifs of an xl.cfg, with their devids. */
export function parseVifs(cfg: string): XlVif[] {
  const m = VIF_LINE.exec(cfg);
  if (!m) throw new XlConfigError("the config has no `vif = [ ... ]` line");
  const out: XlVif[] = [];
  let i = 0;
  for (const item of (m[2] ?? "").matchAll(ITEM)) {
    const spec = item[2] ?? "";
    const devidText = field(spec, "devid");
    const devid = devidText === undefined ? i : Number(devidText);
    if (!Number.isInteger(devid) || devid < 0)
      throw new XlConfigError(`vif "${spec}": bad devid ${devidText}`);
    out.push({ devid, mac: field(spec, "mac")?.toLowerCase(), bridge: field(spec, "bridge"), spec });
    i++;
  }
  return out;
}

/**
 * The same config with each vif's `bridge=` set from `bridges` (devid → bridge; added when the spec has
 * none). Every devid in `bridges` must exist in the config.
 */
export function setVifBridges(cfg: string, bridges: Readonly<Record<number, string>>): string {
  const m = VIF_LINE.exec(cfg);
  if (!m) throw new XlConfigError("the config has no `vif = [ ... ]` line");
  const vifs = parseVifs(cfg);
  for (const devid of Object.keys(bridges).map(Number)) {
    if (!vifs.some((v) => v.devid === devid)) {
      throw new XlConfigError(
        `the config has no vif with devid ${devid} (it has ${vifs.map((v) => v.devid).join(", ")})`,
      );
    }
  }
  for (const b of Object.values(bridges)) {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(b)) throw new XlConfigError(`"${b}" is not a bridge name`);
  }
  let i = 0;
  const body = (m[2] ?? "").replace(ITEM, (whole, quote: string, spec: string) => {
    const vif = vifs[i++];
    const bridge = vif && bridges[vif.devid];
    if (bridge === undefined) return whole;
    const parts = spec.split(",");
    const at = parts.findIndex((p) => p.split("=")[0]?.trim() === "bridge");
    if (at >= 0) parts[at] = `bridge=${bridge}`;
    else parts.push(`bridge=${bridge}`);
    return `${quote}${parts.join(",")}${quote}`;
  });
  return cfg.slice(0, m.index) + (m[1] ?? "") + body + (m[3] ?? "") + cfg.slice(m.index + m[0].length);
}
