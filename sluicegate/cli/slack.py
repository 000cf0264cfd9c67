"""`sluicegate slack run`: the Slack reviewer bot."""

from __future__ import annotations

import asyncio
import contextlib

import typer
from pydantic import SecretStr

from schemas import TopicNames
from sluicegate.cli.extras import require
from sluicegate.settings import Settings

app = typer.Typer(help="The Slack reviewer bot.", no_args_is_help=True)


@app.command("run")
def run() -> None:
    """Post approval requests to Slack and turn button clicks into verdicts (until Ctrl-C)."""
    with require("slack", command="slack run"):
        from consumers.slack_bot import SlackBotConfig, SlackConfigError, serve

    settings = Settings()
    try:
        config = SlackBotConfig.create(
            bot_token=_secret(settings.slack_bot_token),
            signing_secret=_secret(settings.slack_signing_secret),
            reviewers_file=settings.slack_reviewers_file,
            trust_public_key=settings.trust_public_key,
            trust_off=settings.trust_off,
            bot_credential=_secret(settings.bot_credential),
            bootstrap_servers=settings.bootstrap_servers,
            kafka_options=settings.kafka_client_options(),
            state_file=settings.slack_posted_file,
            topics=TopicNames(settings.topic_prefix),
            default_channel=settings.slack_default_channel,
            api_url=settings.slack_api_url,
            host=settings.slack_host,
            port=settings.slack_port,
        )
    except SlackConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
