# _resume.sh - check_upload_resumed STATE CUT TOTAL CHUNK: client "a"'s update,
# cut by cutproxy.py after CUT wire bytes, was resumed and counted: its
# accepted audit record names resumed_from > 0, at most 2 chunks (of CHUNK
# bytes) crossed the link twice, the coordinator's and the client's logs name
# the offset of TOTAL, and round 1 counts the update. Sourced after lib.sh.
check_upload_resumed() {
  local state=$1 cut=$2 total=$3 chunk=$4 from resent
  "$FEDC" audit show --state "$state" --json >"$T/audit.jsonl"
  from=$(jq -r 'select(.kind == "update" and .client == "a" and .outcome == "accepted") | .resumed_from // 0' \
    "$T/audit.jsonl")
  [ -n "$from" ] || fail "no accepted update from a: $(grep update "$T/audit.jsonl")"
  resent=$(((cut - from + chunk - 1) / chunk))
  echo "upload: cut at $cut wire bytes, resumed at byte $from of $total, chunks sent twice <= $resent"
  [ "$from" -gt 0 ] && [ "$resent" -le 2 ] || fail "upload re-sent $resent chunks (resumed at $from, cut at $cut)"
  assert_contains "$T/coord.log" "upload from a resumed at byte $from of $total"
  assert_contains "$T/client-a.log" "upload resumes at byte $from of $total"
  jq -e 'select(.round == 1) | .participants == 1' "$state/rounds.jsonl" >/dev/null ||
    fail "round 1 should count the resumed update: $(cat "$state/rounds.jsonl")"
}
