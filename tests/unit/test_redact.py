"""The redaction of known secret values, in every form a text can carry them."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from enrolment_sync import redact
from enrolment_sync.config import Settings

PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQDf3x9Yq2\n"
    "-----END PRIVATE KEY-----\n"
)


def test_a_registered_value_is_masked_raw_json_escaped_and_percent_encoded() -> None:
    secret = "p@ss/word with space-7731"
    redact.register(secret)
    for text in (secret, json.dumps({"s": secret}), quote(secret, safe="")):
        assert secret not in redact.redact(f"before {text} after")
        assert quote(secret, safe="") not in redact.redact(f"before {text} after")
        assert "[redacted]" in redact.redact(text)


def test_short_values_and_empty_ones_are_not_registered() -> None:
    redact.register("", None, "abc")
    assert redact.redact("abc is a word") == "abc is a word"


def test_nested_json_is_redacted_keys_and_values() -> None:
    redact.register("nested-secret-991")
    got = redact.redact_json({"a": ["x nested-secret-991"], "nested-secret-991": 1, "n": 2})
    assert got == {"a": ["x [redacted]"], "[redacted]": 1, "n": 2}


def test_settings_register_the_worker_token_the_url_passwords_and_the_google_key(tmp_path: Path) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": PEM, "private_key_id": "kid-88213377"}))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kvca_client_secret="kvca-from-settings-55",
        worker_api_token="worker-from-settings-66",
        notify_urls="json://user:notify-pass-77@127.0.0.1:9/hook, mailto://u:mail-pass-88@127.0.0.1",
        google_service_account_file=key_file,
    )
    redact.register_settings(settings)
    text = (
        "kvca-from-settings-55 worker-from-settings-66 notify-pass-77 mail-pass-88 kid-88213377 "
        + json.dumps(PEM)
        + " a key cut short: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    )
    masked = redact.redact(text)
    for leaked in ("settings-55", "settings-66", "pass-77", "pass-88", "88213377", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"):
        assert leaked not in masked
