#!/usr/bin/env python3
"""relationship-sentinel: flags contacts in data/contacts.csv whose
`last_touched` date is more than --days days before the reference date.

Only the tiers named in the env variable SENTINEL_TIERS (comma-separated,
default: every tier) are checked.

Usage: relationship-sentinel.py [--days N] [--as-of YYYY-MM-DD]
  --days N      days without contact after which a contact is flagged
                (default 45); LOOM_PARAM_DAYS overrides it
  --as-of DATE  reference date; LOOM_PARAM_AS_OF overrides it; default: the
                local date of LOOM_SCHEDULED_AT, else today
Exit: 0 (STATUS ok|warn), 1 internal error, 75 data/contacts.csv missing
      (temporary: the CRM export has not landed yet), 78 invalid argument.
"""
import argparse
import csv
import datetime as dt
import os
import re
import sys
from pathlib import Path

WORKER = "relationship-sentinel"
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


def main(argv):
    parser = Parser(prog=WORKER, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", default="45")
    parser.add_argument("--as-of")
    args = parser.parse_args(argv)
    days = whole_number(os.environ.get("LOOM_PARAM_DAYS") or args.days, "days")
    as_of = reference_date(args.as_of)
    tiers = {t.strip().lower() for t in os.environ.get("SENTINEL_TIERS", "").split(",") if t.strip()}

    path = DATA / "contacts.csv"
    if not path.is_file():
        raise TempFail(f"input {path} is missing (will retry)")

    report = Report()
    scope = ", ".join(sorted(tiers)) if tiers else "all"
    report.say(f"run {report.run_id}: contacts not touched in {days} days as of {as_of} (tiers: {scope})")
    checked = flagged = bad = 0
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            tier = (row.get("tier") or "").strip().lower()
            if tiers and tier not in tiers:
                continue
            checked += 1
            name = (row.get("name") or "?").strip()
            try:
                touched = dt.date.fromisoformat((row.get("last_touched") or "").strip())
            except ValueError:
                bad += 1
                report.say(f"  ?       {name}: no valid last_touched date")
                continue
            age = (as_of - touched).days
            if age > days:
                flagged += 1
                report.say(f"  REACH OUT {name} ({tier}, owner {row.get('owner', '?')}): {age} days since {touched}")
    if flagged or bad:
        status = f"warn {flagged} of {checked} contacts not touched in {days} days"
        if bad:
            status += f", {bad} without a date"
    else:
        status = f"ok {checked} contacts, all touched within {days} days"
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
