"""A plugin that records lifecycle hooks and events, and authenticates a test token."""

from __future__ import annotations

import asyncio

from clawrouter import Actor, hookimpl
from clawrouter.errors import Unauthorized


class Recorder:
    __name__ = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.events: list = []

    @hookimpl
    def startup(self, router):
        async def later():
            await asyncio.sleep(0)
            self.calls.append("startup")

        return later()

    @hookimpl
    def shutdown(self, router):
        self.calls.append("shutdown")

    @hookimpl
    def handle_event(self, router, event):
        self.events.append(event)

    @hookimpl
    def actor_from_request(self, router, scope, token):
        if token == "let-me-in":

            async def actor():
                return Actor("robot:1", "robot")

            return actor()
        if token == "go-away":
            raise Unauthorized("this robot is banned", code="banned")
        return None
