#!/bin/sh
# staleness-detector: lists documents in data/documents/ (recursively, *.md)
# whose `updated:` front-matter date (or, without one, the file's modification
# time) is more than --days days before the reference date, and writes a report.
#
# Usage: staleness-detector.sh [--days N] [--as-of YYYY-MM-DD]
#   --days N      age in days after which a document is stale (default 30);
#                 LOOM_PARAM_DAYS overrides it
#   --as-of DATE  reference date; LOOM_PARAM_AS_OF overrides it; default: the
#                 local date of LOOM_SCHEDULED_AT, else today
# Exit: 0 (STATUS ok|warn), 1 internal error, 75 data/documents/ missing
#       (temporary: e.g. the share is not mounted yet), 78 invalid argument.
set -u

WORKER=staleness-detector
die() { echo "$WORKER: $*" >&2; exit 1; }
config_error() { echo "$WORKER: $*" >&2; exit 78; }
tempfail() { echo "$WORKER: $*" >&2; exit 75; }

ROOT=$(CDPATH='' cd -P -- "$(dirname -- "$0")/.." && pwd) || die "cannot locate the example directory"
DATA=$ROOT/data
STATE=${STATE_DIR:-$ROOT/state}

days=30
as_of=
while [ $# -gt 0 ]; do
    case $1 in
        --days) [ $# -ge 2 ] || config_error "--days needs a value"; days=$2; shift 2 ;;
        --days=*) days=${1#--days=}; shift ;;
        --as-of) [ $# -ge 2 ] || config_error "--as-of needs a value"; as_of=$2; shift 2 ;;
        --as-of=*) as_of=${1#--as-of=}; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) config_error "unknown argument: $1" ;;
    esac
done
days=${LOOM_PARAM_DAYS:-$days}
as_of=${LOOM_PARAM_AS_OF:-$as_of}
case $days in ''|*[!0-9]*) config_error "days must be a whole number, got '$days'" ;; esac

if [ -z "$as_of" ]; then
    if [ -n "${LOOM_SCHEDULED_AT:-}" ]; then
        # GNU date converts the UTC instant to the local (TZ) date; elsewhere
        # fall back to its UTC date.
        as_of=$(date -d "$LOOM_SCHEDULED_AT" +%Y-%m-%d 2>/dev/null) || as_of=${LOOM_SCHEDULED_AT%%T*}
    else
        as_of=$(date +%Y-%m-%d) || die "cannot read the date"
    fi
fi
case $as_of in
    [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
    *) config_error "as-of must be YYYY-MM-DD, got '$as_of'" ;;
esac

[ -d "$DATA/documents" ] || tempfail "input directory $DATA/documents is missing (will retry)"

run_id=$(printf '%s' "${LOOM_RUN_ID:-manual}" | tr -c 'A-Za-z0-9._-' '_')
out=$STATE/$WORKER
mkdir -p "$out" || die "cannot create $out"
tmp=$out/.$run_id.$$
trap 'rm -f "$tmp" "$tmp.list"' EXIT
: > "$tmp" || die "cannot write $tmp"
say() { printf '%s\n' "$*"; printf '%s\n' "$*" >> "$tmp"; }

# age_days FROM TO: whole days from date FROM to date TO (both YYYY-MM-DD).
age_days() {
    awk -v a="$1" -v b="$2" '
        function jdn(s,   y, m, d, k) {
            y = substr(s, 1, 4) + 0; m = substr(s, 6, 2) + 0; d = substr(s, 9, 2) + 0
            k = int((m - 14) / 12)
            return int(1461 * (y + 4800 + k) / 4) + int(367 * (m - 2 - 12 * k) / 12) \
                 - int(3 * int((y + 4900 + k) / 100) / 4) + d - 32075
        }
        BEGIN { print jdn(b) - jdn(a) }'
}

# front_matter_date FILE: the `updated:` value of the leading --- block, if any.
front_matter_date() {
    awk 'NR == 1 && $0 != "---" { exit }
         NR > 1 && $0 == "---" { exit }
         NR > 1 && /^updated:/ { sub(/^updated:[ \t]*/, ""); gsub(/["\047\r]/, ""); sub(/[ \t]+$/, ""); print; exit }' "$1"
}

say "run $run_id: documents older than $days days as of $as_of"
find "$DATA/documents" -type f -name '*.md' | LC_ALL=C sort > "$tmp.list" || die "cannot list $DATA/documents"

total=0 stale=0 unknown=0
while IFS= read -r f; do
    total=$((total + 1))
    rel=${f#"$DATA/documents/"}
    d=$(front_matter_date "$f")
    src=updated
    if [ -z "$d" ]; then
        d=$(date -r "$f" +%Y-%m-%d 2>/dev/null) || d=
        src=mtime
    fi
    case $d in
        [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
        *) unknown=$((unknown + 1)); say "  ?     $rel (no usable date)"; continue ;;
    esac
    age=$(age_days "$d" "$as_of") || die "date arithmetic failed for $rel"
    if [ "$age" -gt "$days" ]; then
        stale=$((stale + 1))
        say "  STALE $rel ($src $d, $age days)"
    else
        say "  fresh $rel ($src $d)"
    fi
done < "$tmp.list"

if [ "$stale" -gt 0 ] || [ "$unknown" -gt 0 ]; then
    status="warn $stale of $total documents older than $days days"
    [ "$unknown" -gt 0 ] && status="$status, $unknown without a date"
else
    status="ok $total documents, none older than $days days"
fi
say "report: $out/$run_id.txt"
printf 'STATUS: %s\n' "$status" >> "$tmp"
cp "$tmp" "$out/.latest.$$" && mv "$out/.latest.$$" "$out/latest.txt" && mv "$tmp" "$out/$run_id.txt" \
    || die "cannot write the report in $out"
printf 'STATUS: %s\n' "$status"
