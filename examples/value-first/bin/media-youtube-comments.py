#!/usr/bin/env python3
"""media-youtube-comments: summarises the comment export data/media/comments.json
(the channel's videos and their comments, replies linked by `parent_id`): per
video the number of comments and of open questions, where an open question is
a top-level comment containing "?" that the channel owner has not replied to.
The owner is the env variable CHANNEL_OWNER, else the export's `channel`.
Warns when more than --max-unanswered questions are open.

Usage: media-youtube-comments.py [--max-unanswered N]
  --max-unanswered N  open questions tolerated before warning (default 3);
                      LOOM_PARAM_MAX_UNANSWERED overrides it
Exit: 0 (STATUS ok|warn), 1 internal error (including an export that does not
      parse), 75 data/media/comments.json missing (temporary: the export has
      not landed yet), 78 invalid argument.
"""
import argparse
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

WORKER = "media-youtube-comments"
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


def main(argv):
    parser = Parser(prog=WORKER, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-unanswered", default="3")
    args = parser.parse_args(argv)
    limit = whole_number(os.environ.get("LOOM_PARAM_MAX_UNANSWERED") or args.max_unanswered, "max-unanswered")

    path = DATA / "media" / "comments.json"
    if not path.is_file():
        raise TempFail(f"input {path} is missing (will retry)")
    export = json.loads(path.read_text(encoding="utf-8"))
    owner = os.environ.get("CHANNEL_OWNER") or export.get("channel", "")
    videos = {v["id"]: v.get("title", v["id"]) for v in export.get("videos", [])}
    comments = export.get("comments", [])

    report = Report()
    report.say(f"run {report.run_id}: {len(comments)} comments on {len(videos)} videos (owner {owner or 'unknown'})")
    owner_replied = {c.get("parent_id") for c in comments if c.get("parent_id") and c.get("author") == owner}
    per_video = defaultdict(lambda: {"comments": 0, "open": []})
    for c in comments:
        stats = per_video[c.get("video_id")]
        stats["comments"] += 1
        if not c.get("parent_id") and c.get("author") != owner and "?" in c.get("text", "") \
                and c.get("id") not in owner_replied:
            stats["open"].append(c)

    open_total = 0
    for video_id in sorted(per_video, key=str):
        stats = per_video[video_id]
        title = videos.get(video_id, f"unknown video {video_id}")
        report.say(f"  {video_id} {title}: {stats['comments']} comments, {len(stats['open'])} open questions")
        for c in stats["open"]:
            open_total += 1
            text = " ".join(str(c.get("text", "")).split())
            report.say(f"    ? {c.get('author')}: {text} ({c.get('id')})")

    detail = f"{len(comments)} comments on {len(per_video)} videos, {open_total} open questions"
    status = f"warn {detail} (more than {limit})" if open_total > limit else f"ok {detail}"
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
