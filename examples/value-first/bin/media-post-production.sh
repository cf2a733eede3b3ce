#!/bin/sh
# media-post-production: second stage of the media pipeline. An item is a
# Markdown file with front matter; items move pre -> post -> ready -> published.
# This stage moves every item of post/ whose `edit:` is `final` and whose
# `captions:` are `done` on to ready/, provided it has a valid `publish_on:`
# date (otherwise it stays and is reported as a problem).
#
# The pipeline works on copies under state/media/ so that data/ stays read-only
# and the example can be re-run: items of data/media/<stage>/ that the copy does
# not know yet are copied in first. Delete state/media/ to start over.
#
# Usage: media-post-production.sh [--dry-run]
#   --dry-run  report only, move nothing; LOOM_PARAM_DRY_RUN=1|true overrides
# Exit: 0 (STATUS ok|warn), 1 internal error, 75 data/media/ missing
#       (temporary: the media share is not mounted yet), 78 invalid argument.
set -u

WORKER=media-post-production
FROM=post TO=ready
die() { echo "$WORKER: $*" >&2; exit 1; }
config_error() { echo "$WORKER: $*" >&2; exit 78; }
tempfail() { echo "$WORKER: $*" >&2; exit 75; }

ROOT=$(CDPATH='' cd -P -- "$(dirname -- "$0")/.." && pwd) || die "cannot locate the example directory"
DATA=$ROOT/data
STATE=${STATE_DIR:-$ROOT/state}
MEDIA=$STATE/media
STAGES="pre post ready published"

dry_run=false
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=true; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) config_error "unknown argument: $1" ;;
    esac
done
case ${LOOM_PARAM_DRY_RUN:-} in
    '') ;;
    1|true|yes) dry_run=true ;;
    0|false|no) dry_run=false ;;
    *) config_error "dry_run must be true or false, got '$LOOM_PARAM_DRY_RUN'" ;;
esac

[ -d "$DATA/media" ] || tempfail "input directory $DATA/media is missing (will retry)"

run_id=$(printf '%s' "${LOOM_RUN_ID:-manual}" | tr -c 'A-Za-z0-9._-' '_')
out=$STATE/$WORKER
mkdir -p "$out" || die "cannot create $out"
tmp=$out/.$run_id.$$
trap 'rm -f "$tmp"' EXIT
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

say "run $run_id: $FROM -> $TO$($dry_run && echo ' (dry run)')"
sync_media
moved=0 waiting=0 problems=0
for f in "$MEDIA/$FROM"/*.md; do
    [ -f "$f" ] || continue
    name=${f##*/}
    title=$(field "$f" title)
    edit=$(field "$f" edit)
    captions=$(field "$f" captions)
    publish_on=$(field "$f" publish_on)
    if [ -z "$title" ]; then
        problems=$((problems + 1)); say "  PROBLEM $name: no title"; continue
    fi
    if [ "$edit" = final ] && [ "$captions" = done ]; then
        case $publish_on in
            [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
            *) problems=$((problems + 1)); say "  PROBLEM $name: finished but no valid publish_on date"; continue ;;
        esac
        if ! $dry_run; then
            mv "$f" "$MEDIA/$TO/$name" || die "cannot move $name to $TO/"
        fi
        moved=$((moved + 1)); say "  -> $TO  $name (publish on $publish_on)"
    else
        waiting=$((waiting + 1))
        say "  waiting $name (edit=${edit:-missing}, captions=${captions:-missing})"
    fi
done

verb=moved; $dry_run && verb="would move"
detail="$verb $moved to $TO, $waiting waiting"
if [ "$problems" -gt 0 ]; then status="warn $detail, $problems with problems"; else status="ok $detail"; fi
say "report: $out/$run_id.txt"
printf 'STATUS: %s\n' "$status" >> "$tmp"
cp "$tmp" "$out/.latest.$$" && mv "$out/.latest.$$" "$out/latest.txt" && mv "$tmp" "$out/$run_id.txt" \
    || die "cannot write the report in $out"
printf 'STATUS: %s\n' "$status"
