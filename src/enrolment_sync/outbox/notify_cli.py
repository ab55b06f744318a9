"""`enrolment-sync notify test [--url URL]`: a short Korean test message to every configured channel, one line each."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import apprise
import typer
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError
from ..runtime import command_settings
from ..terminal import plain_console, print_error
from .channels import AppriseChannels, redacted
from .messages import TITLE_PREFIX, Message
from .policy import split_urls

KST = dt.timezone(dt.timedelta(hours=9), "KST")

notify_app = typer.Typer(help="Notification channels: send a test message.", no_args_is_help=True)
console = plain_console()
err_console = plain_console(stderr=True)


def trial_message(now: dt.datetime) -> Message:
    sent_at = now.astimezone(KST).strftime("%Y-%m-%d %H:%M KST")
    return Message(
        title=f"{TITLE_PREFIX} 알림 채널 시험",
        body=f"알림 채널 시험 메시지입니다 ({sent_at}). 이 메시지가 보이면 채널 설정이 맞습니다.",
    )


def channel_label(url: str) -> str:
    """Apprise's secret-free rendering of the URL (tokens and keys masked) up to its options, else our redaction."""
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    return str(plugin.url(privacy=True)).split("?", 1)[0] if plugin else redacted(url)


@notify_app.command("test")
def test_command(
    url: Annotated[
        list[str] | None,
        typer.Option("--url", help="Test only this Apprise URL (repeatable); default: every configured channel."),
    ] = None,
) -> None:
    """Send a short Korean test message to each channel and print each one's outcome (exit 1 if any failed)."""
    settings = command_settings()
    urls = list(dict.fromkeys(url or split_urls(settings.notify_urls) + split_urls(settings.notify_urls_high)))
    if not urls:
        print_error(err_console, "no channel: set NOTIFY_URLS / NOTIFY_URLS_HIGH or pass --url")
        raise typer.Exit(2)
    try:
        channels = AppriseChannels(urls)
    except ConfigError as exc:
        print_error(err_console, exc)
        raise typer.Exit(2) from exc
    message = trial_message(dt.datetime.now(dt.UTC))
    table = Table("channel", "outcome")
    failed = 0
    for one in urls:
        ok = channels.send(one, message)
        failed += not ok
        table.add_row(channel_label(one), Text("전송됨", style="green") if ok else Text("실패", style="red"))
    console.print(table)
    if failed:
        err_console.print(f"{failed}/{len(urls)} channel(s) failed; the log above says why")
        raise typer.Exit(1)
