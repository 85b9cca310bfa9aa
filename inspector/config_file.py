"""Reading the YAML config file within bounds: a size cap before parsing, and YAML aliases that
may repeat a section but not multiply the document (a "billion laughs" file of a few hundred
bytes would otherwise expand to 10**9 values when validated or quoted in an error)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inspector.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config with every key commented is ~15 KB
MAX_EXPANDED_NODES = 100_000  # values after alias expansion; the example config has a few hundred


class _AliasBomb(Exception):
    pass


class _RecursiveAlias(Exception):
    pass


def read_config_text(path: Path) -> str:
    """The file's text; ConfigError when it is missing, unreadable, too large or not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config {path}: file not found; pass --config with an existing YAML file "
                          "(see config/inspector.example.yaml)") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path}: is a folder; pass --config with a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; "
                          "a config file is a few KB (is this the right file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path}: not UTF-8 text (byte {exc.start})") from None


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` has with every alias written out, counted without writing them out
    (each shared node is counted once and its count reused); stops as soon as it passes ``limit``."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _RecursiveAlias
        open_nodes.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n += size(child)
                if n > limit:
                    raise _AliasBomb
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += size(k) + size(v)
                if n > limit:
                    raise _AliasBomb
        open_nodes.discard(key)
        sizes[key] = n
        return n

    return size(root)


def parse_config_yaml(text: str, origin: str) -> Any:
    """``yaml.safe_load`` with the alias bound; ConfigError (one line) for anything refused."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, MAX_EXPANDED_NODES)
        return loader.construct_document(node)
    except _AliasBomb:
        raise ConfigError(f"config {origin}: YAML aliases expand it to more than {MAX_EXPANDED_NODES} values; "
                          "an alias may repeat a section, not multiply the file") from None
    except _RecursiveAlias:
        raise ConfigError(f"config {origin}: a YAML alias refers to the section that contains it "
                          "(a recursive alias); write the value out") from None
    except RecursionError:
        raise ConfigError(f"config {origin}: nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config {origin}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    finally:
        loader.dispose()
