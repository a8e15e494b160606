#!/bin/bash
# Runs a shell command in a test host's Dom0 through its serial console and prints its output.
# usage: console.sh NAME TIMEOUT_S 'command'   (exit status: the command's; 124 on timeout)
set -u
CACHE=${XENROAM_XEN_CACHE:-/var/cache/xenroam-xen}
RUN=${RUN:-$CACHE/run}
NAME=$1 TIMEOUT=$2; shift 2
MARK="XR$RANDOM$RANDOM"
LOG="$RUN/$NAME.log"
START=$(stat -c %s "$LOG")
# Slowly: the emulated UART drops characters typed faster than the guest reads them.
LINE="$*; echo $MARK \$?"
{ for ((i = 0; i < ${#LINE}; i += 8)); do printf '%s' "${LINE:i:8}"; sleep 0.05; done; printf '\r'; sleep 0.5; } |
  socat -u - "UNIX-CONNECT:$RUN/$NAME.sock"
T0=$SECONDS
# The marker line: "MARK STATUS" at the end of a line (a long command line's redraw may precede it).
until tail -c +$((START + 1)) "$LOG" | tr -d '\r' | grep -aqE "$MARK [0-9]+$"; do
  if ((SECONDS - T0 >= TIMEOUT)); then
    echo "console.sh: no answer from $NAME within ${TIMEOUT}s" >&2
    tail -c +$((START + 1)) "$LOG" | tail -5 >&2
    exit 124
  fi
  sleep 0.3
done
OUT=$(tail -c +$((START + 1)) "$LOG" | tr -d '\r')
printf '%s\n' "$OUT" | sed -n "2,/$MARK [0-9][0-9]*\$/p" | sed '$d'
exit "$(printf '%s\n' "$OUT" | grep -aE "$MARK [0-9]+$" | tail -1 | awk '{print $NF}')"
