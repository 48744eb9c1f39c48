"""The plain TCP target: listens on the given ports with a known backlog and never accepts,
so every SYN either waits in the listener's queue (SYN_RECV) or is refused when it is full.

Started by ``targets.TcpListenerTarget`` inside the server namespace:
``python -I -S .../pytrafgen/replay/listener.py --addr A --ports 80,443 --backlog 64``.
"""

from __future__ import annotations

import argparse
import signal
import socket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--ports", required=True, help="comma-separated TCP ports")
    parser.add_argument("--backlog", type=int, required=True)
    args = parser.parse_args()
    sockets = []
    for port in (int(p) for p in args.ports.split(",")):
        sock = socket.socket(socket.AF_INET6 if ":" in args.addr else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.addr, port))
        sock.listen(args.backlog)
        sockets.append(sock)
    while True:  # SIGTERM from the run that started us ends the process (default action)
        signal.pause()


if __name__ == "__main__":
    main()
