"""Other hosts on this machine for tests: network namespaces joined to this one by veth
pairs, and TCP forwarders that let them reach services listening on loopback only.

Each host gets a /30 of its own in 10.213.0.0/16 (the host side is .1, the namespace .2),
chosen among the ones no interface of this machine uses. Everything made here is removed
on exit, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

NAMESPACES_NEEDED = (
    "the multi-host test needs network namespaces (ip netns, veth pairs): run it as root on "
    "a machine that allows them (CAP_SYS_ADMIN and CAP_NET_ADMIN); CI runs it as root"
)


class NamespacesRefused(AssertionError):
    """This machine cannot make the test's hosts: a failure, never a skip."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ip")
    if exe is None:
        raise NamespacesRefused(f"{NAMESPACES_NEEDED}; `ip` (iproute2) is not installed")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise NamespacesRefused(
            f"{NAMESPACES_NEEDED}; `ip {' '.join(args)}` failed: {proc.stderr.strip()}"
        )
    return proc


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _ip("-o", "-4", "addr", "show").stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return nets


def _free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    used = _used_networks()
    candidates = list(ipaddress.IPv4Network("10.213.0.0/16").subnets(new_prefix=30))
    random.Random(os.getpid()).shuffle(candidates)
    free = [net for net in candidates if not any(net.overlaps(u) for u in used)]
    if len(free) < count:
        raise NamespacesRefused("no free /30 left in 10.213.0.0/16 for the test's hosts")
    return free[:count]


@dataclass(frozen=True)
class Host:
    """A network namespace reachable from this one over a veth pair."""

    name: str
    veth: str  # the host-side end, in this namespace
    gateway: str  # this machine's address on the link (where forwarders listen)
    address: str  # the namespace's own address

    def command(self, *argv: str) -> list[str]:
        exe = shutil.which("ip") or "ip"
        return [exe, "netns", "exec", self.name, *argv]


def _remove(host: Host) -> None:
    _ip("netns", "delete", host.name, check=False)  # takes its end of the pair with it
    _ip("link", "delete", host.veth, check=False)


@contextlib.contextmanager
def hosts(count: int, tag: str) -> Iterator[list[Host]]:
    """``count`` namespaces named after ``tag``, each on its own veth link."""
    if os.geteuid() != 0:
        raise NamespacesRefused(f"{NAMESPACES_NEEDED}; this process is not root")
    made: list[Host] = []
    try:
        for index, net in enumerate(_free_subnets(count)):
            first, second = list(net.hosts())
            host = Host(
                name=f"infaas-{tag}-{index}",
                veth=f"vinf{os.getpid() % 100000}h{index}",
                gateway=str(first),
                address=str(second),
            )
            peer = f"vinf{os.getpid() % 100000}n{index}"
            _ip("netns", "add", host.name)
            made.append(host)
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", host.name)
            _ip("addr", "add", f"{host.gateway}/30", "dev", host.veth)
            _ip("link", "set", host.veth, "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/30", "dev", peer)
            _ip("-n", host.name, "link", "set", peer, "up")
            _ip("-n", host.name, "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            _remove(host)


def namespace_exists(name: str) -> bool:
    return name in _ip("netns", "list", check=False).stdout.split()


def link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


class TcpForwarder:
    """Listens on given addresses and relays each connection to a target, both ways.

    The services of this machine listen on loopback only; a forwarder bound to a veth
    address makes them reachable from the namespace behind it. One asyncio loop on a
    thread of its own serves every listener.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-forwarder")
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self.relayed = 0

    def __enter__(self) -> TcpForwarder:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def add(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        future = asyncio.run_coroutine_threadsafe(self._listen(listen, target), self._loop)
        self._servers.append(future.result(10))

    async def _listen(self, listen: tuple[str, int], target: tuple[str, int]) -> asyncio.Server:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            try:
                up_reader, up_writer = await asyncio.open_connection(*target)
            except (OSError, asyncio.CancelledError):
                self._writers.discard(writer)
                writer.close()
                return
            self.relayed += 1
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

        return await asyncio.start_server(accept, listen[0], listen[1], reuse_address=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for server in self._servers:
            await server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
