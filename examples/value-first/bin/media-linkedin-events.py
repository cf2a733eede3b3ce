#!/usr/bin/env python3
"""media-linkedin-events: lists the events of data/events.csv (columns date,
time, title, organizer, url, rsvp) that fall within --horizon-days days from
the reference date, and counts those whose RSVP is still `pending`.

Usage: media-linkedin-events.py [--horizon-days N] [--as-of YYYY-MM-DD]
  --horizon-days N  how far ahead to look (default 14);
                    LOOM_PARAM_HORIZON_DAYS overrides it
  --as-of DATE      reference date; LOOM_PARAM_AS_OF overrides it; default: the
                    local date of LOOM_SCHEDULED_AT, else today
Exit: 0 (STATUS ok), 1 internal error, 75 data/events.csv missing (temporary:
      the calendar export has not landed yet), 78 invalid argument.
"""
import argparse
import csv
import datetime as dt
import os
import re
import sys
from pathlib import Path

WORKER = "media-linkedin-events"
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
    parser.add_argument("--horizon-days", default="14")
    parser.add_argument("--as-of")
    args = parser.parse_args(argv)
    horizon = whole_number(os.environ.get("LOOM_PARAM_HORIZON_DAYS") or args.horizon_days, "horizon-days")
    as_of = reference_date(args.as_of)
    until = as_of + dt.timedelta(days=horizon)

    path = DATA / "events.csv"
    if not path.is_file():
        raise TempFail(f"input {path} is missing (will retry)")

    report = Report()
    report.say(f"run {report.run_id}: events from {as_of} to {until}")
    upcoming, skipped = [], 0
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                day = dt.date.fromisoformat((row.get("date") or "").strip())
            except ValueError:
                skipped += 1
                report.say(f"  ? row without a valid date: {row.get('title', '?')}")
                continue
            if as_of <= day <= until:
                upcoming.append((day, (row.get("time") or "").strip(), row))
    upcoming.sort(key=lambda e: (e[0], e[1]))
    pending = 0
    for day, time, row in upcoming:
        rsvp = (row.get("rsvp") or "").strip().lower()
        pending += rsvp == "pending"
        report.say(f"  {day} {time:5}  {row.get('title')} ({row.get('organizer')}) rsvp: {rsvp or 'none'}")

    status = f"ok {len(upcoming)} events in the next {horizon} days, {pending} RSVP pending"
    if upcoming:
        status += f"; next: {upcoming[0][0]} {upcoming[0][2].get('title')}"
    if skipped:
        status += f"; {skipped} rows skipped"
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
