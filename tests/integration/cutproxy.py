#!/usr/bin/env python3
"""cutproxy.py - a TCP proxy on 127.0.0.1 that cuts a connection once.

    cutproxy.py --target HOST:PORT --port-file FILE [--cut-up N] [--cut-down N] [--silent]
                [--hold-after-cut FILE]

Forwards every connection to the target, byte for byte (the TLS session is
the client's and the coordinator's: the proxy sees only ciphertext). The
first connection whose client-to-server bytes reach N (--cut-up) has exactly
N of them delivered and is then closed on both sides; likewise server to
client for --cut-down. Each cut happens once; later connections (the
client's reconnect) are forwarded whole. --silent: a cut closes only the
client's side; the coordinator's side stays open and is never read again (a
link that died without a FIN reaching the coordinator: its sends stall until
its own timeouts end the call; the receive buffer is kept small so they do).
--hold-after-cut FILE: once a cut has happened, a new connection is accepted
but not forwarded while FILE exists (the client's reconnect waits, its call
still open, while the test restarts the target behind the proxy).
One JSON line per event on stdout:
{"event":"cut","dir":"up","delivered":N,"conn":K} and, at each connection's
end, {"event":"closed","conn":K,"up":BYTES,"down":BYTES}.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time

lock = threading.Lock()
cut_left = {"up": None, "down": None}
silent = False
hold_file = None
cut_done = threading.Event()
held = []  # --silent: coordinator-side sockets of cut connections, kept open unread


def say(**kv):
    with lock:
        print(json.dumps(kv), flush=True)


def take_cut(direction, total_after):
    """How many bytes of this read to deliver before cutting, or None."""
    with lock:
        n = cut_left[direction]
        if n is None or total_after < n:
            return None
        cut_left[direction] = None
        cut_done.set()
        return n


def pump(src, dst, conn, direction, counts, done, sides):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            before = counts[direction]
            cut_at = take_cut(direction, before + len(data))
            if cut_at is not None:
                dst.sendall(data[: cut_at - before])
                counts[direction] = cut_at
                say(event="cut", dir=direction, delivered=cut_at, conn=conn)
                if silent:
                    sides["cut"] = True
                break
            dst.sendall(data)
            counts[direction] = before + len(data)
    except OSError:
        pass
    finally:
        # Either side ending (or a cut) ends the connection on both sides
        # (--silent, once cut: only the client's side).
        for s in (src, dst):
            if sides.get("cut") and s is sides["server"]:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        done.set()


def serve(client, target, conn):
    counts = {"up": 0, "down": 0}
    if hold_file and cut_done.is_set():
        while os.path.exists(hold_file):
            time.sleep(0.05)
    try:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if silent:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        server.connect(target)
    except OSError:
        client.close()
        return
    sides = {"server": server}
    d1, d2 = threading.Event(), threading.Event()
    threading.Thread(target=pump, args=(client, server, conn, "up", counts, d1, sides), daemon=True).start()
    threading.Thread(target=pump, args=(server, client, conn, "down", counts, d2, sides), daemon=True).start()
    d1.wait()
    d2.wait()
    client.close()
    if sides.get("cut"):
        held.append(server)
    else:
        server.close()
    say(event="closed", conn=conn, up=counts["up"], down=counts["down"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--cut-up", type=int)
    ap.add_argument("--cut-down", type=int)
    ap.add_argument("--silent", action="store_true")
    ap.add_argument("--hold-after-cut")
    a = ap.parse_args()
    global silent, hold_file
    silent = a.silent
    hold_file = a.hold_after_cut
    host, port = a.target.rsplit(":", 1)
    cut_left["up"], cut_left["down"] = a.cut_up, a.cut_down
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.replace(a.port_file + ".tmp", a.port_file)
    conn = 0
    while True:
        c, _ = ls.accept()
        conn += 1
        threading.Thread(target=serve, args=(c, (host, int(port)), conn), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
