"""A playbook as data: ordered stages, each with what to do, ask and say, and when it is done.

A playbook file (YAML or JSON) is validated by these models; a bad file gives an InvalidInput
naming the file and the field (``stages[3].transition.criteria[1]: …``). Transition criteria are
small expressions over the conversation's state fields (``price_expectation is set``,
``timeline_days <= 90``, ``intent in ["buy", "both"]``), parsed here once, so a program can tell
which are met (``Criterion.met``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from threadkeep import InvalidInput

__all__ = [
    "CONVERSATION_FIELDS",
    "Criterion",
    "KeyQuestion",
    "Objection",
    "Playbook",
    "Stage",
    "StateField",
    "load_playbook",
    "parse_playbook",
    "resolve",
]

#: Fields of the conversation itself that criteria may name as ``conversation.<field>``.
CONVERSATION_FIELDS: Final = ("status", "channel", "stage", "agent_id", "message_count")

_OPS: Final = ("==", "!=", ">=", "<=", ">", "<", "not in", "in")
_IS: Final = re.compile(
    r"^(?P<field>[A-Za-z_][\w.]*)\s+is\s+(?P<neg>not\s+)?(?P<what>set|true|false)$"
)
_CMP: Final = re.compile(
    r"^(?P<field>[A-Za-z_][\w.]*)\s*(?P<op>==|!=|>=|<=|>|<|\bnot\s+in\b|\bin\b)\s*(?P<value>.+)$"
)
# " and " outside double-quoted strings joins criteria written on one line.
_AND: Final = re.compile(r'\s+and\s+(?=(?:[^"]*"[^"]*")*[^"]*$)')

_MISSING: Final = object()


def resolve(values: Mapping[str, Any], path: str) -> Any:
    """Return the value at a dotted ``path`` of nested mappings, or a sentinel when absent."""
    current: Any = values
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def is_set(value: Any) -> bool:
    """Return whether a field counts as answered: present, not None, not empty text or list."""
    if value is _MISSING or value is None:
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


class Criterion(BaseModel):
    """One transition criterion over a state field.

    Written as text (``"timeline_days <= 90"``) or as ``{when: "...", label: "..."}``.

    Attributes:
        when: the expression as written.
        label: what a person reads (default: the expression).
        field: the state field (dotted path) it reads.
        op: ``set``, ``unset``, ``true``, ``false``, ``==``, ``!=``, ``>=``, ``<=``, ``>``, ``<``,
            ``in`` or ``not in``.
        value: the operand of a comparison.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: str
    label: str = ""
    field: str = ""
    op: str = ""
    value: Any = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"when": data}
        if not isinstance(data, dict) or not isinstance(data.get("when"), str):
            raise ValueError('a criterion is text such as "price_expectation is set"')
        text = " ".join(data["when"].split())
        parsed = _parse_expression(text)
        return {**data, "when": text, "label": data.get("label") or text, **parsed}

    def met(self, values: Mapping[str, Any]) -> bool:
        """Return whether the criterion holds for ``values`` (state fields, facts …)."""
        value = resolve(values, self.field)
        if self.op in ("set", "unset"):
            return is_set(value) == (self.op == "set")
        if self.op in ("true", "false"):
            return value is (self.op == "true")
        if value is _MISSING or value is None:
            return False
        if self.op == "==":
            return bool(value == self.value)
        if self.op == "!=":
            return bool(value != self.value)
        if self.op in ("in", "not in"):
            return (value in self.value) == (self.op == "in")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        limit = float(self.value)
        return {">=": value >= limit, "<=": value <= limit, ">": value > limit}.get(
            self.op, value < limit
        )


def _parse_expression(text: str) -> dict[str, Any]:
    match = _IS.match(text)
    if match:
        what = match["what"]
        if match["neg"]:
            if what != "set":
                raise ValueError(f"{text!r}: write 'is false' rather than 'is not {what}'")
            what = "unset"
        return {"field": match["field"], "op": what, "value": None}
    match = _CMP.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a criterion; write '<field> is set', '<field> is not set', "
            f"'<field> is true|false' or '<field> <op> <JSON value>' with op one of "
            f"{', '.join(_OPS)}"
        )
    op = " ".join(match["op"].split())
    try:
        value = json.loads(match["value"])
    except ValueError:
        raise ValueError(
            f'{text!r}: the value {match["value"]!r} is not JSON (quote text: "buy")'
        ) from None
    if op in ("in", "not in") and not isinstance(value, list):
        raise ValueError(f'{text!r}: \'{op}\' needs a JSON list, such as ["buy", "both"]')
    if op in (">=", "<=", ">", "<") and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise ValueError(f"{text!r}: '{op}' needs a number")
    return {"field": match["field"], "op": op, "value": value}


def _criteria_list(value: Any) -> Any:
    """Split criteria written as one line with ``and`` into separate criteria."""
    if isinstance(value, str):
        return _AND.split(value.strip())
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            out.extend(_AND.split(item.strip()) if isinstance(item, str) else [item])
        return out
    return value


class KeyQuestion(BaseModel):
    """A question the stage needs answered.

    Attributes:
        ask: how to ask it.
        field: the state field its answer fills; unanswered while that field is not set
            (a question without a field is always shown).
        why: why it matters (shown to the agent).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ask: Annotated[str, Field(min_length=1)]
    field: str | None = None
    why: str = ""


class Objection(BaseModel):
    """A common objection, how to recognise it and how to handle it.

    Attributes:
        id: short name.
        triggers: phrases that signal it in a message (case-insensitive, whole words).
        handling: how an experienced agent handles it.
        reply: a suggested reply when it comes up.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(min_length=1)]
    triggers: Annotated[list[Annotated[str, Field(min_length=2)]], Field(min_length=1)]
    handling: Annotated[str, Field(min_length=1)]
    reply: str = ""

    def pattern(self) -> re.Pattern[str]:
        """Return the regular expression that finds any trigger in a message."""
        alternatives = "|".join(re.escape(" ".join(t.lower().split())) for t in self.triggers)
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class Transition(BaseModel):
    """When a stage is done and where it leads.

    Attributes:
        to: the next stage (default: the next one in order; none for a final stage).
        criteria: all must be met before moving on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    to: str | None = None
    criteria: list[Criterion] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "criteria" in data:
            return {**data, "criteria": _criteria_list(data["criteria"])}
        return data


class Stage(BaseModel):
    """One stage of the process.

    Attributes:
        id: the value of the conversation's ``stage`` while in it (``"Q2"``, ``"qualification"``).
        name: its display name.
        description: what the stage is about.
        objectives: what it must achieve.
        key_questions: what to find out.
        objections: what the contact may push back with, and how to handle it.
        success_metrics: how to tell it went well.
        critical_actions: what must not be forgotten.
        transition: when it is done and where it leads.
        replies: at least three ready-made replies that fit the stage.
        final: whether the process ends here (no next stage).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    objectives: Annotated[list[str], Field(min_length=1)]
    key_questions: list[KeyQuestion] = Field(default_factory=list)
    objections: list[Objection] = Field(default_factory=list)
    success_metrics: list[str] = Field(default_factory=list)
    critical_actions: list[str] = Field(default_factory=list)
    transition: Transition = Field(default_factory=Transition)
    replies: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=3)]
    final: bool = False


class StateField(BaseModel):
    """A state field the playbook's questions and criteria use.

    Attributes:
        name: the field's key in the conversation's state (or the contact's facts).
        label: its display name.
        type: ``text``, ``number``, ``boolean``, ``list`` or ``date``.
        description: what it holds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")]
    label: str = ""
    type: Literal["text", "number", "boolean", "list", "date"] = "text"
    description: str = ""


class Playbook(BaseModel):
    """Ordered stages of a process, with the state fields they use.

    Attributes:
        name: the playbook's name (``realtor``, ``seller`` …).
        title: its display title.
        description: what process it coaches.
        fields: the state fields questions and criteria may name (``conversation.*`` is always
            allowed); when empty, any field may be named.
        stages: the stages, in process order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[\w.-]{1,64}$")]
    title: str = ""
    description: str = ""
    fields: list[StateField] = Field(default_factory=list)
    stages: Annotated[list[Stage], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Playbook:
        ids = [s.id for s in self.stages]
        known_fields = {f.name for f in self.fields}
        for i, stage in enumerate(self.stages):
            where = f"stages[{i}]"
            if ids.count(stage.id) > 1:
                raise ValueError(f"{where}.id: stage id {stage.id!r} is used twice")
            if stage.transition.to is not None and stage.transition.to not in ids:
                raise ValueError(
                    f"{where}.transition.to: {stage.transition.to!r} is not a stage; "
                    f"stages are {', '.join(ids)}"
                )
            if not known_fields:
                continue
            named = [
                (f"transition.criteria[{j}]", c.field)
                for j, c in enumerate(stage.transition.criteria)
            ]
            named += [
                (f"key_questions[{j}]", q.field)
                for j, q in enumerate(stage.key_questions)
                if q.field
            ]
            for part, name in named:
                head = name.split(".")[0]
                if head == "conversation":
                    if name.split(".", 1)[-1] not in CONVERSATION_FIELDS:
                        allowed = ", ".join(f"conversation.{f}" for f in CONVERSATION_FIELDS)
                        raise ValueError(
                            f"{where}.{part}: {name!r} is not a conversation field; "
                            f"allowed: {allowed}"
                        )
                elif head not in known_fields:
                    raise ValueError(
                        f"{where}.{part}: field {head!r} is not declared in the playbook's "
                        f"fields ({', '.join(sorted(known_fields))})"
                    )
        return self

    def stage(self, stage_id: str | None) -> Stage | None:
        """Return the stage with this id (the first stage for None), or None if unknown."""
        if stage_id is None:
            return self.stages[0]
        return next((s for s in self.stages if s.id == stage_id), None)

    def next_stage(self, stage: Stage) -> Stage | None:
        """Return the stage that follows ``stage`` (None after a final stage or the last one)."""
        if stage.transition.to is not None:
            return self.stage(stage.transition.to)
        if stage.final:
            return None
        index = self.stages.index(stage)
        return self.stages[index + 1] if index + 1 < len(self.stages) else None


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_playbook(data: Any, *, source: str = "playbook") -> Playbook:
    """Validate parsed playbook data.

    Args:
        data: the parsed YAML/JSON document.
        source: where it came from, for error messages.

    Raises:
        InvalidInput: the data is not a valid playbook; the message names the field.
    """
    try:
        return Playbook.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        field = _location(tuple(first["loc"]))
        if not field:  # a whole-playbook check: its message starts with the field
            field, _, message = message.partition(": ")
        raise InvalidInput(f"{source}: {field}: {message}", field=field) from None


def load_playbook(path: str | Path) -> Playbook:
    """Load and validate a playbook file (``.yaml``/``.yml`` needs PyYAML; ``.json`` does not).

    Args:
        path: the file.

    Raises:
        InvalidInput: the file cannot be read or parsed, or is not a valid playbook.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read playbook {path}: {exc}", field="playbook") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"{path}: not JSON: {exc}", field="playbook") from None
    else:
        data = _load_yaml(text, path)
    return parse_playbook(data, source=str(path))


def _load_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - the extra is part of every test install
        raise InvalidInput(
            f"{path} is YAML: pip install 'threadkeep[playbooks]' (PyYAML), or use a .json file",
            field="playbook",
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not YAML: {exc}", field="playbook") from None
