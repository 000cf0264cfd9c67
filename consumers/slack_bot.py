"""The Slack reviewer bot: posts approval requests, turns button clicks into ApprovalVerdicts.

slack-bolt's AsyncApp behind an aiohttp server (HTTP mode): the bot also runs an aiokafka consumer and
producer, so one asyncio loop serves Slack's interactivity requests and Kafka, with no extra threads or
dependencies (aiohttp is already used by slack_sdk's async client). Bolt verifies Slack's request
signature (v0 HMAC-SHA256 over the timestamped body) and answers 401 to anything forged or stale.

One consumer group reads three topics, all keyed by request id, and commits after each batch, up to the
last record handled in each partition: a record whose handling fails is retried (``record_attempts``,
with backoff), then parked on the dead-letter topic with the error and where it came from; if even that
fails, nothing past it is committed and it is read again.
- approval-requests: post the message (skipped when this request was already handled: the posted-store
  file survives restarts, so a redelivered request is never posted twice);
- approvals: show verdicts received (from Slack or the CLI) on the message;
- approval-results: the final decision of an approval (compacted, one per request) replaces the buttons
  with the outcome; a final read before its request is applied when the request is posted.
The fleet-wide decisions topic, where agents get the same finals among every other decision, is not read.

Slack's Web API: a rate-limited call (HTTP 429) is retried after the ``Retry-After`` it names, a 5xx or a
connection failure after a backoff, up to ``api_attempts`` times. A request is posted once: the posted
store records it in memory as soon as Slack answers and durably before the offset is committed, so no
retry or redelivery posts it again (Slack has no idempotency key: only a crash between its answer and
the store's fsync can post a request twice).

Trust (see :mod:`sluicegate.cli.review`, shared with the CLI): a request or a final that is not signed by
the workers (``SLUICEGATE_TRUST_PUBLIC_KEY``) is logged and ignored, never posted nor taken as an outcome;
a request whose intent digest is not the digest of the intent it shows is ignored too (trust on or off).
Verdicts are signed with the bot's credential (``sg-signer: bot:<name>``); the workers accept them for the
reviewers this bot maps. A verdict read from the approvals topic is shown on a message only when it
verifies with the bot's own key: reviewer (CLI) credentials are derived from the workers' key ring, which
the bot does not hold, so CLI verdicts appear with the final outcome. With trust off everything is taken
as is, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias
from uuid import UUID

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import ValidationError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from consumers.slack_blocks import (
    ACTION_APPROVE,
    ACTION_DENY,
    DENY_CALLBACK,
    REASON_BLOCK,
    REASON_INPUT,
    ActionRef,
    MessageStatus,
    approval_message,
    deny_modal,
    outcome_text,
)
from consumers.slack_identity import SlackIdentityMap
from consumers.slack_store import PostedMessage, PostedStore
from schemas import ApprovalRequest, ApprovalVerdict, Decision, TopicNames, VerdictKind
from schemas.topics import dead_letter_headers
from sluicegate.cli.review import ReviewTrust, digest_mismatch, where
from sluicegate.settings import KafkaOptions
from sluicegate.trust import SIGNER_HEADER, SignerCredential, TrustError, check, header, split_authenticator

log = logging.getLogger(__name__)

TRANSIENT_SLACK_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                                    "request_timeout"})
MAX_EARLY_FINALS = 10_000
STORE_RETENTION = timedelta(days=7)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class SlackConfigError(ValueError):
    """The bot cannot start: a token, secret or file is missing or invalid."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SlackBotConfig:
    """Everything the bot needs; build it with :meth:`create` to get clear errors for missing values."""

    bot_token: str = field(repr=False)
    signing_secret: str = field(repr=False)
    bootstrap_servers: str
    identities: SlackIdentityMap
    state_file: Path
    trust: ReviewTrust
    credential: SignerCredential | None = field(default=None, repr=False)
    """Signs the bot's verdicts (kind ``bot``); None only with trust off (unsigned verdicts)."""
    kafka_options: KafkaOptions = field(default_factory=dict, repr=False)
    """The Kafka clients' security options (:meth:`Settings.kafka_client_options`)."""
    topics: TopicNames = field(default_factory=TopicNames)
    default_channel: str | None = None
    api_url: str | None = None
    host: str = "0.0.0.0"
    port: int = 3000
    path: str = "/slack/events"
    group_id: str = "sluicegate-slack-bot"
    api_attempts: int = 5
    """Tries of one Web API call (rate limits, 5xx, connection failures) before giving up on it."""
    record_attempts: int = 3
    """Tries of handling one record before it is dead-lettered."""
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    """Backoff between tries (doubling); a 429's Retry-After is waited instead, up to the max below."""
    max_retry_after_s: float = 300.0

    @classmethod
    def create(
        cls, *, bot_token: str | None, signing_secret: str | None, reviewers_file: Path | None,
        trust_public_key: str | None = None, trust_off: bool = False, bot_credential: str | None = None,
        **options: Any,
    ) -> SlackBotConfig:
        """Validate secrets, trust and the reviewer mapping; SlackConfigError names what is missing."""
        missing = [name for name, value in (("SLUICEGATE_SLACK_BOT_TOKEN", bot_token),
                                            ("SLUICEGATE_SLACK_SIGNING_SECRET", signing_secret)) if not value]
        if missing:
            raise SlackConfigError(f"the Slack bot needs {' and '.join(missing)}")
        assert bot_token and signing_secret
        if not bot_token.startswith("xoxb-"):
            raise SlackConfigError("SLUICEGATE_SLACK_BOT_TOKEN must be a bot token (xoxb-...)")
        if reviewers_file is None:
            raise SlackConfigError("the Slack bot needs SLUICEGATE_SLACK_REVIEWERS_FILE (user -> reviewer)")
        try:
            identities = SlackIdentityMap.load(reviewers_file)
        except ValueError as exc:
            raise SlackConfigError(str(exc)) from exc
        trust, credential = _trust(trust_public_key, trust_off, bot_credential)
        return cls(bot_token=bot_token, signing_secret=signing_secret, identities=identities, trust=trust,
                   credential=credential, **options)


def _trust(
    public_key: str | None, trust_off: bool, credential: str | None
) -> tuple[ReviewTrust, SignerCredential | None]:
    """What the bot verifies with and signs with; SlackConfigError naming the missing setting."""
    try:
        trust = ReviewTrust.configure(public_key, trust_off, who="the Slack bot")
    except TrustError as exc:
        raise SlackConfigError(str(exc)) from exc
    if not (credential and credential.strip()):
        if trust.off:
            return trust, None
        raise SlackConfigError("the Slack bot needs SLUICEGATE_BOT_CREDENTIAL (sluicegate trust bot DIR "
                               "NAME) to sign verdicts: the workers reject unsigned ones")
    try:
        return trust, SignerCredential.parse(credential, "bot")
    except (TrustError, UnicodeDecodeError) as exc:
        raise SlackConfigError(f"SLUICEGATE_BOT_CREDENTIAL is not a bot credential: {exc}") from exc


def signed_by(credential: SignerCredential, record: Record) -> bool:
    """Whether ``record`` carries ``credential``'s signer and a valid authenticator under its key."""
    if header(record.headers, SIGNER_HEADER) != credential.signer:
        return False
    try:
        key_id, mac = split_authenticator(header(record.headers))
        if key_id != credential.key_id:
            return False
        check(credential.key, record.value or b"", mac)
    except TrustError:
        return False
    return True


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        return status == 429 or status >= 500 or _slack_error(exc) in TRANSIENT_SLACK_ERRORS
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError)


def _slack_error(exc: SlackApiError) -> object:
    data = exc.response.data
    return data.get("error") if isinstance(data, dict) else None


def retry_after_s(exc: Exception) -> float | None:
    """The wait a rate-limited answer (HTTP 429) asks for in its ``Retry-After`` header (seconds)."""
    if not isinstance(exc, SlackApiError) or exc.response.status_code != 429:
        return None
    headers = exc.response.headers or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class SlackApprovalBot:
    """The bot: call :meth:`start`, then :meth:`stop`; ``port`` is the bound HTTP port once started."""

    def __init__(self, config: SlackBotConfig, clock: Callable[[], datetime] = _utcnow) -> None:
        self.config = config
        self._clock = clock
        self._store = PostedStore(config.state_file, forget_before=clock() - STORE_RETENTION)
        self._early_finals: dict[UUID, Decision] = {}
        base_url = config.api_url or AsyncWebClient.BASE_URL
        self.client = AsyncWebClient(token=config.bot_token, base_url=base_url)
        self.bolt = AsyncApp(client=self.client, signing_secret=config.signing_secret, logger=log)
        self.bolt.action(ACTION_APPROVE)(self._on_approve)
        self.bolt.action(ACTION_DENY)(self._on_deny)
        self.bolt.view(DENY_CALLBACK)(self._on_deny_reason)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        """The aiohttp application: Slack's interactivity endpoint and a health check."""
        app = web.Application()
        app.router.add_post(self.config.path, self._handle_slack)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self) -> None:
        """Connect to Kafka, bind the HTTP endpoint and start consuming; on failure, close what started."""
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise
        log.info("slack bot listening on %s:%s%s", self.config.host, self.port, self.config.path)
        if self.config.trust.off:
            log.warning("trust is off: approval requests, finals and verdicts are taken without verification")

    async def _start(self) -> None:
        topics = self.config.topics
        self._producer = AIOKafkaProducer(bootstrap_servers=self.config.bootstrap_servers, acks="all",
                                          enable_idempotence=True, **self.config.kafka_options)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            topics.approval_requests, topics.approvals, topics.approval_results,
            bootstrap_servers=self.config.bootstrap_servers, group_id=self.config.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", **self.config.kafka_options,
        )
        await self._consumer.start()
        self._runner = web.AppRunner(self.web_app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._task = asyncio.create_task(self._consume(), name="slack-bot-consume")

    async def stop(self) -> None:
        """Stop consuming (after the batch in hand), close the HTTP server and the Kafka clients."""
        if self._task is not None:
            await self._idle.wait()  # a batch is never cut between a post and its record and commit
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close()

    async def _close(self) -> None:
        """Close the HTTP server and the Kafka clients that exist (also after a start that failed)."""
        if self._runner is not None:
            await self._runner.cleanup()
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._task = self._runner = self._consumer = self._producer = None

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _handle_slack(self, request: web.Request) -> web.Response:
        bolt_response = await self.bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    # -- Kafka -------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        try:
            while True:
                self._idle.set()
                batch = await self._consumer_or_fail().getmany(timeout_ms=1000)
                self._idle.clear()
                await self._handle_batch(batch)
        finally:
            self._idle.set()

    def _consumer_or_fail(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the bot is not started")
        return self._consumer

    async def _handle_batch(self, batch: dict[Any, list[Record]]) -> None:
        handlers: dict[str, Callable[[Record], Awaitable[None]]] = {
            self.config.topics.approval_requests: self._on_request_record,
            self.config.topics.approvals: self._on_verdict_record,
            self.config.topics.approval_results: self._on_result_record,
        }
        consumer = self._consumer_or_fail()
        handled: dict[TopicPartition, int] = {}
        for partition, records in batch.items():
            for record in records:
                if not await self._handle(handlers[partition.topic], record):
                    consumer.seek(partition, record.offset)  # read it again; commit nothing past it
                    break
                handled[partition] = record.offset + 1
        if handled:
            try:
                await consumer.commit(handled)
            except Exception as exc:  # e.g. a rebalance: the batch is redelivered, the store dedups posts
                log.warning("offset commit failed: %s", exc)

    async def _handle(self, handler: Callable[[Record], Awaitable[None]], record: Record) -> bool:
        """Handle ``record`` (and make what it recorded durable), retrying with backoff; after the last
        try, dead-letter it. False when even that failed: the record is not done with."""
        delay = self.config.retry_initial_s
        for attempt in range(1, self.config.record_attempts + 1):
            try:
                await handler(record)
                self._store.flush()
                return True
            except Exception as exc:  # one bad record never stops the bot
                error = f"{type(exc).__name__}: {exc}"
                log.warning("handling %s failed (try %d of %d): %s", where(record), attempt,
                            self.config.record_attempts, error)
            if attempt < self.config.record_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
        try:
            await self._dead_letter(record, f"the Slack bot could not handle it: {error}")
        except Exception as exc:
            log.error("could not dead-letter %s (%s); it will be read again", where(record), exc)
            return False
        return True

    async def _dead_letter(self, record: Record, error: str) -> None:
        """Park ``record`` on the dead-letter topic, with the error and where it came from."""
        assert self._producer is not None
        log.error("dead-lettering %s: %s", where(record), error)
        headers = dead_letter_headers(error, record.topic, record.partition, record.offset)
        await self._producer.send_and_wait(self.config.topics.dead_letter, value=record.value, key=record.key,
                                           headers=headers)

    async def _on_request_record(self, record: Record) -> None:
        value = record.value
        try:
            self.config.trust.verify(record)
        except TrustError as exc:
            log.warning("ignoring the approval request at %s: %s", where(record), exc)
            return
        try:
            request = ApprovalRequest.model_validate_json(value or b"")
        except ValidationError as exc:
            await self._dead_letter(record, f"invalid ApprovalRequest: {exc}")
            return
        mismatch = digest_mismatch(request)
        if mismatch is not None:
            log.error("ignoring approval request %s at %s: %s", request.request_id, where(record), mismatch)
            return
        if request.request_id in self._store:
            log.info("request %s was already handled; not posting again", request.request_id)
            return
        await self.post_request(request)

    async def post_request(self, request: ApprovalRequest) -> None:
        """Post the approval message and record it; requests past their deadline are recorded, not posted."""
        channel = request.channel or self.config.default_channel
        status = MessageStatus()
        early = self._early_finals.pop(request.request_id, None)
        if early is not None:
            status = status.model_copy(update={"outcome": outcome_text(early)})
        if channel is None:
            log.error("request %s has no channel and no default channel is set", request.request_id)
            self._store.put(PostedMessage(request=request, status=status, note="no channel"))
            return
        if early is None and self._clock() >= request.deadline_at:
            self._store.put(PostedMessage(request=request, channel=channel, status=status, note="expired"))
            return
        text, blocks = approval_message(request, status)
        what = f"posting request {request.request_id} to {channel}"
        try:
            response = await self._api(what, lambda: self.client.chat_postMessage(
                channel=channel, text=text, blocks=blocks))
        except Exception as exc:
            log.error("%s failed: %s (it will expire: BLOCK)", what, exc)
            failed = PostedMessage(request=request, channel=channel, status=status, note="post failed")
            self._store.put(failed)
            return
        data = response.data if isinstance(response.data, dict) else {}
        self._store.put(PostedMessage(
            request=request, channel=str(data.get("channel", channel)), ts=str(data.get("ts")), status=status
        ))

    async def _api(self, what: str, call: Callable[[], Awaitable[AsyncSlackResponse]]) -> AsyncSlackResponse:
        """One Web API call: a 429 is retried after its Retry-After, a 5xx or connection failure after a
        backoff, up to ``api_attempts`` tries; anything else, or the last failure, is raised."""
        delay = self.config.retry_initial_s
        for attempt in range(1, self.config.api_attempts):
            try:
                return await call()
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                asked = retry_after_s(exc)
                wait = delay if asked is None else min(asked, self.config.max_retry_after_s)
                log.warning("%s failed (%s); try %d of %d in %.1f s", what, exc, attempt + 1,
                            self.config.api_attempts, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.config.retry_max_s)
        return await call()

    def _shows(self, record: Record) -> bool:
        """Whether a verdict read from the approvals topic may be shown: signed by this bot (trust on)."""
        credential = self.config.credential
        return self.config.trust.off or (credential is not None and signed_by(credential, record))

    async def _on_verdict_record(self, record: Record) -> None:
        if not self._shows(record):
            log.info("not showing the verdict at %s: it is not signed by this bot", where(record))
            return
        try:
            verdict = ApprovalVerdict.model_validate_json(record.value or b"")
        except ValidationError as exc:
            log.warning("ignoring an invalid verdict on the approvals topic: %s", exc)
            return
        await self._show_verdict(verdict)

    async def _show_verdict(self, verdict: ApprovalVerdict) -> None:
        posted = self._store.get(verdict.request_id)
        if posted is None or verdict.intent_digest != posted.request.intent_digest:
            return
        if verdict.verdict is VerdictKind.APPROVE:
            status = posted.status.with_approval(verdict.reviewer)
        else:
            status = posted.status.with_denial(verdict.reviewer, verdict.reason or "no reason given")
        await self._update(posted, status)

    async def _on_result_record(self, record: Record) -> None:
        """A final decision on approval-results: the outcome replaces the buttons of its message."""
        try:
            self.config.trust.verify(record)
        except TrustError as exc:
            log.warning("ignoring the approval final at %s: %s", where(record), exc)
            return
        try:
            decision = Decision.model_validate_json(record.value or b"")
        except ValidationError as exc:
            log.warning("ignoring an invalid decision on the approval-results topic: %s", exc)
            return
        if not decision.final or record.key != str(decision.request_id).encode():
            log.warning("ignoring a record on the approval-results topic that is not the final decision of "
                        "its key (request %s)", decision.request_id)
            return
        posted = self._store.get(decision.request_id)
        if posted is None:
            self._remember_early(decision)
            return
        if posted.status.outcome is None:
            await self._update(posted, posted.status.model_copy(update={"outcome": outcome_text(decision)}))

    def _remember_early(self, decision: Decision) -> None:
        """A final approval decision read before its request: apply it when the request is posted."""
        if len(self._early_finals) >= MAX_EARLY_FINALS:
            self._early_finals.pop(next(iter(self._early_finals)))
        self._early_finals[decision.request_id] = decision

    async def _update(self, posted: PostedMessage, status: MessageStatus) -> None:
        if status == posted.status:
            return
        self._store.put(posted.model_copy(update={"status": status}))
        if posted.channel is None or posted.ts is None:
            return
        text, blocks = approval_message(posted.request, status)
        channel, ts = posted.channel, posted.ts
        try:
            await self._api(f"updating the message of {posted.request.request_id}",
                            lambda: self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks))
        except Exception as exc:  # the verdict stands; only the message is stale
            log.error("could not update the message of %s: %s", posted.request.request_id, exc)

    # -- Slack interactivity -----------------------------------------------------------------------

    async def _reviewer_or_notice(self, body: dict[str, Any]) -> str | None:
        user = str(body.get("user", {}).get("id", ""))
        reviewer = self.config.identities.reviewer_for(user)
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if reviewer is None:
            log.warning("Slack user %s is not mapped to a reviewer; no verdict", user)
            if channel:
                await self.client.chat_postEphemeral(
                    channel=channel, user=user,
                    text="You are not registered as a sluicegate reviewer, so your click was not counted.",
                )
        return reviewer

    def _ref_from_action(self, body: dict[str, Any]) -> ActionRef | None:
        actions = body.get("actions") or [{}]
        ref = ActionRef.decode(str(actions[0].get("value", "")))
        if ref is None:
            return None
        channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id")
        ts = (body.get("container") or {}).get("message_ts") or (body.get("message") or {}).get("ts")
        return ref.model_copy(update={"channel": channel, "ts": ts})

    async def _on_approve(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        ref = self._ref_from_action(body)
        reviewer = await self._reviewer_or_notice(body)
        if ref is not None and reviewer is not None:
            await self._submit(ref, reviewer, VerdictKind.APPROVE, None, str(body["user"]["id"]))

    async def _on_deny(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        ref = self._ref_from_action(body)
        if ref is not None and await self._reviewer_or_notice(body) is not None:
            await self.client.views_open(trigger_id=body["trigger_id"], view=deny_modal(ref))

    async def _on_deny_reason(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        view = body.get("view") or {}
        values = (view.get("state") or {}).get("values") or {}
        reason = str(((values.get(REASON_BLOCK) or {}).get(REASON_INPUT) or {}).get("value") or "").strip()
        if not reason:
            await ack(response_action="errors", errors={REASON_BLOCK: "Please say why you deny this action."})
            return
        await ack()
        ref = ActionRef.decode(str(view.get("private_metadata", "")))
        reviewer = self.config.identities.reviewer_for(str(body.get("user", {}).get("id", "")))
        if ref is None or reviewer is None:
            log.warning("deny modal without a valid reference or a mapped reviewer; no verdict")
            return
        await self._submit(ref, reviewer, VerdictKind.DENY, reason[:2000], str(body["user"]["id"]))

    async def _submit(
        self, ref: ActionRef, reviewer: str, kind: VerdictKind, reason: str | None, user: str
    ) -> None:
        """Produce the verdict (the processor checks it) and show it on the message."""
        assert self._producer is not None
        posted = self._store.get(ref.request_id)
        digest = posted.request.intent_digest if posted is not None else ref.intent_digest
        verdict = ApprovalVerdict(
            request_id=ref.request_id, intent_digest=digest, reviewer=reviewer, verdict=kind, reason=reason,
            source="slack", decided_at=self._clock(),
        )
        try:
            key, value = str(ref.request_id).encode(), verdict.model_dump_json().encode()
            headers = self.config.credential.headers(value) if self.config.credential is not None else None
            await self._producer.send_and_wait(self.config.topics.approvals, key=key, value=value,
                                               headers=headers)
        except Exception as exc:
            log.error("could not send the verdict of %s on %s: %s", reviewer, ref.request_id, exc)
            if ref.channel:
                text = "Your verdict could not be recorded; please try again."
                await self.client.chat_postEphemeral(channel=ref.channel, user=user, text=text)
            return
        await self._show_verdict(verdict)


async def serve(config: SlackBotConfig) -> None:
    """Run the bot until cancelled (e.g. by SIGINT/SIGTERM through ``asyncio.run``), then stop cleanly."""
    bot = SlackApprovalBot(config)
    await bot.start()
    try:
        await asyncio.Event().wait()
    finally:
        await bot.stop()
