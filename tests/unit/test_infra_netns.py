"""The multi-host test's helpers that need no namespace: the TCP forwarder, and the clear
failure on a machine that cannot make namespaces."""

from __future__ import annotations

import socket
import threading

import pytest

from tests import netns


def echo_server() -> tuple[socket.socket, threading.Thread]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_the_forwarder_relays_both_ways_and_closes_everything_on_stop() -> None:
    server, _ = echo_server()
    target = server.getsockname()
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    try:
        with netns.TcpForwarder() as forwarder:
            forwarder.add(("127.0.0.2", port), target)
            with socket.create_connection(("127.0.0.2", port), timeout=5) as client:
                client.sendall(b"across the link")
                assert client.recv(100) == b"ACROSS THE LINK"
                held = socket.create_connection(("127.0.0.2", port), timeout=5)
                held.sendall(b"x")
                held.settimeout(5)
                assert held.recv(10) == b"X"  # relayed: the forwarder has counted it
            assert forwarder.relayed == 2
        assert held.recv(10) == b"", "stop closes the connections it relays"
        held.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5)
    finally:
        server.close()


def test_a_machine_without_namespaces_fails_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with (
        pytest.raises(netns.NamespacesRefused, match=r"needs network namespaces.*not root"),
        netns.hosts(2, "refused"),
    ):
        pass


def test_a_refused_ip_command_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: "/bin/false")
    with pytest.raises(netns.NamespacesRefused, match="`ip netns add x` failed"):
        netns._ip("netns", "add", "x")
