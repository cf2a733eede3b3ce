#!/usr/bin/env python3
"""pattern-memory-analyzer: finds phrases that recur across the notes in
data/notes/ (*.md, *.txt): every run of --ngram words (within one line) that
appears in at least --min-notes different notes, ignoring phrases that start or
end with a filler word. It remembers when each phrase was first seen in
state/pattern-memory-analyzer/memory.json and marks phrases new to this run.

Usage: pattern-memory-analyzer.py [--ngram N] [--min-notes N] [--top N] [--as-of YYYY-MM-DD]
  --ngram N      words per phrase, 2..6 (default 3); LOOM_PARAM_NGRAM overrides
  --min-notes N  notes a phrase must appear in (default 2); LOOM_PARAM_MIN_NOTES
  --top N        phrases listed in the report (default 10); LOOM_PARAM_TOP
  --as-of DATE   date recorded as first seen; LOOM_PARAM_AS_OF overrides it;
                 default: the local date of LOOM_SCHEDULED_AT, else today
Exit: 0 (STATUS ok), 1 internal error, 75 data/notes/ missing (temporary: the
      notes sync has not landed yet), 78 invalid argument.
"""
import argparse
import datetime as dt
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

WORKER = "pattern-memory-analyzer"
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


def parse_date(value, what):
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{what} must be YYYY-MM-DD, got {value!r}") from None


def reference_date(arg):
    value = os.environ.get("LOOM_PARAM_AS_OF") or arg
    if value:
        return parse_date(value, "as-of")
    scheduled = os.environ.get("LOOM_SCHEDULED_AT")
    if scheduled:
        instant = dt.datetime.fromisoformat(scheduled.replace("Z", "+00:00"))
        return instant.astimezone().date()  # local date in TZ
    return dt.date.today()


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


FILLER = set(
    "a an and are as at be but by for from has have i in is it its of on or so that the "
    "this to was we were with you our us".split()
)


def phrases(line, n):
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", line.lower())
    for i in range(len(words) - n + 1):
        gram = words[i:i + n]
        if gram[0] in FILLER or gram[-1] in FILLER:
            continue
        yield " ".join(gram)


def main(argv):
    parser = Parser(prog=WORKER, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ngram", default="3")
    parser.add_argument("--min-notes", default="2")
    parser.add_argument("--top", default="10")
    parser.add_argument("--as-of")
    args = parser.parse_args(argv)
    n = whole_number(os.environ.get("LOOM_PARAM_NGRAM") or args.ngram, "ngram")
    if not 2 <= n <= 6:
        raise ConfigError(f"ngram must be between 2 and 6, got {n}")
    min_notes = whole_number(os.environ.get("LOOM_PARAM_MIN_NOTES") or args.min_notes, "min-notes")
    top = whole_number(os.environ.get("LOOM_PARAM_TOP") or args.top, "top")
    as_of = reference_date(args.as_of)

    notes_dir = DATA / "notes"
    if not notes_dir.is_dir():
        raise TempFail(f"input directory {notes_dir} is missing (will retry)")
    notes = sorted(p for p in notes_dir.rglob("*") if p.is_file() and p.suffix in (".md", ".txt"))

    report = Report()
    report.say(f"run {report.run_id}: {n}-word phrases in at least {min_notes} of {len(notes)} notes")
    seen_in = defaultdict(set)
    count = defaultdict(int)
    for note in notes:
        for line in note.read_text(encoding="utf-8").splitlines():
            for phrase in phrases(line.lstrip("#-* "), n):
                seen_in[phrase].add(note.name)
                count[phrase] += 1
    recurring = sorted(
        (p for p in seen_in if len(seen_in[p]) >= min_notes),
        key=lambda p: (-len(seen_in[p]), -count[p], p),
    )

    memory_path = STATE / WORKER / "memory.json"
    memory = json.loads(memory_path.read_text(encoding="utf-8")) if memory_path.is_file() else {}
    new = [p for p in recurring if p not in memory]
    for p in recurring:
        entry = memory.setdefault(p, {"first_seen": as_of.isoformat()})
        entry["last_seen"] = as_of.isoformat()
        entry["notes"] = len(seen_in[p])
    for p in recurring[:top]:
        mark = "  (new)" if p in new else ""
        report.say(f"  {len(seen_in[p])} notes, {count[p]}x  {p}{mark}")
    if len(recurring) > top:
        report.say(f"  ... {len(recurring) - top} more")

    memory_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memory_path.with_name(f".memory.json.{os.getpid()}")
    tmp.write_text(json.dumps(memory, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, memory_path)

    if recurring:
        best = recurring[0]
        status = f"ok {len(recurring)} recurring phrases ({len(new)} new); top: '{best}' in {len(seen_in[best])} notes"
    else:
        status = f"ok no recurring phrases in {len(notes)} notes"
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
