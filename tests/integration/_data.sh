# _data.sh - make_idx DIR N PARTS: tiny Fashion-MNIST-shaped IDX files
# ($DIR/img<i>.idx, $DIR/lbl<i>.idx), class-dependent so a model can learn.
make_idx() {
  python3 - "$1" "$2" "$3" <<'PY'
import random, struct, sys
t, n, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
for part in range(parts):
    with open(f"{t}/img{part}.idx", "wb") as fi, open(f"{t}/lbl{part}.idx", "wb") as fl:
        fi.write(struct.pack(">IIII", 0x803, n, 28, 28)); fl.write(struct.pack(">II", 0x801, n))
        for i in range(n):
            y = random.randrange(10)
            px = bytearray(random.randrange(40) for _ in range(784))
            for j in range(y * 70, y * 70 + 70): px[j] = 200 + random.randrange(50)
            fi.write(px); fl.write(bytes([y]))
PY
}

# start_idx_clients NAME...: `fedc client` NAME i on $T/img<i>.idx (i = its
# position), model 784-10, against $COORD_ADDR with $T/pki; pids in CL.
start_idx_clients() {
  local i=0 n
  CL=()
  for n in "$@"; do
    start_bg "client-$n" "$FEDC" client --coordinator "$COORD_ADDR" --pki "$T/pki" --name "$n" \
      --data "idx:$T/img$i.idx,$T/lbl$i.idx" --model 784-10
    CL+=("$BG_PID")
    i=$((i + 1))
  done
}
# wait_completed N [TIMEOUT=60]: until the coordinator reports N rounds completed (admin root in $T/pki).
wait_completed() {
  wait_for bash -c "[ \"\$('$FEDC' status --coordinator $COORD_ADDR --pki '$T/pki' --name root --json |
    jq -r .rounds_completed)\" -ge $1 ]" "${2:-60}"
}
