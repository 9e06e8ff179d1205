"""The witness: signed checkpoints of the log, kept outside the database.

A checkpoint says "the log held position P with head hash H", signed with an Ed25519 key
(``cryptography``) that lives in a 0600 file outside the store. One JSON line per checkpoint
is appended to the witness file (0600); the budget watchdog writes one every
``TRI24ES_WITNESS_INTERVAL`` seconds while the log grows, ``audit checkpoint`` and ``audit
export`` one each (an export also carries its own). ``audit verify`` then checks the log
against the latest one: a position the witness saw that the log no longer reaches is a
truncation, one it holds with another hash a rewrite, however well the chain was re-hashed
(and the chain from genesis ties every earlier position to that one).

A checkpoint is signed only after the events since the previous one are checked to follow
from it, so a rewrite is never signed over. What remains open: a rewrite of the events after
the last checkpoint, before the next one (at most one interval), and an attacker who can also
read the key or rewrite the witness file; hence both belong where the database's writers
cannot reach them (``TRI24ES_WITNESS_KEY``, ``TRI24ES_WITNESS_FILE``).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eventlog import EventStore, rehash
from eventlog.errors import CorruptLog
from eventlog.model import GENESIS_HASH
from tri24es.errors import Tri24esError
from tri24es.files import open_private

if TYPE_CHECKING:
    from tri24es.evidence import Report

_DOMAIN = b"tri24es checkpoint v1"
TAIL_BLOCK = 64 * 1024


class WitnessError(Tri24esError):
    """The witness cannot be read or written, or refuses to sign."""


@dataclass(frozen=True)
class Checkpoint:
    position: int
    head_hash: bytes
    signed_at: int  # microseconds since the epoch
    public_key: bytes
    signature: bytes

    @staticmethod
    def message(position: int, head_hash: bytes, signed_at: int) -> bytes:
        return b"|".join((_DOMAIN, str(position).encode(), head_hash.hex().encode(),
                          str(signed_at).encode()))

    def signed_by(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(self.signature, self.message(self.position, self.head_hash,
                                                    self.signed_at))
        except InvalidSignature:
            return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"position": self.position, "head_hash": self.head_hash.hex(),
                "signed_at": self.signed_at, "public_key": self.public_key.hex(),
                "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, obj: Any) -> Checkpoint:
        """A checkpoint from its JSON object; ValueError/KeyError/TypeError if malformed."""
        return cls(int(obj["position"]), bytes.fromhex(obj["head_hash"]),
                   int(obj["signed_at"]), bytes.fromhex(obj["public_key"]),
                   bytes.fromhex(obj["signature"]))


def fingerprint(public_key: bytes) -> str:
    """The public key as the operator notes it down (hex, 64 characters)."""
    return public_key.hex()


def public_key_of(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def check_embedded(obj: Any, trusted: bytes | None) -> Checkpoint:
    """The checkpoint an export carries, its signature checked with ``trusted`` (the
    operator's public key) or, without one, with the key it names (then only the key's
    fingerprint, compared by the reader with the one they know, ties it to the witness)."""
    try:
        checkpoint = Checkpoint.from_dict(obj)
        key = public_key_of(trusted if trusted is not None else checkpoint.public_key)
    except (ValueError, KeyError, TypeError) as e:
        raise WitnessError(f"the export's checkpoint is malformed: {e}") from e
    if not checkpoint.signed_by(key):
        whose = "your witness key" if trusted is not None else "the key it names"
        raise WitnessError(f"the export's checkpoint (position {checkpoint.position}) is not "
                           f"signed by {whose}")
    return checkpoint


class Witness:
    """The key file and the witness file of one project."""

    def __init__(self, key_path: Path, file_path: Path, root: Path | None = None) -> None:
        self.key_path = key_path
        self.file_path = file_path
        self.root = root  # the project root: folders below it are checked down from it

    def _open(self, path: Path, flags: int) -> IO[bytes]:
        """``open_private``; WitnessError for anything but a missing (or existing) file."""
        try:
            return open_private(path, flags, self.root)
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError as e:
            raise WitnessError(f"cannot open {path}: {e.strerror or e}") from e

    # --- the key --------------------------------------------------------------------------

    def _private_key(self, create: bool) -> Ed25519PrivateKey | None:
        try:
            with self._open(self.key_path, os.O_RDONLY) as f:
                raw = f.read()
        except FileNotFoundError:
            if not create:
                return None
            return self._new_key()
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except ValueError as e:
            raise WitnessError(f"{self.key_path} is not a witness key: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise WitnessError(f"{self.key_path} is not an Ed25519 key")
        return key

    def _new_key(self) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # Written whole under a name of its own, then linked into place: a process that
        # loses the race reads the winner's whole key, never a half-written one.
        temp = self.key_path.with_name(f".{self.key_path.name}.{secrets.token_hex(8)}.tmp")
        try:
            with self._open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) as f:
                f.write(pem)
                os.fsync(f.fileno())
            os.link(temp, self.key_path)
        except FileExistsError:  # another process made it first: use theirs
            found = self._private_key(create=False)
            assert found is not None
            return found
        except OSError as e:
            raise WitnessError(f"cannot write {self.key_path}: {e.strerror or e}") from e
        finally:
            temp.unlink(missing_ok=True)
        return key

    def public_key(self) -> bytes | None:
        key = self._private_key(create=False)
        return None if key is None else _raw_public(key)

    # --- writing --------------------------------------------------------------------------

    def sign(self, store: EventStore) -> Checkpoint | None:
        """Sign the store's head and append the checkpoint to the witness file, once the
        events since the last checkpoint are checked to follow from it. None when the log
        has not grown since. WitnessError (nothing signed) when it does not follow."""
        key = self._private_key(create=True)
        assert key is not None
        public = _raw_public(key)
        last = self._latest(key.public_key())
        after, prev = (0, GENESIS_HASH) if last is None else (last.position, last.head_hash)
        head = store.head()
        if head < after:
            raise WitnessError(f"the log ends at position {head}, before position {after} "
                               "which the witness saw: not signing (run `tri24es audit verify`)")
        if after:
            page = store.read_page(after - 1, 1)
            if not page or page[0].hash != prev:
                raise WitnessError(f"the log at position {after} is not the one the witness "
                                   "signed: not signing (run `tri24es audit verify`)")
        if head == after:
            return None
        try:
            count, head_hash = _check_from(store, after, prev, head)
        except CorruptLog as e:
            raise WitnessError(f"the log does not follow from the last checkpoint ({e}): not "
                               "signing (run `tri24es audit verify`)") from e
        position = after + count
        signed_at = time.time_ns() // 1000
        signature = key.sign(Checkpoint.message(position, head_hash, signed_at))
        checkpoint = Checkpoint(position, head_hash, signed_at, public, signature)
        line = orjson.dumps(checkpoint.as_dict()) + b"\n"
        try:
            with self._open(self.file_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND) as f:
                f.write(line)
                os.fsync(f.fileno())
        except OSError as e:
            raise WitnessError(f"cannot write {self.file_path}: {e.strerror}") from e
        return checkpoint

    def last(self) -> Checkpoint | None:
        """The last checkpoint signed by this witness's key (None without a key)."""
        key = self._private_key(create=False)
        return None if key is None else self._latest(key.public_key())

    # --- reading and checking -------------------------------------------------------------

    def _lines_from_the_end(self) -> Iterator[bytes]:
        """The witness file's lines, last first, read backwards a block at a time: the
        latest checkpoint is found without reading a year of them."""
        try:
            f = self._open(self.file_path, os.O_RDONLY)
        except FileNotFoundError:
            return
        with f:
            end = f.seek(0, os.SEEK_END)
            rest = b""
            while end > 0:
                start = max(0, end - TAIL_BLOCK)
                f.seek(start)
                lines = (f.read(end - start) + rest).split(b"\n")
                rest = lines.pop(0) if start else b""  # cut by the block: read with the next
                yield from (line for line in reversed(lines) if line.strip())
                end = start

    def _latest(self, public: Ed25519PublicKey,
                findings: list[str] | None = None) -> Checkpoint | None:
        """The last checkpoint signed by the key. The lines after it (not JSON, another
        key's, a forgery) go to ``findings``. Earlier checkpoints need no check: the chain
        from genesis ties every position below the latest one to it."""
        for back, line in enumerate(self._lines_from_the_end(), 1):
            try:
                checkpoint: Checkpoint | None = Checkpoint.from_dict(orjson.loads(line))
            except (ValueError, KeyError, TypeError):
                checkpoint = None
            if checkpoint is not None and checkpoint.signed_by(public):
                return checkpoint
            if findings is not None:
                what = "not a checkpoint" if checkpoint is None else "not signed by the key"
                findings.append(f"{self.file_path}, line {back} from the end: {what}")
        return None

    def read(self, findings: list[str]) -> Checkpoint | None:
        """The latest checkpoint signed by the key; what is wrong with the witness goes to
        ``findings`` (a key without checkpoints, checkpoints without a key, lines after the
        latest that it did not sign)."""
        key = self._private_key(create=False)
        if key is None:
            if next(self._lines_from_the_end(), None) is not None:
                findings.append(f"the witness key {self.key_path} is missing, but "
                                f"{self.file_path} holds checkpoints")
            return None
        latest = self._latest(key.public_key(), findings)
        if latest is None:
            findings.append(f"the witness file {self.file_path} holds no checkpoint signed by "
                            f"the key {self.key_path}")
        return latest

    def compare(self, store: EventStore, latest: Checkpoint | None,
                hashes: dict[int, bytes], report: Report) -> None:
        """The log against the latest checkpoint: cut short below it, or holding another
        hash at it (``hashes``: what the chain's pass found at its position)."""
        if latest is None:
            if self.public_key() is None:
                report.notes.append(
                    f"witness: none at {self.file_path} (truncation or a re-hashed chain "
                    "would not be seen: see `tri24es audit checkpoint`)")
            return
        head = store.head()
        when = _iso(latest.signed_at)
        if latest.position > head:
            report.findings.append(f"position {latest.position}: truncated (the witness saw "
                                   f"it at {when}; the log ends at {head})")
            return
        found = hashes.get(latest.position)
        if found is None:
            page = store.read_page(latest.position - 1, 1)
            found = page[0].hash if page else None
        if found != latest.head_hash:
            report.findings.append(f"position {latest.position}: rewritten (its hash is not "
                                   f"the one the witness signed at {when})")
            return
        report.notes.append(
            f"witness: the log matches its latest checkpoint (position {latest.position}, "
            f"{when}); key {fingerprint(latest.public_key)}")


def _check_from(store: EventStore, after: int, prev: bytes, until: int) -> tuple[int, bytes]:
    """``check_chain`` from a checkpoint (position ``after``, hash ``prev``) instead of
    genesis: how many events follow it up to ``until``, and the last one's hash."""
    expected, count = after + 1, 0
    for event in store.read_all(after, until_position=until):
        if event.position != expected:
            raise CorruptLog(expected, f"missing (positions jump to {event.position})",
                             "missing")
        try:
            same = rehash(prev, event) == event.hash
        except (TypeError, AttributeError):  # a column rewritten to another type
            same = False
        if not same:
            raise CorruptLog(event.position, "changed (hash does not match its contents)")
        prev, expected, count = event.hash, expected + 1, count + 1
    return count, prev


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def _iso(microseconds: int) -> str:
    from tri24es.audit import iso_us

    return iso_us(microseconds)
