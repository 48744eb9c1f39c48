"""Real target servers, started inside a run's server namespace by PID, each with its own
temporary configuration directory, and stopped again by PID.

The credentials are those of the lab target the shared captures were recorded against
(docs/replay.md), so a real brute-force capture ends with one success, as it did there.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytrafgen.errors import ReplayError
from pytrafgen.replay.netns import NamespacePair, raise_fd_limit

HTTP_USER, HTTP_PASSWORD = "admin", "Gw-adm1n-7734"
MQTT_USER, MQTT_PASSWORD = "iot", "s3ns0r-Pa55"
READY_TIMEOUT_S = 10.0

# /proc/net/tcp state codes
TCP_ESTABLISHED, TCP_SYN_RECV, TCP_LISTEN = 0x01, 0x03, 0x0A


COAP_PACKAGE = "libcoap3-bin"
# Names a binary is installed under (Debian's libcoap3-bin has no plain ``coap-server``).
_ALTERNATIVES = {"coap-server": ("coap-server", "coap-server-notls", "coap-server-gnutls", "coap-server-openssl")}


def require_binary(name: str, package: str) -> str:
    """The binary's path (under any of its names), or a ReplayError that says what to install."""
    path = None
    for candidate in _ALTERNATIVES.get(name, (name,)):
        path = shutil.which(candidate) or next(
            (str(p) for p in (Path("/usr/sbin") / candidate, Path("/sbin") / candidate) if p.exists()), None)
        if path is not None:
            break
    if path is None:
        raise ReplayError(f"`{name}` is not installed; replay needs it as a target: apt-get install {package}")
    return path


def _proc_rows(pid: int, table: str) -> list[list[str]]:
    """The rows of ``/proc/PID/net/TABLE`` and of its IPv6 twin (``tcp``/``tcp6``, ``udp``/``udp6``)."""
    rows = []
    for name in (table, f"{table}6"):
        with open(f"/proc/{pid}/net/{name}") as fh:
            next(fh)
            rows += [line.split() for line in fh]
    return rows


def tcp_sockets(pid: int) -> list[tuple[int, int, int]]:
    """(local port, state, remote port) of every TCP socket (IPv4 and IPv6) in ``pid``'s network
    namespace."""
    return [(int(cols[1].rsplit(":", 1)[1], 16), int(cols[3], 16), int(cols[2].rsplit(":", 1)[1], 16))
            for cols in _proc_rows(pid, "tcp")]


def udp_drops(pid: int, port: int) -> int:
    """Datagrams the namespace dropped at the UDP sockets bound to ``port`` (receive buffer full)."""
    return sum(int(cols[-1]) for cols in _proc_rows(pid, "udp") if int(cols[1].rsplit(":", 1)[1], 16) == port)


def listening_ports(pid: int) -> set[int]:
    """Ports on which ``pid`` itself holds a listening TCP socket or a bound UDP socket (matched
    by socket inode, so a port held by another process in the namespace does not count)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            link = (fd_dir / fd.name).readlink()
        except OSError:
            continue
        if str(link).startswith("socket:["):
            inodes.add(str(link)[8:-1])
    ports = {int(cols[1].rsplit(":", 1)[1], 16) for cols in _proc_rows(pid, "tcp")
             if int(cols[3], 16) == TCP_LISTEN and cols[9] in inodes}
    ports |= {int(cols[1].rsplit(":", 1)[1], 16) for cols in _proc_rows(pid, "udp") if cols[9] in inodes}
    return ports


def tcp_counters(pid: int) -> dict[str, int]:
    """The namespace's TcpExt, Tcp and Udp counters (``/proc/PID/net/netstat`` and ``snmp``) and
    its Udp6 counters (``snmp6``), as ``Prefix.Name``."""
    counters: dict[str, int] = {}
    for name in ("netstat", "snmp"):
        with open(f"/proc/{pid}/net/{name}") as fh:
            lines = fh.read().splitlines()
        for head, values in zip(lines[::2], lines[1::2], strict=True):
            prefix, keys = head.split(":", 1)
            if prefix in ("TcpExt", "Tcp", "Udp"):
                for key, value in zip(keys.split(), values.split(":", 1)[1].split(), strict=True):
                    counters[f"{prefix}.{key}"] = int(value)
    with open(f"/proc/{pid}/net/snmp6") as fh:
        for line in fh:
            key, value = line.split()
            if key.startswith("Udp6"):
                counters[f"Udp6.{key[4:]}"] = int(value)
    return counters


def udp_counters(pid: int, family: int) -> dict[str, int]:
    """The namespace's UDP counters of IP version ``family`` without their prefix
    (InDatagrams, NoPorts, InErrors, RcvbufErrors, ...)."""
    prefix = "Udp." if family == 4 else "Udp6."
    return {k[len(prefix):]: v for k, v in tcp_counters(pid).items() if k.startswith(prefix)}


@dataclass
class Target:
    """A running server: its process (stopped by PID), the ports it listens on, its files."""

    name: str
    pair: NamespacePair
    workdir: Path
    ports: tuple[int, ...]
    proc: subprocess.Popen | None = None
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ReplayError(f"{self.name} target is not running")
        return self.proc.pid

    def _launch(self, argv: list[str]) -> None:
        raise_fd_limit()  # the server inherits it: a flood must meet the server's limits, not ours
        log = self.workdir / f"{self.name}.stdout"
        with log.open("wb") as out:
            self.proc = self.pair.popen("server", argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ReplayError(f"{self.name} exited at start (code {self.proc.returncode}): "
                                  f"{log.read_text(errors='replace').strip()[-400:]}")
            if set(self.ports) <= listening_ports(self.proc.pid):
                return
            time.sleep(0.02)
        raise ReplayError(f"{self.name} did not listen on {self.ports} within {READY_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.proc is not None:
            self.pair.stop(self.proc)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_tcp_listener(pair: NamespacePair, workdir: Path, ports: tuple[int, ...], backlog: int,
                       family: int = 4) -> Target:
    """The plain listener (``pytrafgen.replay.listener``): never accepts, known backlog."""
    target = Target("listener", pair, workdir, ports)
    # Run as a plain script (-I: isolated, -S: no site): it needs only the standard library, and
    # importing the pytrafgen package would slow every start down.
    script = str(Path(__file__).with_name("listener.py"))
    target._launch([sys.executable, "-I", "-S", script, "--addr", str(pair.server(family)),
                    "--ports", ",".join(map(str, ports)), "--backlog", str(backlog)])
    return target


def _listen_address(addr: object) -> str:
    text = str(addr)
    return f"[{text}]" if ":" in text else text


def start_nginx(pair: NamespacePair, workdir: Path, port: int = 80, family: int = 4,
                worker_connections: int = 2048) -> Target:
    """nginx with a site, a basic-auth ``/admin/`` location and an access log of status codes
    and completion times; ``worker_connections`` is all the connections it can hold at once."""
    binary = require_binary("nginx", "nginx")
    root = workdir / "www"
    (root / "admin").mkdir(parents=True)
    (root / "index.html").write_text("<html><body>pytrafgen replay target</body></html>\n")
    (root / "admin" / "index.html").write_text("<html><body>admin</body></html>\n")
    sha = base64.b64encode(hashlib.sha1(HTTP_PASSWORD.encode()).digest()).decode()
    (workdir / "htpasswd").write_text(f"{HTTP_USER}:{{SHA}}{sha}\n")
    temp = workdir / "nginx-temp"
    temp.mkdir()
    access = workdir / "access.log"
    conf = workdir / "nginx.conf"
    # One process (master_process off): the PID we hold is the whole server.
    conf.write_text(f"""
daemon off;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    default_type text/html;
    log_format replay '$remote_addr $status "$request_method $request_uri" $request_length $msec';
    access_log {access} replay;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen {_listen_address(pair.server(family))}:{port} backlog=511;
        root {root};
        location /admin/ {{
            auth_basic "admin";
            auth_basic_user_file {workdir}/htpasswd;
        }}
    }}
}}
""")
    target = Target("nginx", pair, workdir, (port,), logs={"access": access})
    target._launch([binary, "-p", str(workdir), "-c", str(conf)])
    return target


def start_mosquitto(pair: NamespacePair, workdir: Path, port: int = 1883, family: int = 4) -> Target:
    """mosquitto with password authentication (anonymous refused) and connection logging."""
    binary = require_binary("mosquitto", "mosquitto")
    passwd_tool = require_binary("mosquitto_passwd", "mosquitto")
    passwd = workdir / "passwd"
    subprocess.run([passwd_tool, "-c", "-b", str(passwd), MQTT_USER, MQTT_PASSWORD],
                   check=True, capture_output=True, timeout=30)
    passwd.chmod(0o600)
    log = workdir / "mosquitto.log"
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"""
user root
per_listener_settings false
listener {port} {pair.server(family)}
allow_anonymous false
password_file {passwd}
persistence false
max_connections -1
connection_messages true
log_dest file {log}
log_type error
log_type warning
log_type notice
log_type information
log_timestamp true
""")
    target = Target("mosquitto", pair, workdir, (port,), logs={"log": log})
    target._launch([binary, "-c", str(conf)])
    return target


def start_coap_server(pair: NamespacePair, workdir: Path, port: int = 5683, family: int = 4) -> Target:
    """libcoap's ``coap-server`` (the lab's CoAP service) on UDP ``port``, answering GET /time,
    /, /.well-known/core and the other example resources."""
    target = Target("coap-server", pair, workdir, (port,))
    target._launch([require_binary("coap-server", COAP_PACKAGE), "-A", str(pair.server(family)), "-p", str(port), "-v", "0"])
    return target
