"""Typed, frozen configuration. YAML presets and ``--set key=value`` only override it.

Unknown keys and ill-typed values fail with the dotted key's name. The resolved config is a
plain dict (:func:`to_dict`) written next to the outputs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from face_iqa.faces.track import TrackerConfig
from pipeline.graph import RayConfig
from workers.decode import DecodeConfig
from workers.detect import DetectStageConfig
from workers.identity import IdentityConfig
from workers.score import ScoreStageConfig
from workers.threshold import ThresholdConfig

__all__ = ["Config", "ConfigError", "build", "load_config", "load_into", "parse_set", "to_dict"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclass(frozen=True)
class OutputConfig:
    """Attributes:
    crops: write the aligned crops of kept faces under ``crops/``.
    kept_frames: write the kept frames as PNG under ``kept_frames/``.
    flush_sources: finished sources are saved under ``.parts/`` (the state ``--resume``
        reads) once this many are waiting, so a folder of 1,000 photos leaves a few part
        files, not files per source;
    flush_seconds: ... or once this long has passed since the last save, so an
        interruption redoes at most this much of a slow run's work.
    """

    crops: bool = False
    kept_frames: bool = False
    flush_sources: int = 500
    flush_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.flush_sources < 1:
            raise ValueError(f"output.flush_sources must be >= 1, got {self.flush_sources}")
        if self.flush_seconds <= 0:
            raise ValueError(f"output.flush_seconds must be > 0, got {self.flush_seconds}")


@dataclass(frozen=True)
class Config:
    """The whole job's settings. Sections map to stages."""

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detect: DetectStageConfig = field(default_factory=DetectStageConfig)
    score: ScoreStageConfig = field(default_factory=ScoreStageConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    track: TrackerConfig = field(default_factory=TrackerConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, prefix=key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if value is None and tp is type(None):
        return None
    raise ConfigError(f"{key}: unsupported type {tp!r}")


def build(cls: type[T], values: dict[str, Any] | None = None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from defaults overridden by ``values`` (nested dicts)."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s} (known under {prefix or 'the top'}: "
            f"{', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_set(item: str) -> dict[str, Any]:
    """``"detect.detector.min_face_size=40"`` -> nested dict; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: bad key")
    value: Any = yaml.safe_load(raw) if raw.strip() else ""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _read_yaml(p: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """A preset's mapping; ``base: other.yaml`` (beside it) is read first and overridden."""
    if p.resolve() in chain:
        raise ConfigError(f"{p}: base configs form a loop")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"{p}: base: expected a file name, got {base!r}")
    return _merge(_read_yaml(p.parent / base, (*chain, p.resolve())), loaded)


def load_config(path: str | Path | None = None, sets: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then each ``--set`` override."""
    return load_into(Config, path, sets)


def load_into(
    cls: type[T], path: str | Path | None = None, sets: list[str] | tuple[str, ...] = ()
) -> T:
    """Build any config dataclass ``cls`` from its defaults, a YAML file and ``--set``s."""
    values: dict[str, Any] = {} if path is None else _read_yaml(Path(path), ())
    for item in sets:
        values = _merge(values, parse_set(item))
    return build(cls, values)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (tuples become lists), for JSON/YAML."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))
