# _cohort.sh - helpers of the tests that run a named cohort: NAMES=(a b ...)
# over make_idx's parts (client NAMES[i] trains on part i), a coordinator at
# $COORD_ADDR, the PKI in $T/pki, and ADMIN=(--coordinator ... --name root).
#   cohort_client NAME [ARGS...]  start `fedc client` NAME in the background
#                                 (BG_PID), with CLIENT_ARGS=(...) and ARGS
#   wait_rounds N [TIMEOUT_S]     until N rounds completed (default 60 s), or fail
#   last_round                    the newest round record (`fedc rounds --json`)
#   expect_round PARTS LEFT WHAT  the newest round completed with PARTS inputs
#                                 and secagg_remaining LEFT (e.g. [6,6,5,5,5]),
#                                 or fail with WHAT and the record
cohort_client() {
  local n=$1 i
  shift
  for i in "${!NAMES[@]}"; do [ "${NAMES[$i]}" = "$n" ] && break; done
  start_bg "client-$n" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$n" \
    --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10 --log info ${CLIENT_ARGS[@]+"${CLIENT_ARGS[@]}"} "$@"
}
wait_rounds() {
  wait_for bash -c "[ \"\$('$FEDC' status ${ADMIN[*]} --json | jq -r .rounds_completed)\" -ge $1 ]" "${2:-60}" ||
    fail "round $1 did not complete: $("$FEDC" status "${ADMIN[@]}" --json)"
}
last_round() { "$FEDC" rounds "${ADMIN[@]}" --json | tail -n 1; }
expect_round() {
  local r
  r=$(last_round)
  jq -e --argjson parts "$1" --argjson left "$2" \
    '.outcome == "completed" and .participants == $parts and .secagg_remaining == $left' <<<"$r" >/dev/null ||
    fail "$3: $r"
}
