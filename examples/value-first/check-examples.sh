#!/bin/sh
# check-examples.sh: runs every worker program of this example once, the way a
# Loom agent would (DESIGN §6): a fresh run directory as the working directory,
# a cleared environment with only PATH, HOME, LANG, TZ, the worker's `env` and
# the LOOM_* variables, and the RunCommand as JSON on stdin. A run passes when
# it exits 0 and its last non-empty stdout line matches ^STATUS: [A-Za-z_]+( .*)?$
#
# The argv and env of each run come from workers.toml (via python3's tomllib,
# which also validates workers.toml and loom.toml); without python3 >= 3.11 it
# runs each program of bin/ with no arguments instead.
#
# Usage: check-examples.sh [--in-place]
#   --in-place  write reports to the example's state/ (as Loom would) instead
#               of a temporary directory that is removed afterwards
# Environment: CHECK_PATH (PATH given to the programs, default /usr/bin:/bin),
#   CHECK_SCHEDULED_AT (LOOM_SCHEDULED_AT, default 2026-03-02T09:00:00Z, fixed
#   so that the output is the same on every run).
# Exit: 0 when every program passes, 1 otherwise, 2 on a usage error.
set -u

HERE=$(CDPATH='' cd -P -- "$(dirname -- "$0")" && pwd) || exit 2
in_place=false
case ${1:-} in
    '') ;;
    --in-place) in_place=true ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--in-place]" >&2; exit 2 ;;
esac
check_path=${CHECK_PATH:-/usr/bin:/bin}
scheduled_at=${CHECK_SCHEDULED_AT:-2026-03-02T09:00:00Z}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/loom-check.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
if $in_place; then state=$HERE/state; else state=$tmp/state; fi
tab=$(printf '\t')
failed=0

# One line per worker: name <TAB> enabled <TAB> timezone <TAB> shell-quoted
# "NAME=VALUE ... /abs/program args...". Also validates both TOML files, the
# field names and values of every worker against DESIGN §5, and that every
# program in bin/ has a worker.
if command -v python3 >/dev/null 2>&1 && python3 -c 'import tomllib' 2>/dev/null; then
    python3 - "$HERE" "$tmp/toml" > "$tmp/plan" <<'PYEOF' || failed=1
import os, shlex, sys, tomllib
here, toml_log = sys.argv[1], open(sys.argv[2], "w")
FIELDS = {"description", "schedule", "timezone", "command", "enabled", "timeout", "retries",
          "backoff", "overlap", "concurrency", "catch_up", "starting_deadline", "jitter",
          "dst_gap", "dst_repeat", "labels", "env", "secrets", "enforcement", "output"}
CHOICES = {"overlap": {"forbid", "buffer_one", "skip", "replace", "allow"},
           "catch_up": {"none", "last", "all"}, "dst_gap": {"shift", "skip"},
           "dst_repeat": {"first", "last", "both"}}
errors = []
docs = {}
for name in ("loom.toml", "workers.toml"):
    try:
        with open(os.path.join(here, name), "rb") as f:
            docs[name] = tomllib.load(f)
        print(f"TOML  {name:<24} parses", file=toml_log)
    except (OSError, tomllib.TOMLDecodeError) as e:
        errors.append(f"{name}: {e}")
        docs[name] = {}
registered = set()
for worker, w in sorted(docs["workers.toml"].get("workers", {}).items()):
    for key in sorted(set(w) - FIELDS):
        errors.append(f"workers.toml: [workers.{worker}] unknown field {key!r}")
    for key, allowed in CHOICES.items():
        if key in w and w[key] not in allowed:
            errors.append(f"workers.toml: [workers.{worker}] {key} = {w[key]!r}, not one of {sorted(allowed)}")
    if set(w.get("output", {})) - {"format", "max_bytes"}:
        errors.append(f"workers.toml: [workers.{worker}.output] unknown field")
    argv = list(w.get("command", []))
    if not argv:
        errors.append(f"workers.toml: [workers.{worker}] has no command")
        continue
    if "/" in argv[0] and not os.path.isabs(argv[0]):
        argv[0] = os.path.normpath(os.path.join(here, argv[0]))
    if not os.access(argv[0], os.X_OK):
        errors.append(f"workers.toml: [workers.{worker}] program {argv[0]} is not executable")
    registered.add(os.path.realpath(argv[0]))
    env = [f"{k}={v}" for k, v in sorted(w.get("env", {}).items())]
    print(worker, str(w.get("enabled", True)).lower(), w.get("timezone", "UTC"), shlex.join(env + argv), sep="\t")
bindir = os.path.join(here, "bin")
for prog in sorted(os.listdir(bindir)):
    path = os.path.realpath(os.path.join(bindir, prog))
    if os.path.isfile(path) and path not in registered:
        errors.append(f"bin/{prog} is not the command of any worker in workers.toml")
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
PYEOF
    cat "$tmp/toml" 2>/dev/null
else
    echo "python3 with tomllib not found: TOML not validated, running bin/* without arguments" >&2
    for prog in "$HERE"/bin/*; do
        [ -f "$prog" ] || continue
        name=${prog##*/}
        quoted=$(printf '%s\n' "$prog" | sed "s/'/'\\\\''/g")
        printf '%s\t%s\t%s\t%s\n' "${name%.*}" true America/Chicago "'$quoted'"
    done > "$tmp/plan"
fi

n=0
while IFS=$tab read -r worker enabled zone cmdline; do
    [ -n "$worker" ] || continue
    n=$((n + 1))
    run=$tmp/run-$worker
    mkdir -p "$run" || exit 1
    run_id=check-$(printf '%04d' "$n")-$worker
    printf '{"v":1,"run_id":"%s","worker":"%s","scheduled_at":"%s","trigger":"manual","params":{}}\n' \
        "$run_id" "$worker" "$scheduled_at" > "$tmp/$worker.json"
    eval "set -- $cmdline"
    (
        cd "$run" || exit 1
        exec env -i PATH="$check_path" HOME="$run" LANG=C.UTF-8 TZ="$zone" \
            LOOM_RUN_ID="$run_id" LOOM_WORKER="$worker" LOOM_ATTEMPT=1 \
            LOOM_SCHEDULED_AT="$scheduled_at" LOOM_TRIGGER=manual \
            STATE_DIR="$state" "$@" < "$tmp/$worker.json"
    ) > "$tmp/$worker.out" 2> "$tmp/$worker.err"
    rc=$?
    last=$(awk 'NF { last = $0 } END { print last }' "$tmp/$worker.out")
    note=
    [ "$enabled" = true ] || note=disabled
    if [ "$rc" -eq 0 ] && printf '%s\n' "$last" | grep -Eq '^STATUS: [A-Za-z_]+( .*)?$'; then
        printf 'PASS  %-24s %-8s exit 0  %s\n' "$worker" "$note" "$last"
    else
        failed=1
        printf 'FAIL  %-24s %-8s exit %s  last line: %s\n' "$worker" "$note" "$rc" "${last:-<none>}"
        sed 's/^/      stderr: /' "$tmp/$worker.err" | tail -n 5
    fi
done < "$tmp/plan"

if [ "$n" -eq 0 ]; then
    echo "no workers to run" >&2
    failed=1
fi
if [ "$failed" -ne 0 ]; then
    echo "check-examples: FAILED"
    exit 1
fi
echo "check-examples: all $n worker programs passed"
