// Linux interface names: what the kernel accepts (IFNAMSIZ 16 with the NUL, no '/', ':' or whitespace).

export const IFNAME_MAX = 15;

export function interfaceNameProblem(name: string): string | undefined {
  if (name.length === 0) return "is empty";
  if (name.length > IFNAME_MAX) return `is ${name.length} characters; Linux allows at most ${IFNAME_MAX}`;
  if (name === "." || name === "..") return "is reserved";
  if (/[/:\s]/.test(name)) return "must not contain '/', ':' or white space";
  return undefined;
}

export function isInterfaceName(name: string): boolean {
  return interfaceNameProblem(name) === undefined;
}

/** Length of a string in UTF-8 bytes (pure; no TextEncoder in the core's library set). */
export function utf8Length(s: string): number {
  let n = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return n;
}
