"""Load, merge and validate YAML configs with OmegaConf.

Layers merge in order (later wins): config files, then `key=value` overrides, then explicit CLI flags.
Validation is one step: the merged plain config is merged into a structured schema made from the
dataclasses. Mistakes end with one line (`ConfigError`): an unknown key names the closest valid keys
(difflib), a wrong type names the key and the expected type, a missing value names the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A config file or override that does not fit the schema (one line)."""


# `${a.b}` or a relative `${..a.b}`: the interpolation of another recipe key, nothing else (no resolvers
# such as ${oc.env:HOME}, which would read the environment, no nested interpolations)
INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
RECIPE_KEY = re.compile(r"\.*[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\])*")


def check_interpolations(cfg: Any, where: str = "", prefix: str = "") -> None:
    """Every `${…}` in a string value names a recipe key; a resolver (`${oc.env:…}`, `${oc.decode:…}`)
    or anything else is a ConfigError (one line naming the key)."""
    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            check_interpolations(cfg._get_node(key), where, f"{prefix}.{key}" if prefix else str(key))
        return
    if isinstance(cfg, ListConfig):
        for i in range(len(cfg)):
            check_interpolations(cfg._get_node(i), where, f"{prefix}[{i}]")
        return
    value = cfg._value() if hasattr(cfg, "_value") else cfg
    if not isinstance(value, str) or "${" not in value:
        return
    found = INTERPOLATION.findall(value)
    if value.count("${") != len(found) or not all(RECIPE_KEY.fullmatch(ref.strip()) for ref in found):
        raise ConfigError(
            f"key '{prefix}'{where}: {value!r} is not the interpolation of a recipe key; only ${{other.key}} is allowed"
            " (no resolvers such as ${oc.env:…})"
        )


def resolve_config_path(path: str | Path) -> Path:
    """A config file as given, or relative to the repository's configs/ folder (`ras/face.yaml`)."""
    p = Path(path)
    for candidate in (p, CONFIGS_DIR / p, CONFIGS_DIR / f"{p}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file {path} not found (also looked under {CONFIGS_DIR})")


def load_file(path: str | Path) -> DictConfig:
    p = resolve_config_path(path)
    try:
        loaded = OmegaConf.load(p)
    except Exception as err:  # yaml errors carry several lines: keep the first
        raise ConfigError(f"{p}: cannot read YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{p}: a config file must hold a mapping of keys, got a {type(loaded).__name__}")
    check_interpolations(loaded, f" ({p})")  # every file, also those read without a schema (profiles)
    return loaded


def parse_overrides(items: Iterable[str]) -> DictConfig:
    """`a.b=1 c=[1,2]` -> a config (values parsed as YAML)."""
    items = list(items)
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=5e-5)")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad override: {str(err).splitlines()[0]}") from None


def nested(flat: Mapping[str, Any]) -> DictConfig:
    """{'optim.lr': 1e-3} -> {'optim': {'lr': 1e-3}} (values kept as they are)."""
    out = OmegaConf.create({})
    for key, value in flat.items():
        OmegaConf.update(out, key, value, merge=False, force_add=True)
    return out


def merge_layers(files: Iterable[str | Path | DictConfig] = (), overrides: Iterable[str] = (),
                 explicit: Mapping[str, Any] | None = None) -> DictConfig:
    """Files (or layers already loaded, e.g. a profile's section), then overrides, then explicit values
    (dotted keys), merged without a schema."""
    layers = [f if isinstance(f, DictConfig) else load_file(f) for f in files]
    layers.append(parse_overrides(overrides))
    if explicit:
        layers.append(nested(explicit))
    return OmegaConf.merge(*layers) if layers else OmegaConf.create({})


def field_spec(cls: type, name: str, types: Mapping[str, Any] | None = None) -> tuple[str, Any, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    spec = dataclasses.field(default=f.default) if f.default is not dataclasses.MISSING else (
        dataclasses.field(default_factory=f.default_factory) if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
        else dataclasses.field(default="???")  # required: OmegaConf's missing value
    )
    return name, (types or {}).get(name, hints[name]), spec


def _renamed(spec: tuple[str, Any, dataclasses.Field], new: str) -> tuple[str, Any, dataclasses.Field]:
    return new, spec[1], spec[2]


def schema_class(cls: type, skip: Iterable[str] = (), types: Mapping[str, Any] | None = None) -> type:
    """A copy of dataclass `cls` (types and defaults) less the fields in `skip`; fields without a default
    become required (OmegaConf's '???'); `types` replaces some fields' types."""
    specs = [field_spec(cls, f.name, types) for f in dataclasses.fields(cls) if f.name not in set(skip)]
    return dataclasses.make_dataclass(f"{cls.__name__}Recipe", specs)


def _type_name(t: Any) -> str:
    if t is Any or t is None:
        return "any value"
    origin = typing.get_origin(t)
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner} or null" if type(None) in typing.get_args(t) else inner
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]" if args else origin.__name__
    return getattr(t, "__name__", str(t))


def _node_at(schema: DictConfig, path: list[str]) -> Any:
    node: Any = schema
    for part in path:
        if isinstance(node, DictConfig) and part in node:
            node = node._get_node(part)
        else:
            return None
    return node


def _keys_at(schema: DictConfig, path: list[str]) -> list[str]:
    node = _node_at(schema, path)
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def unknown_key_message(schema: DictConfig, full_key: str, where: str) -> str:
    parts = full_key.split(".")
    valid = _keys_at(schema, parts[:-1])
    close = difflib.get_close_matches(parts[-1], valid, n=3, cutoff=0.5)
    prefix = ".".join(parts[:-1])
    shown = [f"{prefix}.{k}" if prefix else k for k in (close or valid[:8])]
    hint = "closest valid keys" if close else "valid keys here"
    return f"unknown key '{full_key}'{where}; {hint}: {', '.join(shown)}"


def wrong_type_message(schema: DictConfig, full_key: str, value: Any, where: str) -> str:
    parts = full_key.split(".")
    node = _node_at(schema, parts)
    expected = _type_name(node._metadata.ref_type) if node is not None else "another type"
    return f"key '{full_key}'{where}: expected {expected}, got {value!r}"


def _bad_key(err: OmegaConfBaseException) -> str:
    return str(getattr(err, "full_key", "") or getattr(err, "key", "") or "")


def _leaves(cfg: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(cfg, DictConfig):
        for k in cfg.keys():
            yield from _leaves(cfg._get_node(k), f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, cfg


def _find_bad_key(schema: DictConfig, raw: DictConfig) -> str:
    """The first leaf of `raw` that the schema refuses (for errors that do not name their key)."""
    for key, _ in _leaves(raw):
        try:
            OmegaConf.merge(schema, nested({key: OmegaConf.select(raw, key)}))
        except OmegaConfBaseException:
            return key
    return ""


def validate(schema: DictConfig, raw: DictConfig, where: str = "") -> DictConfig:
    """Merge `raw` into the structured `schema`; every mistake becomes a one-line ConfigError. Only
    interpolations of recipe keys are allowed, and they are resolved here (a bad one is one line too)."""
    check_interpolations(raw, where)
    try:
        merged = OmegaConf.merge(schema, raw)
    except ConfigKeyError as err:
        raise ConfigError(unknown_key_message(schema, _bad_key(err), where)) from None
    except ValidationError as err:
        key = _bad_key(err) or _find_bad_key(schema, raw)
        value = OmegaConf.select(raw, key, default=None) if key else None
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value)
        raise ConfigError(wrong_type_message(schema, key, value, where)) from None
    try:
        missing = sorted(OmegaConf.missing_keys(merged))
        if not missing:
            OmegaConf.resolve(merged)
    except OmegaConfBaseException as err:  # messages carry full_key/object_type lines: keep the first
        key = _bad_key(err)
        raise ConfigError(f"{f'key {key!r}' if key else 'interpolation'}{where}: {str(err).splitlines()[0]}") from None
    if missing:
        raise ConfigError(f"missing value for {', '.join(repr(k) for k in missing)}{where}")
    return merged


def dotted(tree: Mapping[str, Any], prefix: str = "", whole: Collection[str] = ()) -> dict[str, Any]:
    """A nested mapping as dotted keys (`optim.lr`, `head.hidden`), in order; an empty mapping, and one at a
    dotted key named in `whole` (`data.nearest_fill`), is one leaf. The one flattener of recipe trees
    (resolved keys, hparams, override checks)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and name not in whole:
            out.update(dotted(value, name + ".", whole))
        else:
            out[name] = value
    return out


def to_plain(cfg: DictConfig | ListConfig | Any) -> Any:
    """Plain Python containers (tuples of tuple-typed fields stay lists; callers convert)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def dump_yaml(data: Mapping[str, Any]) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(dict(data)))
