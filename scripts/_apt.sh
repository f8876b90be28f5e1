# _apt.sh - sourced by install-deps.sh and install-cross-deps.sh: apt-get with
# retries. A Debian mirror caught mid-sync fails `apt-get update` with "File has
# unexpected size ... Mirror sync in progress?" (a CI run failed so on
# 2026-12-05); the same command a little later passes. Up to 4 tries, 15, 30
# and 60 s apart; the last failure is the script's.
#   apt_retry ARGS...   runs $SUDO apt-get ARGS (noninteractive)
apt_retry() {
  local try delay=15
  for try in 1 2 3 4; do
    if DEBIAN_FRONTEND=noninteractive $SUDO apt-get "$@"; then return 0; fi
    [ "$try" -lt 4 ] || return 1
    echo "apt-get $1 failed (try $try of 4): again in ${delay} s" >&2
    sleep "$delay"
    delay=$((delay * 2))
  done
}
