// Which symbol versions an ELF file needs from its shared libraries (GLIBC_2.17, GLIBCXX_3.4.19, …): the
// .gnu.version_r section, read the way the dynamic loader reads it (the System V gABI's section headers; the
// LSB's Elf64_Verneed / Elf64_Vernaux records). What `objdump -p` prints as "Version References", without
// binutils — so the XAPI bundle's test and `xenroam doctor` can tell whether a runtime fits a CentOS 7 Dom0.

export class ElfError extends Error {
  override readonly name = "ElfError";
}

/** One library the file needs and the versions it needs of it. */
export interface VersionNeed {
  readonly file: string;
  readonly versions: readonly string[];
}

const SHT_GNU_VERNEED = 0x6ffffffe;

export function isElf(buf: Uint8Array): boolean {
  return buf.length >= 4 && buf[0] === 0x7f && buf[1] === 0x45 && buf[2] === 0x4c && buf[3] === 0x46;
}

/** The version references of a 64-bit little-endian ELF file (x86-64, aarch64). */
export function versionNeeds(data: Uint8Array): VersionNeed[] {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (!isElf(b)) throw new ElfError("not an ELF file");
  if (b[4] !== 2 || b[5] !== 1) throw new ElfError("only 64-bit little-endian ELF files are read");
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  if (shoff === 0 || shnum === 0) throw new ElfError("no section headers");
  if (shentsize < 64 || shoff + shnum * shentsize > b.length)
    throw new ElfError("section headers out of range");
  const section = (i: number) => {
    const o = shoff + i * shentsize;
    return {
      type: b.readUInt32LE(o + 4),
      offset: Number(b.readBigUInt64LE(o + 24)),
      size: Number(b.readBigUInt64LE(o + 32)),
      link: b.readUInt32LE(o + 40),
      info: b.readUInt32LE(o + 44),
    };
  };
  const out: VersionNeed[] = [];
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== SHT_GNU_VERNEED) continue;
    if (s.link >= shnum) throw new ElfError("version references name a missing string table");
    const strtab = section(s.link);
    const str = (off: number) => {
      const start = strtab.offset + off;
      if (off >= strtab.size || start >= b.length) throw new ElfError("string out of range");
      const end = b.indexOf(0, start);
      return b.toString("latin1", start, end < 0 ? b.length : end);
    };
    let vn = s.offset;
    // sh_info is the number of Elf64_Verneed entries; each chains to the next by vn_next.
    for (let n = 0; n < s.info; n++) {
      if (vn + 16 > b.length) throw new ElfError("version reference out of range");
      const cnt = b.readUInt16LE(vn + 2);
      const file = str(b.readUInt32LE(vn + 4));
      const versions: string[] = [];
      let aux = vn + b.readUInt32LE(vn + 8);
      for (let k = 0; k < cnt; k++) {
        if (aux + 16 > b.length) throw new ElfError("version entry out of range");
        versions.push(str(b.readUInt32LE(aux + 8)));
        const next = b.readUInt32LE(aux + 12);
        if (next === 0) break;
        aux += next;
      }
      out.push({ file, versions });
      const next = b.readUInt32LE(vn + 12);
      if (next === 0) break;
      vn += next;
    }
  }
  return out;
}

/** The newest versions CentOS 7 (XCP-ng 8.x and XenServer 8 Dom0) provides: glibc 2.17, gcc 4.8.5's runtime. */
export const CENTOS7_LIMITS: Readonly<Record<string, string>> = {
  GLIBC: "2.17",
  GLIBCXX: "3.4.19",
  CXXABI: "1.3.7",
  GCC: "4.8.0",
};

const compare = (a: string, b: string): number => {
  const [x, y] = [a.split(".").map(Number), b.split(".").map(Number)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
};

/**
 * The references a host with these limits cannot satisfy: a version above its limit, or one of a family the
 * limits do not know (GLIBC_PRIVATE, say), as "libc.so.6: GLIBC_2.28".
 */
export function beyondLimits(
  needs: readonly VersionNeed[],
  limits: Readonly<Record<string, string>> = CENTOS7_LIMITS,
): string[] {
  const bad: string[] = [];
  for (const { file, versions } of needs) {
    for (const v of versions) {
      const m = /^([A-Z]+)_(\d+(?:\.\d+)*)$/.exec(v);
      const limit = m ? limits[m[1] as string] : undefined;
      if (!m || limit === undefined || compare(m[2] as string, limit) > 0) bad.push(`${file}: ${v}`);
    }
  }
  return bad;
}
