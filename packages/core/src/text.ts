// Text that came from somewhere untrusted (a guest's refusal reason, say), made safe to print on an admin's
// terminal or in a log: control characters — ANSI escape sequences start with one — are shown as \xNN or
// \uNNNN, never sent, and the length is capped. Pure.

/** C0 controls, DEL, C1 controls, and the Unicode line/paragraph separators and bidi overrides. */
// eslint-disable-next-line no-control-regex -- matching control characters is this expression's purpose
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

export function printable(text: string, max = 500): string {
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  return cut.replace(UNPRINTABLE, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}
