#!/usr/bin/env python3
"""Render Cassandra's configuration from the container's environment.

Standard library only: it runs with the host's python3 inside the member's
container, before Cassandra (or the stand-in) starts.

Environment (all optional unless stated):
  CASSANDRA_CLUSTER_NAME      cluster_name                     (default "Test Cluster")
  CASSANDRA_SEEDS             comma-separated seed hosts      (default: this member's address)
  CASSANDRA_NUM_TOKENS        num_tokens                       (default 16)
  CASSANDRA_DC, CASSANDRA_RACK  written to cassandra-rackdc.properties (set both or neither)
  CASSANDRA_ENDPOINT_SNITCH   (default GossipingPropertyFileSnitch with DC/RACK, else SimpleSnitch)
  POD_IP                      this member's address (default: the address of its hostname)
  CASSANDRA_LISTEN_ADDRESS, CASSANDRA_BROADCAST_ADDRESS,
  CASSANDRA_RPC_ADDRESS, CASSANDRA_BROADCAST_RPC_ADDRESS   overrides, each defaulting as Cassandra does
  CASSANDRA_DATA_DIR          data root holding data/, commitlog/, saved_caches/, hints/ (default /cassandra_data)
  CASSANDRA_AUTO_BOOTSTRAP    true | false                     (default true)
  CASSANDRA_CONCURRENT_READS, CASSANDRA_CONCURRENT_WRITES      (default 32)
  MAX_HEAP_SIZE, HEAP_NEWSIZE heap sizes such as 512M, 100M   (set both or neither)

Writes cassandra.yaml, jvm.options and (when a DC/RACK applies)
cassandra-rackdc.properties into --conf-dir; when that directory already
holds a Cassandra 4+ jvm-server.options (copied from an installation), its
heap lines are replaced as well. Bad input exits with status 2 and a message
naming the variable.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import socket
import string
import sys
from pathlib import Path
from typing import Mapping

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "conf"
HEAP_RE = re.compile(r"^[1-9][0-9]*[KMGkmg]?$")
HEAP_LINE_RE = re.compile(r"^\s*-Xm[sxn]\S*\s*$")
SNITCHES_NEEDING_RACKDC = ("GossipingPropertyFileSnitch",)


class ConfigError(Exception):
    """A setting that cannot be used; the message names the variable and the reason."""


def _yaml(value: str) -> str:
    # A JSON string is a valid YAML scalar, so any value (colons, quotes, '#') stays intact.
    return json.dumps(value)


def _positive_int(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ConfigError(f"{name}: must be a whole number between 1 and {maximum}, got {raw!r}")
    return int(raw)


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "yes", "1"):
        return True
    if raw in ("false", "no", "0"):
        return False
    raise ConfigError(f"{name}: must be true or false, got {env[name]!r}")


def _address(env: Mapping[str, str], name: str, default: str, allow_any: bool = False) -> str:
    raw = env.get(name, "").strip() or default
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be an IP address, got {raw!r}") from None
    if ip.is_unspecified and not allow_any:
        raise ConfigError(f"{name}: must be a concrete address other members can reach, got {raw!r}")
    return str(ip)


def _own_address(env: Mapping[str, str]) -> str:
    if env.get("POD_IP", "").strip():
        return _address(env, "POD_IP", "")
    host = socket.gethostname()
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise ConfigError(f"POD_IP: not set and the hostname {host!r} does not resolve ({exc})") from None


def _seeds(env: Mapping[str, str], default: str) -> str:
    raw = env.get("CASSANDRA_SEEDS", "")
    if not raw.strip():
        return default
    seeds = [s.strip() for s in raw.split(",")]
    for seed in seeds:
        if not seed or any(c.isspace() for c in seed):
            raise ConfigError(f"CASSANDRA_SEEDS: must be a comma-separated list of host names or addresses, got {raw!r}")
    return ",".join(seeds)


def _heap(env: Mapping[str, str]) -> list[str]:
    max_heap = env.get("MAX_HEAP_SIZE", "").strip()
    new_size = env.get("HEAP_NEWSIZE", "").strip()
    if bool(max_heap) != bool(new_size):
        missing = "HEAP_NEWSIZE" if max_heap else "MAX_HEAP_SIZE"
        # cassandra-env.sh refuses the same: one without the other cannot size the young generation.
        raise ConfigError(f"{missing}: MAX_HEAP_SIZE and HEAP_NEWSIZE must be set together")
    if not max_heap:
        return []
    for name, value in (("MAX_HEAP_SIZE", max_heap), ("HEAP_NEWSIZE", new_size)):
        if not HEAP_RE.match(value):
            raise ConfigError(f"{name}: must be a size such as 512M or 2G, got {value!r}")
    return [f"-Xms{max_heap}", f"-Xmx{max_heap}", f"-Xmn{new_size}"]


def settings(env: Mapping[str, str]) -> dict[str, str]:
    """Every template value, validated; raises ConfigError on bad input."""
    own = _own_address(env)
    listen = _address(env, "CASSANDRA_LISTEN_ADDRESS", own)
    broadcast = _address(env, "CASSANDRA_BROADCAST_ADDRESS", listen)
    rpc = _address(env, "CASSANDRA_RPC_ADDRESS", listen, allow_any=True)
    rpc_default = rpc if not ipaddress.ip_address(rpc).is_unspecified else ""
    if not rpc_default and not env.get("CASSANDRA_BROADCAST_RPC_ADDRESS", "").strip():
        raise ConfigError("CASSANDRA_BROADCAST_RPC_ADDRESS: required when CASSANDRA_RPC_ADDRESS is a wildcard address")
    broadcast_rpc = _address(env, "CASSANDRA_BROADCAST_RPC_ADDRESS", rpc_default)

    dc = env.get("CASSANDRA_DC", "").strip()
    rack = env.get("CASSANDRA_RACK", "").strip()
    if bool(dc) != bool(rack):
        missing = "CASSANDRA_RACK" if dc else "CASSANDRA_DC"
        raise ConfigError(f"{missing}: CASSANDRA_DC and CASSANDRA_RACK must be set together")
    for name, value in (("CASSANDRA_DC", dc), ("CASSANDRA_RACK", rack)):
        if any(c.isspace() or c in "=:#!" for c in value):
            raise ConfigError(f"{name}: must not contain spaces or any of = : # !, got {value!r}")
    snitch = env.get("CASSANDRA_ENDPOINT_SNITCH", "").strip() or (
        "GossipingPropertyFileSnitch" if dc else "SimpleSnitch")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_.$]*$", snitch):
        raise ConfigError(f"CASSANDRA_ENDPOINT_SNITCH: must be a Java class name, got {snitch!r}")

    cluster_name = env.get("CASSANDRA_CLUSTER_NAME", "").strip() or "Test Cluster"
    data_root = env.get("CASSANDRA_DATA_DIR", "").strip() or "/cassandra_data"
    if not data_root.startswith("/"):
        raise ConfigError(f"CASSANDRA_DATA_DIR: must be an absolute path, got {data_root!r}")
    data_root = data_root.rstrip("/") or "/"
    return {
        "cluster_name": cluster_name,
        "seeds": _seeds(env, broadcast),
        "num_tokens": str(_positive_int(env, "CASSANDRA_NUM_TOKENS", 16, 16384)),
        "auto_bootstrap": "true" if _boolean(env, "CASSANDRA_AUTO_BOOTSTRAP", True) else "false",
        "listen_address": listen,
        "broadcast_address": broadcast,
        "rpc_address": rpc,
        "broadcast_rpc_address": broadcast_rpc,
        "endpoint_snitch": snitch,
        "dc": dc or ("dc1" if snitch.endswith(SNITCHES_NEEDING_RACKDC) else ""),
        "rack": rack or ("rack1" if snitch.endswith(SNITCHES_NEEDING_RACKDC) else ""),
        "data_root": data_root,
        "data_directory": f"{data_root}/data",
        "commitlog_directory": f"{data_root}/commitlog",
        "saved_caches_directory": f"{data_root}/saved_caches",
        "hints_directory": f"{data_root}/hints",
        "concurrent_reads": str(_positive_int(env, "CASSANDRA_CONCURRENT_READS", 32, 1024)),
        "concurrent_writes": str(_positive_int(env, "CASSANDRA_CONCURRENT_WRITES", 32, 1024)),
        "heap_options": "\n".join(_heap(env)),
    }


def _fill(template: Path, values: Mapping[str, str]) -> str:
    try:
        return string.Template(template.read_text()).substitute(values)
    except KeyError as exc:
        raise ConfigError(f"{template.name}: unknown placeholder {exc}") from None


def _replace_heap_lines(text: str, heap: list[str]) -> str:
    kept = [line for line in text.splitlines() if not HEAP_LINE_RE.match(line)]
    if heap:
        kept += ["# Heap set from MAX_HEAP_SIZE / HEAP_NEWSIZE by render_config.py", *heap]
    return "\n".join(kept) + "\n"


def render(conf_dir: Path, templates: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Write the configuration files; returns the values used."""
    values = settings(env)
    yaml_values = {k: _yaml(v) if k in _QUOTED else v for k, v in values.items()}
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "cassandra.yaml").write_text(_fill(templates / "cassandra.yaml", yaml_values))
    (conf_dir / "jvm.options").write_text(_fill(templates / "jvm.options", values))
    heap = _heap(env)
    server_options = conf_dir / "jvm-server.options"
    if server_options.exists():
        # Cassandra 4+ reads jvm-server.options, not jvm.options.
        server_options.write_text(_replace_heap_lines(server_options.read_text(), heap))
    rackdc = conf_dir / "cassandra-rackdc.properties"
    if values["dc"]:
        rackdc.write_text(_fill(templates / "cassandra-rackdc.properties", values))
    return values


_QUOTED = {
    "cluster_name", "seeds", "listen_address", "broadcast_address", "rpc_address", "broadcast_rpc_address",
    "endpoint_snitch", "data_directory", "commitlog_directory", "saved_caches_directory", "hints_directory",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf-dir", required=True, type=Path, help="where to write the configuration")
    parser.add_argument("--templates", type=Path, default=DEFAULT_TEMPLATES, help="the conf/ templates")
    args = parser.parse_args(argv)
    try:
        values = render(args.conf_dir, args.templates, os.environ)
    except ConfigError as exc:
        print(f"render_config: {exc}", file=sys.stderr)
        return 2
    shown = {k: values[k] for k in ("cluster_name", "seeds", "listen_address", "endpoint_snitch", "dc", "rack",
                                    "data_root", "num_tokens")}
    print(json.dumps({"event": "cassandra configuration rendered", "conf_dir": str(args.conf_dir), **shown}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
