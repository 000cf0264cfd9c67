"""``sluicegate trust ...`` through the real command line app: keys, credentials, rotation, retirement."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluicegate.cli import _register, app
from sluicegate.trust import (
    AgentCredential,
    KeyRing,
    RequestSigner,
    SignerCredential,
    TrustError,
    agent_names,
    check,
    split_authenticator,
    verify_signed,
)

_register()
LINE = re.compile(r"^SLUICEGATE_[A-Z_]+=\S+$")
INTENT = b'{"request_id": "0b6f...", "agent_id": "support-7", "tool": "payments.refund"}'


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str, code: int = 0, env: dict[str, str] | None = None) -> dict[str, str]:
    """Invoke ``sluicegate trust ARGS``; check the exit code and that stdout is only NAME=value lines."""
    result = runner.invoke(app, ["trust", *args], env=env)
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert all(LINE.match(line) for line in lines), result.stdout
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def keydir(runner: CliRunner, tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    run(runner, "init", str(directory))
    return directory


def ring_of(directory: Path) -> KeyRing:
    return KeyRing.parse((directory / "keyring").read_text())


def agent_verifies(ring: KeyRing, credential: AgentCredential, value: bytes = INTENT) -> None:
    """What a worker does with an intent: derive the key from the claimed identity, check the MAC."""
    key_id, mac = split_authenticator(credential.authenticate(value))
    names = agent_names(credential.agent_id, credential.role, credential.environment, credential.owner)
    check(ring.derive(key_id, "agent", *names), value, mac)


def test_init_creates_private_key_files_and_prints_the_settings(runner: CliRunner, tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    printed = run(runner, "init", str(directory))
    assert set(printed) == {
        "SLUICEGATE_TRUST_KEYS", "SLUICEGATE_TRUST_SIGNING_KEY", "SLUICEGATE_TRUST_PUBLIC_KEY",
    }
    for name in ("keyring", "signing-key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    ring = KeyRing.parse(printed["SLUICEGATE_TRUST_KEYS"])
    assert str(ring) == str(ring_of(directory)) and len(ring.keys) == 1
    signer = RequestSigner.parse(printed["SLUICEGATE_TRUST_SIGNING_KEY"])
    assert signer.public == printed["SLUICEGATE_TRUST_PUBLIC_KEY"]


def test_init_refuses_to_overwrite(runner: CliRunner, keydir: Path) -> None:
    before = (keydir / "keyring").read_text(), (keydir / "signing-key").read_text()
    result = runner.invoke(app, ["trust", "init", str(keydir)])
    assert result.exit_code == 1 and result.stdout == ""
    assert "refusing to overwrite" in result.stderr
    assert ((keydir / "keyring").read_text(), (keydir / "signing-key").read_text()) == before


def test_agent_credential_fixes_the_identity_and_verifies(runner: CliRunner, keydir: Path) -> None:
    printed = run(runner, "agent", str(keydir), "support-7", "--role", "support",
                  "--environment", "production", "--owner", "team-support")
    assert set(printed) == {"SLUICEGATE_AGENT_CREDENTIAL", "SLUICEGATE_TRUST_PUBLIC_KEY"}
    credential = AgentCredential.parse(printed["SLUICEGATE_AGENT_CREDENTIAL"])
    assert (credential.agent_id, credential.role, credential.environment, credential.owner) == (
        "support-7", "support", "production", "team-support")
    ring = ring_of(keydir)
    agent_verifies(ring, credential)
    # The same key claiming another environment does not verify.
    key_id, mac = split_authenticator(credential.authenticate(INTENT))
    with pytest.raises(TrustError):
        check(ring.derive(key_id, "agent", "support-7", "support", "staging", "team-support"), INTENT, mac)
    public = RequestSigner.parse((keydir / "signing-key").read_text()).public
    assert printed["SLUICEGATE_TRUST_PUBLIC_KEY"] == public


def test_agent_without_an_owner(runner: CliRunner, keydir: Path) -> None:
    printed = run(runner, "agent", str(keydir), "ops-1", "--role", "devops", "--environment", "staging")
    credential = AgentCredential.parse(printed["SLUICEGATE_AGENT_CREDENTIAL"])
    assert credential.owner is None
    agent_verifies(ring_of(keydir), credential)


@pytest.mark.parametrize(("kind", "variable", "public"), [
    ("reviewer", "SLUICEGATE_REVIEWER_CREDENTIAL", True),
    ("bot", "SLUICEGATE_BOT_CREDENTIAL", True),
    ("publisher", "SLUICEGATE_PUBLISHER_CREDENTIAL", False),
])
def test_signer_credentials(runner: CliRunner, keydir: Path, kind: str, variable: str, public: bool) -> None:
    printed = run(runner, kind, str(keydir), "lena")
    expected = {variable, "SLUICEGATE_TRUST_PUBLIC_KEY"} if public else {variable}
    assert set(printed) == expected
    credential = SignerCredential.parse(printed[variable], kind)
    assert credential.name == "lena"
    value = b"a verdict or a policy"
    assert verify_signed(ring_of(keydir), credential.headers(value), value, (kind,)) == (kind, "lena")
    with pytest.raises(TrustError):  # a credential of one kind is no credential of another
        verify_signed(ring_of(keydir), credential.headers(value), value,
                      tuple({"reviewer", "bot", "publisher"} - {kind}))


def test_rotation_keeps_old_credentials_until_the_old_key_is_retired(runner: CliRunner, keydir: Path) -> None:
    old_ring = ring_of(keydir)
    before = AgentCredential.parse(run(runner, "agent", str(keydir), "fin-1", "--role", "finance",
                                       "--environment", "production")["SLUICEGATE_AGENT_CREDENTIAL"])
    reviewer = SignerCredential.parse(run(runner, "reviewer", str(keydir), "chen")
                                      ["SLUICEGATE_REVIEWER_CREDENTIAL"], "reviewer")

    printed = run(runner, "rotate", str(keydir), "--key-id", "k2")
    assert set(printed) == {"SLUICEGATE_TRUST_KEYS"}
    rotated = KeyRing.parse(printed["SLUICEGATE_TRUST_KEYS"])
    assert str(rotated) == str(ring_of(keydir))
    assert rotated.current == "k2" and [k for k, _ in rotated.keys] == ["k2", old_ring.current]
    agent_verifies(rotated, before)  # issued before the rotation: still accepted
    verify_signed(rotated, reviewer.headers(b"v"), b"v", ("reviewer",))
    after = AgentCredential.parse(run(runner, "agent", str(keydir), "fin-1", "--role", "finance",
                                      "--environment", "production")["SLUICEGATE_AGENT_CREDENTIAL"])
    assert after.key_id == "k2" and after.key != before.key
    agent_verifies(rotated, after)

    retired = KeyRing.parse(run(runner, "retire", str(keydir), old_ring.current)["SLUICEGATE_TRUST_KEYS"])
    assert [k for k, _ in retired.keys] == ["k2"] and str(retired) == str(ring_of(keydir))
    with pytest.raises(TrustError):
        agent_verifies(retired, before)
    with pytest.raises(TrustError):
        verify_signed(retired, reviewer.headers(b"v"), b"v", ("reviewer",))
    agent_verifies(retired, after)
    assert stat.S_IMODE((keydir / "keyring").stat().st_mode) == 0o600


def test_rotate_with_a_random_id_and_retire_refusals(runner: CliRunner, keydir: Path) -> None:
    first = ring_of(keydir).current
    rotated = KeyRing.parse(run(runner, "rotate", str(keydir))["SLUICEGATE_TRUST_KEYS"])
    assert rotated.current != first and len(rotated.keys) == 2
    for key_id, message in ((rotated.current, "is the current key"), ("nope", "not in the ring")):
        result = runner.invoke(app, ["trust", "retire", str(keydir), key_id])
        assert result.exit_code == 1 and message in result.stderr and result.stdout == ""
    for key_id, message in ((first, "already in the ring"), ("a:b", "1 to 32 letters")):
        result = runner.invoke(app, ["trust", "rotate", str(keydir), "--key-id", key_id])
        assert result.exit_code == 1 and message in result.stderr
    assert str(ring_of(keydir)) == str(rotated)


def test_keys_from_the_environment(runner: CliRunner, keydir: Path) -> None:
    env = {
        "SLUICEGATE_TRUST_KEYS": (keydir / "keyring").read_text().strip(),
        "SLUICEGATE_TRUST_SIGNING_KEY": (keydir / "signing-key").read_text().strip(),
    }
    printed = run(runner, "publisher", "-", "ci", env=env)
    credential = SignerCredential.parse(printed["SLUICEGATE_PUBLISHER_CREDENTIAL"], "publisher")
    verify_signed(ring_of(keydir), credential.headers(b"p"), b"p", ("publisher",))
    result = runner.invoke(app, ["trust", "rotate", "-"], env=env)
    assert result.exit_code == 1 and "give DIR" in result.stderr
    result = runner.invoke(app, ["trust", "bot", "-", "slack"],
                           env={"SLUICEGATE_TRUST_KEYS": "", "SLUICEGATE_TRUST_SIGNING_KEY": ""})
    assert result.exit_code == 1 and "not set" in result.stderr


def test_missing_keys_are_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["trust", "reviewer", str(tmp_path), "lena"])
    assert result.exit_code == 1 and "sluicegate trust init" in result.stderr and result.stdout == ""
    for name in ("keyring", "signing-key"):
        (tmp_path / name).write_text("garbage\n")
        (tmp_path / name).chmod(0o600)  # private, as keys must be (else refused as readable by others)
    result = runner.invoke(app, ["trust", "reviewer", str(tmp_path), "lena"])
    assert result.exit_code == 1 and "unreadable keys" in result.stderr


@pytest.mark.parametrize("args", [
    ["agent", "DIR", "a1"],                                  # no --role / --environment
    ["agent", "DIR", "--role", "r", "--environment", "e"],   # no agent id
    ["reviewer", "DIR"],                                     # no name
    ["retire", "DIR"],                                       # no key id
    ["init"],                                                # no directory
    ["publisher", "DIR", "ci", "--owner", "x"],              # unknown option
])
def test_bad_arguments_print_usage(runner: CliRunner, keydir: Path, args: list[str]) -> None:
    result = runner.invoke(app, ["trust", *(str(keydir) if a == "DIR" else a for a in args)])
    assert result.exit_code == 2 and "Usage:" in result.stderr and result.stdout == ""


def test_a_name_with_spaces_is_refused(runner: CliRunner, keydir: Path) -> None:
    result = runner.invoke(app, ["trust", "agent", str(keydir), "a b", "--role", "r", "--environment", "e"])
    assert result.exit_code == 1 and "no spaces" in result.stderr and result.stdout == ""
