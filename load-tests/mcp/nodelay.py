#!/usr/bin/env python3
"""Runs a Python server script with TCP_NODELAY on the sockets it listens on.

    nodelay.py SCRIPT [ARGS...]

tests/mcp/server.py binds its own socket (`socket.socket(AF_INET, SOCK_STREAM)`, protocol 0),
and asyncio sets TCP_NODELAY only on sockets created with IPPROTO_TCP, so uvicorn's two writes
of an answer (head, then body) meet Nagle: the body waits for the client's delayed ACK, ~40 ms
on every keep-alive request after the first. Set on the listening socket, the option is
inherited by every accepted connection (Linux), and the server runs unchanged otherwise.
"""
import runpy
import socket
import sys

_listen = socket.socket.listen


def listen(self, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6) and self.type == socket.SOCK_STREAM:
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _listen(self, *args)


socket.socket.listen = listen
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
