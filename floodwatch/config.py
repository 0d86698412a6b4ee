"""One TOML file -> frozen, typed, validated config objects.

Each section is a frozen dataclass (floodwatch/settings/); a field's annotation is the type a value
must have. An unknown key, a wrong type or a value a section's `validate()` refuses is a ConfigError
that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from floodwatch.errors import ConfigError
from floodwatch.settings.aggregator import AggregatorSettings
from floodwatch.settings.apiserver import ApiserverSettings
from floodwatch.settings.capture import CaptureSettings
from floodwatch.settings.collector import CollectorSettings
from floodwatch.settings.core import AgentSettings, BusSettings, LogSettings, SupervisorSettings
from floodwatch.settings.detector import DetectorSettings
from floodwatch.settings.executor import ExecutorSettings
from floodwatch.settings.hostgroup import HostGroupSettings
from floodwatch.settings.metrics import MetricsSettings
from floodwatch.settings.notify import NotifySettings
from floodwatch.settings.recorder import RecorderSettings
from floodwatch.settings.reporter import ReporterSettings
from floodwatch.settings.weblog import WeblogSettings

SECTIONS: dict[str, type] = {
    "agent": AgentSettings,
    "bus": BusSettings,
    "supervisor": SupervisorSettings,
    "log": LogSettings,
    "capture": CaptureSettings,
    "collector": CollectorSettings,
    "aggregator": AggregatorSettings,
    "detector": DetectorSettings,
    "recorder": RecorderSettings,
    "executor": ExecutorSettings,
    "reporter": ReporterSettings,
    "apiserver": ApiserverSettings,
    "notify": NotifySettings,
    "metrics": MetricsSettings,
    "weblog": WeblogSettings,
}

LIST_SECTIONS: dict[str, type] = {"hostgroup": HostGroupSettings}  # [[name]]: arrays of tables


@dataclass(frozen=True)
class Config:
    path: str
    agent: AgentSettings
    bus: BusSettings
    supervisor: SupervisorSettings
    log: LogSettings
    capture: CaptureSettings
    collector: CollectorSettings
    aggregator: AggregatorSettings
    detector: DetectorSettings
    recorder: RecorderSettings
    executor: ExecutorSettings
    reporter: ReporterSettings
    apiserver: ApiserverSettings
    notify: NotifySettings
    metrics: MetricsSettings
    weblog: WeblogSettings
    hostgroup: list[HostGroupSettings] = dataclasses.field(default_factory=list)

    def section(self, name: str) -> Any:
        if name not in SECTIONS:
            raise ConfigError(f"{self.path}: no section named {name!r}")
        return getattr(self, name)

    def metrics_in_apiserver(self) -> bool:
        """The agent's /metrics is served by the API server's actor, not by a metrics actor of its own:
        `[metrics] in_apiserver`, and both the metrics and the built-in API server actor run."""
        sup = self.supervisor
        return (self.metrics.in_apiserver and self.metrics.enabled and self.apiserver.enabled
                and all(name in sup.actors and name not in sup.modules for name in ("metrics", "apiserver")))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror or e}") from e
    return config_from_text(text, str(p))


def config_from_text(text: str, path: str = "<text>") -> Config:
    """Validate a config file's text (`path` names it in errors and in Config.path)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return config_from_dict(data, path)


def config_from_dict(data: dict[str, Any], path: str = "<dict>") -> Config:
    unknown = sorted(set(data) - set(SECTIONS) - set(LIST_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; known: {sorted([*SECTIONS, *LIST_SECTIONS])}")
    built: dict[str, Any] = {"path": path}
    for name, cls in LIST_SECTIONS.items():
        raw = data.get(name, [])
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise ConfigError(f"{path}: [[{name}]] must be an array of tables")
        built[name] = [build_section(cls, t, f"{path}: {name}[{i}]") for i, t in enumerate(raw)]
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        built[name] = build_section(cls, raw, f"{path}: {name}")
    return Config(**built)


def build_section(cls: type, raw: dict[str, Any], where: str) -> Any:
    """A dict -> the frozen dataclass `cls`, checking keys, types and the class's validate()."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values = {key: _convert(value, hints[key], f"{where}.{key}") for key, value in raw.items()}
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as e:
            raise ConfigError(f"{where}.{e}") from e
    return obj


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _convert(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} is none of {_type_name(annotation)}")
    if annotation is type(None):
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return build_section(annotation, value, where)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, inner, f"{where}.{k}") for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {annotation!r}")


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "")


def default_config_path() -> Path:
    """$FLOODWATCH_CONFIG, else /etc/floodwatch/floodwatch.toml, else the repo's configs/default.toml."""
    env = os.environ.get("FLOODWATCH_CONFIG")
    if env:
        return Path(env)
    etc = Path("/etc/floodwatch/floodwatch.toml")
    if etc.exists():
        return etc
    return Path(__file__).resolve().parent.parent / "configs" / "default.toml"
