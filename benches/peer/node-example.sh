#!/usr/bin/env bash
# Prepares the official ElevenLabs Twilio Node example (issue 16 point 6) in a scratch directory
# outside the repository, for `cargo bench --bench load -- --bridges …,node --node-dir DIR`
# (BENCHMARKS.md, "Side by side with the Node example and the floor"). The repository never
# holds the example's code: this script fetches it at a fixed commit each time.
#
#   benches/peer/node-example.sh [DIR] [SOURCE]
#
# DIR     scratch directory (default /tmp/ignis-peer-node); must lie outside the repository.
# SOURCE  a local clone or bare mirror of elevenlabs/elevenlabs-examples (default
#         /work/.mirror/elevenlabs+elevenlabs-examples/repo), or an https:// base of raw files
#         such as https://raw.githubusercontent.com/elevenlabs/elevenlabs-examples
#
# The example was deleted upstream in 0e577ce904da6a378c7be84678f2f3cd03a93640; its last
# version is the parent below. The one change: its hard-coded API base
# (`https://api.elevenlabs.io`, the signed-URL request) becomes `$ELEVENLABS_API_BASE`, read
# at run time, so the bench points it at its stand-in agent on a fresh port each run.
set -euo pipefail

DIR=${1:-/tmp/ignis-peer-node}
SOURCE=${2:-/work/.mirror/elevenlabs+elevenlabs-examples/repo}
COMMIT=b0993e98859b94ff7552c122e9491b0dea2adcad
EXAMPLE=examples/conversational-ai/twilio/javascript
FILES=(index.js package.json package-lock.json)

repo=$(cd "$(dirname "$0")/../.." && pwd -P)
dir=$(realpath -m "$DIR")
case "$dir/" in
"$repo"/*)
    echo "refusing: $dir is inside the repository ($repo); never commit the example's code" >&2
    exit 2
    ;;
esac
mkdir -p "$dir"

for f in "${FILES[@]}"; do
    case "$SOURCE" in
    http://* | https://*) curl -fsSL "$SOURCE/$COMMIT/$EXAMPLE/$f" -o "$dir/$f" ;;
    *) git -C "$SOURCE" show "$COMMIT:$EXAMPLE/$f" >"$dir/$f" ;;
    esac
done

# Exactly one API base in the example; anything else means a different file.
n=$(grep -c 'https://api\.elevenlabs\.io' "$dir/index.js" || true)
if [ "$n" != 1 ]; then
    echo "expected one https://api.elevenlabs.io in index.js, found $n" >&2
    exit 1
fi
sed -i 's#https://api\.elevenlabs\.io#${process.env.ELEVENLABS_API_BASE}#' "$dir/index.js"

(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
echo "ready: $dir (node $(node --version)); the bench runs it as"
echo "  ELEVENLABS_API_BASE=http://127.0.0.1:P ELEVENLABS_AGENT_ID=… ELEVENLABS_API_KEY=… PORT=… node index.js"
