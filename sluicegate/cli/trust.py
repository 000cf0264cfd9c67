"""``sluicegate trust ...``: a deployment's keys and the credentials derived from them.

Every command prints only ``SLUICEGATE_...=value`` lines on stdout, so its output can be sourced
(``set -a; . <(sluicegate trust agent ...)``) or pasted into a secrets manager; notes go to stderr.

A key directory holds two files, each mode 0600: ``keyring`` (the workers' master key ring, current
key first) and ``signing-key`` (the workers' Ed25519 key for approval requests). Every credential is
derived from the ring, so issuing one needs the directory (or, with ``-`` for DIR, the ring in
``SLUICEGATE_TRUST_KEYS`` and the signing key in ``SLUICEGATE_TRUST_SIGNING_KEY``, as a secrets
manager's shell provides them). See docs/security.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from sluicegate.secret_files import SecretFileError, check_private
from sluicegate.trust import AgentCredential, KeyRing, RequestSigner, SignerCredential, TrustError

app = typer.Typer(
    name="trust",
    help="Create a deployment's keys and issue credentials (prints SLUICEGATE_...=... lines).",
    no_args_is_help=True,
)

KEYRING_FILE = "keyring"
SIGNING_KEY_FILE = "signing-key"
FROM_ENV = "-"
"""DIR meaning: read the keys from SLUICEGATE_TRUST_KEYS and SLUICEGATE_TRUST_SIGNING_KEY."""
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
NAME_RE = re.compile(r"^[^\s=]{1,256}$")

Dir = Annotated[
    str, typer.Argument(metavar="DIR", help="The key directory (or - for the keys in the environment).")
]


Name = Annotated[str, typer.Argument(metavar="NAME", help="Whose credential (a person or the bot).")]


class KeyDirError(Exception):
    """A key directory that cannot be created, read or updated."""


@dataclass(frozen=True, slots=True)
class Keys:
    """A deployment's keys as read from its key directory."""

    ring: KeyRing
    signer: RequestSigner


def emit(name: str, value: object) -> None:
    """One ``SLUICEGATE_<name>=value`` line on stdout."""
    typer.echo(f"SLUICEGATE_{name}={value}")


def note(text: str) -> None:
    typer.echo(text, err=True)


def _fail(message: str) -> typer.Exit:
    note(f"error: {message}")
    return typer.Exit(1)


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) with ``text``; never overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyDirError(f"{path} exists: refusing to overwrite a deployment's keys") from None
    except OSError as exc:
        raise KeyDirError(f"cannot create {path}: {exc}") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text + "\n")


def _replace(path: Path, text: str) -> None:
    """Write ``path`` anew (mode 0600) in one rename, so a crash leaves the old or the new ring."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    _write_new(temporary, text)
    os.replace(temporary, path)


def _read(path: Path) -> str:
    """A key file's text; refused when it is missing or others can read it."""
    try:
        check_private(path)
        return path.read_text(encoding="ascii").strip()
    except SecretFileError as exc:
        if not path.exists():
            raise KeyDirError(f"{path} not found: create the keys with sluicegate trust init DIR") from None
        raise KeyDirError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyDirError(f"cannot read {path}: {exc}") from None


def create_keys(directory: Path) -> Keys:
    """Create a deployment's keys in ``directory`` (made mode 0700 if new); refuses existing keys."""
    for name in (KEYRING_FILE, SIGNING_KEY_FILE):
        if (directory / name).exists():
            raise KeyDirError(f"{directory / name} exists: refusing to overwrite a deployment's keys")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyDirError(f"cannot create {directory}: {exc}") from None
    keys = Keys(KeyRing.generate(), RequestSigner.generate())
    _write_new(directory / KEYRING_FILE, str(keys.ring))
    _write_new(directory / SIGNING_KEY_FILE, str(keys.signer))
    return keys


def read_keys(where: str) -> Keys:
    """The keys of a key directory, or of the environment when ``where`` is ``-``."""
    if where == FROM_ENV:
        ring_text = os.environ.get("SLUICEGATE_TRUST_KEYS", "")
        signer_text = os.environ.get("SLUICEGATE_TRUST_SIGNING_KEY", "")
        if not ring_text or not signer_text:
            raise KeyDirError("DIR is -, but SLUICEGATE_TRUST_KEYS or SLUICEGATE_TRUST_SIGNING_KEY "
                              "is not set")
        origin = "the environment"
    else:
        ring_text = _read(Path(where) / KEYRING_FILE)
        signer_text = _read(Path(where) / SIGNING_KEY_FILE)
        origin = where
    try:
        return Keys(KeyRing.parse(ring_text), RequestSigner.parse(signer_text))
    except (TrustError, ValueError) as exc:
        raise KeyDirError(f"unreadable keys in {origin}: {exc}") from None


def save_ring(where: str, ring: KeyRing) -> None:
    if where == FROM_ENV:
        raise KeyDirError("rotate and retire change the key directory: give DIR, not -")
    _replace(Path(where) / KEYRING_FILE, str(ring))


def _load(where: str) -> Keys:
    try:
        return read_keys(where)
    except KeyDirError as exc:
        raise _fail(str(exc)) from None


def _save(where: str, ring: KeyRing) -> None:
    try:
        save_ring(where, ring)
    except KeyDirError as exc:
        raise _fail(str(exc)) from None


def _check_name(what: str, value: str) -> None:
    if not NAME_RE.match(value):
        raise _fail(f"{what} {value!r}: 1 to 256 characters, no spaces or '='")


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to create the keys.")],
) -> None:
    """Create a deployment's keys in DIR; print the workers' and the verifiers' settings."""
    try:
        keys = create_keys(directory)
    except KeyDirError as exc:
        raise _fail(str(exc)) from None
    emit("TRUST_KEYS", keys.ring)
    emit("TRUST_SIGNING_KEY", keys.signer)
    emit("TRUST_PUBLIC_KEY", keys.signer.public)
    note(f"created {directory / KEYRING_FILE} and {directory / SIGNING_KEY_FILE} (mode 0600), "
         f"key id {keys.ring.current}.")
    note("Workers need TRUST_KEYS and TRUST_SIGNING_KEY; the Slack bot, the approvals CLI and agents "
         "need TRUST_PUBLIC_KEY. Keep DIR and these values in a secret store, never in a repository.")


@app.command("agent")
def agent(
    directory: Dir,
    agent_id: Annotated[
        str, typer.Argument(metavar="AGENT_ID", help="The agent's id (the key of its intents).")
    ],
    role: Annotated[str, typer.Option("--role", help="The agent's role, as policies match it.")],
    environment: Annotated[str, typer.Option("--environment", help="production, staging, ...")],
    owner: Annotated[
        str | None, typer.Option("--owner", help="Who owns the agent (no self-approval).")
    ] = None,
) -> None:
    """Print an agent's settings: its credential (fixing id, role, environment, owner) and the public key."""
    for what, value in (("agent id", agent_id), ("role", role), ("environment", environment)):
        _check_name(what, value)
    if owner is not None:
        _check_name("owner", owner)
    keys = _load(directory)
    emit("AGENT_CREDENTIAL", AgentCredential.issue(keys.ring, agent_id, role, environment, owner))
    emit("TRUST_PUBLIC_KEY", keys.signer.public)
    note(f"agent {agent_id}: role {role}, environment {environment}, owner {owner or '(none)'}, "
         f"key id {keys.ring.current}")


def _signer(kind: str, directory: str, name: str) -> Keys:
    _check_name(f"{kind} name", name)
    keys = _load(directory)
    emit(f"{kind.upper()}_CREDENTIAL", SignerCredential.issue(keys.ring, kind, name))
    return keys


@app.command("reviewer")
def reviewer(directory: Dir, name: Name) -> None:
    """Print a reviewer's settings for `sluicegate approvals`: the credential and the public key."""
    keys = _signer("reviewer", directory, name)
    emit("TRUST_PUBLIC_KEY", keys.signer.public)
    note(f"reviewer {name}: verdicts signed as reviewer:{name}, key id {keys.ring.current}")


@app.command("bot")
def bot(directory: Dir, name: Name) -> None:
    """Print the Slack bot's settings: its credential and the public key."""
    keys = _signer("bot", directory, name)
    emit("TRUST_PUBLIC_KEY", keys.signer.public)
    note(f"bot {name}: signs the verdicts of the Slack users it maps, key id {keys.ring.current}")


@app.command("publisher")
def publisher(directory: Dir, name: Name) -> None:
    """Print a policy publisher's setting for `sluicegate policy publish`."""
    keys = _signer("publisher", directory, name)
    note(f"publisher {name}: policies signed as publisher:{name}, key id {keys.ring.current}")


@app.command("rotate")
def rotate(
    directory: Dir,
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="Id of the new key (default: random).")
    ] = None,
) -> None:
    """Add a new current key to the ring (the old ones are still accepted); print the workers' line."""
    if key_id is not None and not KEY_ID_RE.match(key_id):
        raise _fail(f"key id {key_id!r}: 1 to 32 letters, digits, - or _")
    keys = _load(directory)
    if key_id is not None and key_id in dict(keys.ring.keys):
        raise _fail(f"key id {key_id!r} is already in the ring")
    ring = keys.ring.rotated(key_id)
    _save(directory, ring)
    emit("TRUST_KEYS", ring)
    old = ", ".join(known for known, _ in keys.ring.keys)
    note(f"new current key {ring.current}; still accepted: {old}. Give the workers the new "
         f"TRUST_KEYS, re-issue credentials, then: sluicegate trust retire DIR {keys.ring.current}")


@app.command("retire")
def retire(
    directory: Dir,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The old key to stop accepting.")],
) -> None:
    """Stop accepting an old key: credentials issued under it no longer verify; print the workers' line."""
    keys = _load(directory)
    if key_id not in dict(keys.ring.keys):
        raise _fail(f"key id {key_id!r} is not in the ring ({', '.join(k for k, _ in keys.ring.keys)})")
    if key_id == keys.ring.current:
        raise _fail(f"key id {key_id!r} is the current key: rotate first, then retire it")
    ring = keys.ring.without(key_id)
    _save(directory, ring)
    emit("TRUST_KEYS", ring)
    note(f"retired {key_id}: credentials issued under it no longer verify once the workers have this ring")
