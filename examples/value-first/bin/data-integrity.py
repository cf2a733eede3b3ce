#!/usr/bin/env python3
"""data-integrity: checks every JSON file under data/ (recursively): each must
parse; every object's `id` must be unique across all files; and every
reference -- a key ending in `_id` (a string) or `_ids` (a list of strings) --
must name an `id` that exists somewhere under data/. `null` references are
allowed.

Usage: data-integrity.py [--max-listed N]
  --max-listed N  issues listed in the output (default 20, all are counted);
                  LOOM_PARAM_MAX_LISTED overrides it
Exit: 0 (STATUS ok|warn), 1 internal error, 75 data/ missing or without any
      JSON file (temporary: the nightly export has not landed yet),
      78 invalid argument.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

WORKER = "data-integrity"
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
STATE = Path(os.environ.get("STATE_DIR") or ROOT / "state")


class ConfigError(Exception):
    """Invalid argument or param: permanent, exit 78."""


class TempFail(Exception):
    """A required input is temporarily missing: retryable, exit 75."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def whole_number(value, what):
    if not re.fullmatch(r"[0-9]+", str(value)):
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    return int(value)


class Report:
    """Progress lines go to stdout and to the run's report file."""

    def __init__(self):
        self.lines = []
        self.run_id = re.sub(r"[^A-Za-z0-9._-]", "_", os.environ.get("LOOM_RUN_ID") or "manual")
        self.dir = STATE / WORKER

    def say(self, line=""):
        print(line, flush=True)
        self.lines.append(line)

    def finish(self, status):
        self.say(f"report: {self.dir / (self.run_id + '.txt')}")
        self.lines.append(f"STATUS: {status}")
        text = "\n".join(self.lines) + "\n"
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in (f"{self.run_id}.txt", "latest.txt"):
            tmp = self.dir / f".{name}.{os.getpid()}"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.dir / name)
        print(f"STATUS: {status}", flush=True)


def walk(node, path):
    """Yield (json path, object) for every object in a parsed document."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def main(argv):
    parser = Parser(prog=WORKER, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-listed", default="20")
    args = parser.parse_args(argv)
    max_listed = whole_number(os.environ.get("LOOM_PARAM_MAX_LISTED") or args.max_listed, "max-listed")

    files = sorted(DATA.rglob("*.json")) if DATA.is_dir() else []
    if not files:
        raise TempFail(f"no JSON files under {DATA} (will retry)")

    report = Report()
    report.say(f"run {report.run_id}: checking {len(files)} JSON files under data/")
    issues = []
    docs = []
    for path in files:
        rel = path.relative_to(DATA).as_posix()
        try:
            docs.append((rel, json.loads(path.read_text(encoding="utf-8"))))
            report.say(f"  parsed {rel}")
        except (ValueError, UnicodeDecodeError) as e:
            issues.append(f"UNPARSEABLE {rel}: {e}")

    ids = {}
    for rel, doc in docs:
        for where, obj in walk(doc, "$"):
            value = obj.get("id")
            if isinstance(value, str):
                if value in ids:
                    issues.append(f"DUPLICATE id {value!r} in {rel} {where} (first in {ids[value]})")
                else:
                    ids[value] = f"{rel} {where}"

    references = 0
    for rel, doc in docs:
        for where, obj in walk(doc, "$"):
            label = obj.get("id", where)
            for key, value in obj.items():
                if key.endswith("_id"):
                    targets = [] if value is None else [value]
                elif key.endswith("_ids"):
                    targets = value if isinstance(value, list) else [value]
                else:
                    continue
                for target in targets:
                    references += 1
                    if not isinstance(target, str):
                        issues.append(f"BAD REFERENCE {rel} {label}: {key} is {target!r}, not an id string")
                    elif target not in ids:
                        issues.append(f"BROKEN REFERENCE {rel} {label}: {key} {target!r} does not exist")

    for issue in issues[:max_listed]:
        report.say(f"  {issue}")
    if len(issues) > max_listed:
        report.say(f"  ... {len(issues) - max_listed} more")
    summary = f"{len(files)} files, {len(ids)} ids, {references} references"
    if issues:
        status = f"warn {len(issues)} integrity issue{'s' if len(issues) != 1 else ''} ({summary})"
    else:
        status = f"ok {summary}, all consistent"
    report.finish(status)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ConfigError as e:
        print(f"{WORKER}: {e}", file=sys.stderr)
        sys.exit(78)
    except TempFail as e:
        print(f"{WORKER}: {e}", file=sys.stderr)
        sys.exit(75)
    except Exception as e:  # noqa: BLE001 - any other failure is an internal error
        print(f"{WORKER}: internal error: {e!r}", file=sys.stderr)
        sys.exit(1)
