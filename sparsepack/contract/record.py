"""The base of the manifest's typed records: check each key's type once, at load, and keep the mapping read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import SparsepackError

RERUN = "re-run `sparsepack package MODEL -o DIR`"


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else "number" if k is float else k.__name__ for k in kinds)


def _check(value, kind, where: str, key: str):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds:
        kinds = (*kinds, int)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise SparsepackError(f"{where}: {key!r} must be {_kind_name(kind)}, not {type(value).__name__}; {RERUN}")
    return value


class Record:
    """A manifest record: ``REQUIRED`` keys (type-checked, the manifest is refused without them), ``OPTIONAL`` keys
    (newer than some manifests: their default when absent), ``KEYS`` the persisted order a new record is written in."""

    REQUIRED: ClassVar[dict[str, Any]] = {}
    OPTIONAL: ClassVar[dict[str, tuple[Any, Any]]] = {}  # key -> (type, default)
    NESTED: ClassVar[dict[str, type[Record]]] = {}  # key -> Record class (a list of them for list-typed keys)
    KEYS: ClassVar[tuple[str, ...]] = ()

    if TYPE_CHECKING:  # every record is a dataclass with these keys as fields, plus the mapping it was read from
        raw: dict | None

        def __init__(self, **values: Any) -> None: ...

    @classmethod
    def from_dict(cls, data, where: str = "manifest.json"):
        if not isinstance(data, dict):
            raise SparsepackError(f"{where} is not a JSON object; {RERUN}")
        values = {}
        for key, kind in cls.REQUIRED.items():
            if key not in data:
                raise SparsepackError(f"{where} lacks {key!r}, which sparsepack reads; {RERUN}")
            values[key] = _check(data[key], kind, where, key)
        for key, (kind, default) in cls.OPTIONAL.items():
            values[key] = _check(data[key], kind, where, key) if key in data else default
        for key, record in cls.NESTED.items():
            value = values.get(key)
            if isinstance(value, list):
                values[key] = [record.from_dict(v, f"{where}: {key}[{n}]") for n, v in enumerate(value)]
            elif isinstance(value, dict):
                values[key] = record.from_dict(value, f"{where}: {key}")
        return cls(**values, raw=dict(data))

    def to_dict(self) -> dict:
        """The mapping read (its keys in its order, unknown ones kept), with this record's current values; a record
        built in code (nothing read) gets its ``KEYS``, those that are set."""
        known = set(self.REQUIRED) | set(self.OPTIONAL)
        order = list(self.raw) if self.raw is not None else [k for k in self.KEYS if getattr(self, k) is not None]
        out = {}
        for key in order:
            value = getattr(self, key) if key in known or self.raw is None else self.raw[key]
            out[key] = (
                [v.to_dict() if isinstance(v, Record) else v for v in value]
                if isinstance(value, list)
                else value.to_dict()
                if isinstance(value, Record)
                else value
            )
        return out
