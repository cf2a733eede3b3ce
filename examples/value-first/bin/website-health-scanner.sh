#!/bin/sh
# website-health-scanner: checks every link listed in data/sites.txt (one per
# line, `#` starts a comment). Local paths (relative to data/, absolute, or
# file:///absolute) must exist and be non-empty (a directory needs an
# index.html). http(s) URLs are never fetched (no network access): they are
# counted as skipped.
#
# Usage: website-health-scanner.sh [--list FILE]
#   --list FILE  link list, relative to data/ (default sites.txt);
#                LOOM_PARAM_LIST overrides it
# Exit: 0 (STATUS ok|warn), 1 internal error, 75 the link list is missing
#       (temporary: the site export has not landed yet), 78 invalid argument.
set -u

WORKER=website-health-scanner
die() { echo "$WORKER: $*" >&2; exit 1; }
config_error() { echo "$WORKER: $*" >&2; exit 78; }
tempfail() { echo "$WORKER: $*" >&2; exit 75; }

ROOT=$(CDPATH='' cd -P -- "$(dirname -- "$0")/.." && pwd) || die "cannot locate the example directory"
DATA=$ROOT/data
STATE=${STATE_DIR:-$ROOT/state}

list=sites.txt
while [ $# -gt 0 ]; do
    case $1 in
        --list) [ $# -ge 2 ] || config_error "--list needs a value"; list=$2; shift 2 ;;
        --list=*) list=${1#--list=}; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) config_error "unknown argument: $1" ;;
    esac
done
list=${LOOM_PARAM_LIST:-$list}
case $list in
    ''|/*|../*|*/../*|*/..|..) config_error "list must be a path inside data/, got '$list'" ;;
esac
[ -f "$DATA/$list" ] || tempfail "link list $DATA/$list is missing (will retry)"

run_id=$(printf '%s' "${LOOM_RUN_ID:-manual}" | tr -c 'A-Za-z0-9._-' '_')
out=$STATE/$WORKER
mkdir -p "$out" || die "cannot create $out"
tmp=$out/.$run_id.$$
trap 'rm -f "$tmp" "$tmp.links"' EXIT
: > "$tmp" || die "cannot write $tmp"
say() { printf '%s\n' "$*"; printf '%s\n' "$*" >> "$tmp"; }

say "run $run_id: checking links in data/$list"
ok=0 missing=0 empty=0 skipped=0
# Strip comments (whole-line or after whitespace), blank lines and spaces.
sed -e 's/^#.*//' -e 's/[[:space:]]#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e 's/\r$//' "$DATA/$list" \
    > "$tmp.links" || die "cannot read $DATA/$list"
while IFS= read -r link; do
    [ -n "$link" ] || continue
    case $link in
        http://*|https://*) skipped=$((skipped + 1)); say "  skip    $link (remote, not fetched)"; continue ;;
        file://*) path=${link#file://} ;;
        /*) path=$link ;;
        *) path=$DATA/$link ;;
    esac
    [ -d "$path" ] && path=$path/index.html
    if [ ! -e "$path" ]; then
        missing=$((missing + 1)); say "  MISSING $link"
    elif [ ! -s "$path" ]; then
        empty=$((empty + 1)); say "  EMPTY   $link"
    else
        ok=$((ok + 1)); say "  ok      $link"
    fi
done < "$tmp.links"

checked=$((ok + missing + empty))
if [ $((missing + empty)) -gt 0 ]; then
    status="warn $missing missing, $empty empty of $checked local links ($skipped remote skipped)"
else
    status="ok $checked local links present ($skipped remote skipped)"
fi
say "report: $out/$run_id.txt"
printf 'STATUS: %s\n' "$status" >> "$tmp"
cp "$tmp" "$out/.latest.$$" && mv "$out/.latest.$$" "$out/latest.txt" && mv "$tmp" "$out/$run_id.txt" \
    || die "cannot write the report in $out"
printf 'STATUS: %s\n' "$status"
