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
