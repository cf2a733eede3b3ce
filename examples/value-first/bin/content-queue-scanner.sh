#!/bin/sh
# content-queue-scanner: counts the items in data/content-queue/ (*.md) by the
# `state:` of their front matter (idea, drafting, review, scheduled, published)
# and warns when an item has no known state or fewer than --min-scheduled items
# are scheduled (the queue is running dry).
#
# Usage: content-queue-scanner.sh [--min-scheduled N]
#   --min-scheduled N  warn below this many scheduled items (default 1);
#                      LOOM_PARAM_MIN_SCHEDULED overrides it
# Exit: 0 (STATUS ok|warn), 1 internal error, 75 data/content-queue/ missing
#       (temporary: the editorial sync has not landed yet), 78 invalid argument.
set -u

WORKER=content-queue-scanner
STATES="idea drafting review scheduled published"
die() { echo "$WORKER: $*" >&2; exit 1; }
config_error() { echo "$WORKER: $*" >&2; exit 78; }
tempfail() { echo "$WORKER: $*" >&2; exit 75; }

ROOT=$(CDPATH='' cd -P -- "$(dirname -- "$0")/.." && pwd) || die "cannot locate the example directory"
DATA=$ROOT/data
STATE=${STATE_DIR:-$ROOT/state}

min_scheduled=1
while [ $# -gt 0 ]; do
    case $1 in
        --min-scheduled) [ $# -ge 2 ] || config_error "--min-scheduled needs a value"; min_scheduled=$2; shift 2 ;;
        --min-scheduled=*) min_scheduled=${1#--min-scheduled=}; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) config_error "unknown argument: $1" ;;
    esac
done
min_scheduled=${LOOM_PARAM_MIN_SCHEDULED:-$min_scheduled}
case $min_scheduled in ''|*[!0-9]*) config_error "min-scheduled must be a whole number, got '$min_scheduled'" ;; esac

queue=$DATA/content-queue
[ -d "$queue" ] || tempfail "input directory $queue is missing (will retry)"

run_id=$(printf '%s' "${LOOM_RUN_ID:-manual}" | tr -c 'A-Za-z0-9._-' '_')
out=$STATE/$WORKER
mkdir -p "$out" || die "cannot create $out"
tmp=$out/.$run_id.$$
trap 'rm -f "$tmp" "$tmp.states"' EXIT
: > "$tmp" || die "cannot write $tmp"
: > "$tmp.states" || die "cannot write $tmp.states"
say() { printf '%s\n' "$*"; printf '%s\n' "$*" >> "$tmp"; }

say "run $run_id: scanning data/content-queue/"
total=0 bad=0
for f in "$queue"/*.md; do
    [ -f "$f" ] || continue
    total=$((total + 1))
    st=$(awk 'NR == 1 && $0 != "---" { exit }
              NR > 1 && $0 == "---" { exit }
              NR > 1 && /^state:/ { sub(/^state:[ \t]*/, ""); gsub(/["\047\r]/, ""); sub(/[ \t]+$/, ""); print tolower($0); exit }' "$f") \
        || die "cannot read $f"
    case " $STATES " in
        *" $st "*) [ -n "$st" ] && printf '%s\n' "$st" >> "$tmp.states" ;;
        *) st= ;;
    esac
    if [ -z "$st" ]; then
        bad=$((bad + 1))
        say "  no known state: ${f##*/}"
    fi
done

summary=
for s in $STATES; do
    n=$(grep -cx "$s" "$tmp.states"); n=${n:-0}
    say "  $s: $n"
    [ "$n" -gt 0 ] && summary="$summary, $n $s"
    [ "$s" = scheduled ] && scheduled=$n
done
summary=${summary#, }
[ -n "$summary" ] || summary="empty"

problems=
[ "$bad" -gt 0 ] && problems="$bad without a known state"
if [ "$scheduled" -lt "$min_scheduled" ]; then
    problems="${problems:+$problems, }only $scheduled scheduled (want $min_scheduled)"
fi
if [ -n "$problems" ]; then
    status="warn $total items ($summary): $problems"
else
    status="ok $total items ($summary)"
fi
say "report: $out/$run_id.txt"
printf 'STATUS: %s\n' "$status" >> "$tmp"
cp "$tmp" "$out/.latest.$$" && mv "$out/.latest.$$" "$out/latest.txt" && mv "$tmp" "$out/$run_id.txt" \
    || die "cannot write the report in $out"
printf 'STATUS: %s\n' "$status"
