# Sourced by the async-mode tests after lib.sh and _data.sh: talking to the
# coordinator started last (start_coordinator sets COORD_ADDR), as root, and
# starting clients on the 784-10 model over $T/img*.idx / $T/lbl*.idx.
#   async_admin          ADMIN=(...) for the coordinator started last
#   status               `fedc status --json`
#   client NAME PART ... a client NAME on data part PART, log $T/client-NAME.log, pid in BG_PID
#   held_slow PART       client "slow" on PART, its training held until $T/release-slow exists;
#                        waits for its task; pid in SLOW_PID
async_admin() { ADMIN=(--coordinator "$COORD_ADDR" --pki "$T/pki" --name root); }
status() { "$FEDC" status "${ADMIN[@]}" --json; }
client() { # NAME PART [ARGS...]
  local name=$1 part=$2
  shift 2
  start_bg "client-$name" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$name" \
    --data "idx:$T/img$part.idx,$T/lbl$part.idx" --model 784-10 --json "$@"
}
held_slow() { # PART
  client slow "$1" --train-hold "$T/release-slow"
  SLOW_PID=$BG_PID
  wait_for grep -q '"event": *"task"' "$T/client-slow.log" 20 || fail "slow client got no task"
}
