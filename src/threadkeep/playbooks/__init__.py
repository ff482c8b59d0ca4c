"""Playbooks: stages as data, and the guidance that follows a conversation through them.

Two ship with the package: ``realtor`` (13 stages from Lead Capture to Post-Close Follow-up) and
``seller`` (the demo bot's Q0…Q4, QUALIFIED, STALLED). ``get_playbook`` takes either name or a
path to a YAML/JSON file of your own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Final

from threadkeep import InvalidInput, ThreadkeepError
from threadkeep.playbooks.model import (
    Criterion,
    KeyQuestion,
    Objection,
    Playbook,
    Stage,
    StateField,
    load_playbook,
    parse_playbook,
)

__all__ = [
    "SHIPPED",
    "Criterion",
    "KeyQuestion",
    "Objection",
    "Playbook",
    "PlaybookNotFound",
    "PlaybookSet",
    "Stage",
    "StateField",
    "get_playbook",
    "load_playbook",
    "parse_playbook",
]

_HERE: Final = Path(__file__).parent

#: The playbooks shipped with the package, by name.
SHIPPED: Final = ("realtor", "seller")


class PlaybookNotFound(ThreadkeepError, LookupError):
    """No playbook of that name is available (to this tenant)."""

    http_status = 404


def get_playbook(ref: str | Path | Playbook) -> Playbook:
    """Return a playbook: a shipped name (``realtor``, ``seller``), a file path, or itself.

    Files are read once per process (per path and modification time).

    Raises:
        InvalidInput: an unknown name, or a file that cannot be read or is not a playbook.
    """
    if isinstance(ref, Playbook):
        return ref
    text = str(ref)
    if text in SHIPPED:
        return _cached(str(_HERE / f"{text}.yaml"), 0.0)
    path = Path(text).expanduser()
    if not path.suffix:
        raise InvalidInput(
            f"unknown playbook {text!r}: give a shipped name ({', '.join(SHIPPED)}) or a path "
            "to a .yaml or .json file",
            field="playbook",
        )
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise InvalidInput(f"cannot read playbook {path}: {exc}", field="playbook") from None
    return _cached(str(path.resolve()), mtime)


@lru_cache(maxsize=64)
def _cached(path: str, mtime: float) -> Playbook:
    return load_playbook(path)


class PlaybookSet:
    """The default playbook and the tenants that use their own.

    Args:
        default: a shipped name or a path (``THREADKEEP_PLAYBOOK``).
        tenants: tenant → shipped name or path (``THREADKEEP_PLAYBOOKS``).
    """

    def __init__(self, default: str = "seller", tenants: dict[str, str] | None = None) -> None:
        self.default = default
        self.tenants = dict(tenants or {})
        for ref in (default, *self.tenants.values()):
            get_playbook(ref)  # a bad file is refused at start-up, not at the first request

    @classmethod
    def parse(cls, default: str, pairs: str) -> PlaybookSet:
        """Build from the settings' text: ``pairs`` is ``tenant:path,tenant:name,…``.

        Raises:
            InvalidInput: a malformed pair or a playbook that does not load.
        """
        tenants: dict[str, str] = {}
        for pair in pairs.replace(",", " ").split():
            tenant, sep, ref = pair.partition(":")
            if not sep or not tenant or not ref:
                raise InvalidInput(
                    f"THREADKEEP_PLAYBOOKS takes tenant:playbook pairs, not {pair!r}",
                    field="THREADKEEP_PLAYBOOKS",
                )
            tenants[tenant] = ref
        return cls(default or "seller", tenants)

    def for_tenant(self, tenant: str) -> Playbook:
        """Return the tenant's playbook (its own, else the default)."""
        return get_playbook(self.tenants.get(tenant, self.default))

    def named(self, name: str, tenant: str) -> Playbook:
        """Return the playbook a tenant may read by ``name``: a shipped one or the tenant's own.

        Raises:
            PlaybookNotFound: no such playbook for this tenant (a caller never names a path).
        """
        mine = self.for_tenant(tenant)
        if name == mine.name:
            return mine
        if name in SHIPPED:
            return get_playbook(name)
        raise PlaybookNotFound(
            f"no playbook {name!r} for this tenant; available: "
            f"{', '.join(sorted({mine.name, *SHIPPED}))}"
        )
