"""A local stand-in for Slack: the Web API methods the bot calls, and signed interactivity requests."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

Call = tuple[str, dict[str, Any]]


@dataclass
class FakeSlackApi:
    """Records every Web API call; ``fail`` maps a method to the Slack error it should return."""

    calls: list[Call] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)
    refuse: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    """Per method, HTTP answers (status, headers) to give its next calls instead of serving them: 429 with
    Retry-After, 5xx. A refused call is not in ``calls``, only in ``answered``."""
    answered: list[tuple[str, int, float]] = field(default_factory=list)
    """Every request: (method, HTTP status, loop time of the answer)."""
    url: str = ""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            params: dict[str, Any] = await request.json()
        else:
            params = dict(await request.post())
        params["_auth"] = request.headers.get("Authorization", "")
        now = asyncio.get_running_loop().time()
        if self.refuse.get(method):
            status, headers = self.refuse[method].pop(0)
            self.answered.append((method, status, now))
            if status == 429:
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
            return web.Response(status=status, text="upstream trouble", headers=headers)
        self.answered.append((method, 200, now))
        async with self._changed:
            self.calls.append((method, params))
            self._changed.notify_all()
        if method in self.fail:
            return web.json_response({"ok": False, "error": self.fail[method]})
        return web.json_response(self._reply(method, params))

    def _reply(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "user_id": "UBOT",
                "bot_id": "BBOT",
                "team_id": "T1",
                "user": "sluicegate",
                "team": "Test",
                "url": "https://test.slack.com/",
            }
        if method == "chat.postMessage":
            return {
                "ok": True,
                "channel": "C" + str(params["channel"]).lstrip("#").upper(),
                "ts": f"1700000000.{next(self._ts):06d}",
                "message": {},
            }
        if method == "chat.update":
            return {"ok": True, "channel": params["channel"], "ts": params["ts"]}
        return {"ok": True}

    def of(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    async def wait_for(
        self, method: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = 20
    ) -> dict[str, Any]:
        """The first recorded call of ``method`` matching ``predicate``, waiting for it if needed."""

        def found() -> dict[str, Any] | None:
            return next((p for p in self.of(method) if predicate(p)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        result = found()
        assert result is not None
        return result


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 request signature: HMAC-SHA256 over ``v0:<timestamp>:<body>``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def post_interaction(
    url: str, payload: dict[str, Any], secret: str, *, timestamp: int | None = None
) -> tuple[int, str]:
    """POST an interactivity payload the way Slack does; returns (status, body)."""
    body = "payload=" + urllib.parse.quote(json.dumps(payload))
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body.encode(), headers=sign(secret, body, timestamp)) as response,
    ):
        return response.status, await response.text()


def block_action(action_id: str, value: str, user: str, channel: str, ts: str) -> dict[str, Any]:
    """A ``block_actions`` payload: a button click on a message."""
    return {
        "type": "block_actions",
        "team": {"id": "T1", "domain": "test"},
        "api_app_id": "A1",
        "user": {"id": user, "username": user.lower(), "team_id": "T1"},
        "token": "legacy",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "1234.5678.abcd",
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": "..."},
        "response_url": "https://example.invalid/r",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "sluicegate_actions",
                "value": value,
                "action_ts": "1700000001.000100",
            }
        ],
    }


def view_submission(callback_id: str, metadata: str, user: str, reason: str) -> dict[str, Any]:
    """A ``view_submission`` payload: the deny modal submitted with a reason."""
    return {
        "type": "view_submission",
        "team": {"id": "T1", "domain": "test"},
        "api_app_id": "A1",
        "user": {"id": user, "username": user.lower(), "team_id": "T1"},
        "token": "legacy",
        "trigger_id": "1234.5678.efgh",
        "view": {
            "id": "V1",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": metadata,
            "team_id": "T1",
            "app_id": "A1",
            "bot_id": "BBOT",
            "hash": "h",
            "state": {"values": {"reason": {"reason_input": {"type": "plain_text_input", "value": reason}}}},
        },
    }
