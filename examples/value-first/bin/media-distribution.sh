#!/bin/sh
# media-distribution: last stage of the media pipeline. An item is a Markdown
# file with front matter; items move pre -> post -> ready -> published. This
# stage publishes every item of ready/ whose `publish_on:` date has come (on or
# before the reference date): it moves it to published/, stamps
# `published_at:` and `channels:` into its front matter, and appends a line to
# state/media/distribution.log. The channels come from the worker's env
# DISTRIBUTION_CHANNELS (default "youtube"); publishing here is a local record,
# nothing is uploaded.
#
# The pipeline works on copies under state/media/ so that data/ stays read-only
# and the example can be re-run: items of data/media/<stage>/ that the copy does
# not know yet are copied in first. Delete state/media/ to start over.
#
# Usage: media-distribution.sh [--dry-run] [--as-of YYYY-MM-DD]
#   --dry-run     report only, move nothing; LOOM_PARAM_DRY_RUN=1|true overrides
#   --as-of DATE  reference date; LOOM_PARAM_AS_OF overrides it; default: the
#                 local date of LOOM_SCHEDULED_AT, else today
# Exit: 0 (STATUS ok|warn), 1 internal error, 75 data/media/ missing
#       (temporary: the media share is not mounted yet), 78 invalid argument.
set -u

WORKER=media-distribution
FROM=ready TO=published
die() { echo "$WORKER: $*" >&2; exit 1; }
config_error() { echo "$WORKER: $*" >&2; exit 78; }
tempfail() { echo "$WORKER: $*" >&2; exit 75; }

ROOT=$(CDPATH='' cd -P -- "$(dirname -- "$0")/.." && pwd) || die "cannot locate the example directory"
DATA=$ROOT/data
STATE=${STATE_DIR:-$ROOT/state}
MEDIA=$STATE/media
STAGES="pre post ready published"

dry_run=false
as_of=
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=true; shift ;;
        --as-of) [ $# -ge 2 ] || config_error "--as-of needs a value"; as_of=$2; shift 2 ;;
        --as-of=*) as_of=${1#--as-of=}; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) config_error "unknown argument: $1" ;;
    esac
done
case ${LOOM_PARAM_DRY_RUN:-} in
    '') ;;
    1|true|yes) dry_run=true ;;
    0|false|no) dry_run=false ;;
    *) config_error "dry_run must be true or false, got '$LOOM_PARAM_DRY_RUN'" ;;
esac
as_of=${LOOM_PARAM_AS_OF:-$as_of}
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
channels=${DISTRIBUTION_CHANNELS:-youtube}

[ -d "$DATA/media" ] || tempfail "input directory $DATA/media is missing (will retry)"

run_id=$(printf '%s' "${LOOM_RUN_ID:-manual}" | tr -c 'A-Za-z0-9._-' '_')
out=$STATE/$WORKER
mkdir -p "$out" || die "cannot create $out"
tmp=$out/.$run_id.$$
trap 'rm -f "$tmp" "$tmp.item"' EXIT
: > "$tmp" || die "cannot write $tmp"
say() { printf '%s\n' "$*"; printf '%s\n' "$*" >> "$tmp"; }

# field FILE KEY: value of KEY in the leading --- front-matter block.
field() {
    awk -v key="$2" 'NR == 1 && $0 != "---" { exit }
        NR > 1 && $0 == "---" { exit }
        NR > 1 && index($0, key ":") == 1 {
            v = substr($0, length(key) + 2); gsub(/^[ \t]+|[ \t\r]+$/, "", v); gsub(/^"|"$/, "", v)
            print v; exit }' "$1"
}

# Copy items of data/media/<stage>/ that state/media/ does not have in any stage.
sync_media() {
    for s in $STAGES; do mkdir -p "$MEDIA/$s" || die "cannot create $MEDIA/$s"; done
    for s in $STAGES; do
        for src in "$DATA/media/$s"/*.md; do
            [ -f "$src" ] || continue
            name=${src##*/}
            known=false
            for t in $STAGES; do [ -e "$MEDIA/$t/$name" ] && known=true; done
            $known && continue
            cp "$src" "$MEDIA/$s/.$name.$$" && mv "$MEDIA/$s/.$name.$$" "$MEDIA/$s/$name" \
                || die "cannot copy $name into $MEDIA/$s"
            say "  picked up $s/$name"
        done
    done
}

say "run $run_id: $FROM -> $TO as of $as_of on $channels$($dry_run && echo ' (dry run)')"
sync_media
moved=0 waiting=0 problems=0
for f in "$MEDIA/$FROM"/*.md; do
    [ -f "$f" ] || continue
    name=${f##*/}
    title=$(field "$f" title)
    publish_on=$(field "$f" publish_on)
    if [ -z "$title" ]; then
        problems=$((problems + 1)); say "  PROBLEM $name: no title"; continue
    fi
    case $publish_on in
        [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
        *) problems=$((problems + 1)); say "  PROBLEM $name: no valid publish_on date"; continue ;;
    esac
    # YYYY-MM-DD compares as a number once the dashes are gone.
    if [ "$(echo "$publish_on" | tr -d -)" -le "$(echo "$as_of" | tr -d -)" ]; then
        if ! $dry_run; then
            awk -v at="$as_of" -v ch="$channels" '
                NR > 1 && $0 == "---" && !done { print "published_at: " at; print "channels: " ch; done = 1 }
                { print }' "$f" > "$tmp.item" || die "cannot stamp $name"
            mv "$tmp.item" "$MEDIA/$TO/$name" && rm -f "$f" || die "cannot move $name to $TO/"
            printf '%s\t%s\t%s\t%s\n' "$as_of" "$run_id" "$name" "$channels" >> "$MEDIA/distribution.log" \
                || die "cannot append to $MEDIA/distribution.log"
        fi
        moved=$((moved + 1)); say "  -> $TO $name ($title, due $publish_on)"
    else
        waiting=$((waiting + 1))
        say "  waiting $name (due $publish_on)"
    fi
done

verb=published; $dry_run && verb="would publish"
detail="$verb $moved, $waiting not due yet"
if [ "$problems" -gt 0 ]; then status="warn $detail, $problems with problems"; else status="ok $detail"; fi
say "report: $out/$run_id.txt"
printf 'STATUS: %s\n' "$status" >> "$tmp"
cp "$tmp" "$out/.latest.$$" && mv "$out/.latest.$$" "$out/latest.txt" && mv "$tmp" "$out/$run_id.txt" \
    || die "cannot write the report in $out"
printf 'STATUS: %s\n' "$status"
