"""A WebSocket (OpenAI's Realtime API speaks one) passes through a real mitmdump
with the bundle byte for byte, and its handshake is metered as `other`."""
from __future__ import annotations

import socket
import threading

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, Request, TextMessage

pytestmark = pytest.mark.integration


def pump(sock: socket.socket, ws: WSConnection) -> list:
    """Read until wsproto has events to give."""
    while True:
        data = sock.recv(65536)
        ws.receive_data(data or None)
        events = list(ws.events())
        if events or not data:
            return events


def echo_server() -> tuple[int, threading.Thread]:
    """A one-connection WebSocket server that sends every message back."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        ws = WSConnection(ConnectionType.SERVER)
        with conn:
            while True:
                for event in pump(conn, ws):
                    if isinstance(event, Request):
                        conn.sendall(ws.send(AcceptConnection()))
                    elif isinstance(event, Message):
                        conn.sendall(ws.send(type(event)(data=event.data)))
                    elif isinstance(event, CloseConnection):
                        conn.sendall(ws.send(event.response()))
                        return
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_websocket_frames_pass_through_and_the_handshake_is_metered_as_other(make_proxy):
    port, server = echo_server()
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(ws.send(Request(host="127.0.0.1", target="/v1/realtime?model=gpt-realtime")))
        assert any(isinstance(e, AcceptConnection) for e in pump(sock, ws))
        payloads = ['{"type":"session.update","session":{"instructions":"hi"}}', b"\x00\x01binary\xff"]
        for payload in payloads:
            sock.sendall(ws.send(TextMessage(data=payload) if isinstance(payload, str) else BytesMessage(data=payload)))
            [echo] = pump(sock, ws)
            assert echo.data == payload  # unchanged both ways
        sock.sendall(ws.send(CloseConnection(code=1000)))
        pump(sock, ws)
    server.join(5)
    [row] = proxy.rows(1)
    assert (row["api"], row["provider"], row["status"]) == ("other", "other", 101)
