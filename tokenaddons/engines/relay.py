"""The loopback server route points a flow at when it must own the attempts
(a chain with fallbacks, or a key the client never sees): each relayed request
carries a one-time token naming the job that answers it."""
from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from tokenaddons.engines.loopback import Incoming, LoopbackServer, Reply

TOKEN_HEADER = "x-tokenaddons-relay"
Job = Callable[[Incoming], Awaitable[Reply]]


class Relay(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, Job] = {}

    def add(self, job: Job) -> str:
        token = secrets.token_hex(16)
        self.jobs[token] = job
        return token

    def cancel(self, token: str | None) -> None:
        """Forget a job whose flow never reached the relay (answered or failed before)."""
        if token:
            self.jobs.pop(token, None)

    async def handle(self, request: Incoming) -> Reply:
        job = self.jobs.pop(request.header(TOKEN_HEADER) or "", None)
        if job is None:
            return Reply(404, [("content-type", "text/plain")], b"tokenaddons relay: no such job\n")
        return await job(request)
