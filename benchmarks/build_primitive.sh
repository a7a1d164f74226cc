#!/usr/bin/env bash
# Build fogleman/primitive offline against Debian's Go packages, seeded and scoring, for
# benchmarks/pictures.py. primitive's code is never committed: it is exported from its source into
# an ignored build folder, patched there, and built there.
#
#   benchmarks/build_primitive.sh [SOURCE]      # -> benchmarks/.primitive/bin/primitive
#
# SOURCE (or $PRIMITIVE_SRC): a bare git dir (the `fetch` tool's github:fogleman/primitive gives
# /work/.mirror/fogleman+primitive/repo, the default), a work tree, or a plain folder.
# $PRIMITIVE_BUILD: the build folder (default benchmarks/.primitive, git-ignored).
# Needs (Debian, as root): apt-get install golang-go golang-github-fogleman-gg-dev
#   golang-github-golang-freetype-dev golang-github-nfnt-resize-dev golang-golang-x-image-dev
#   (PRIMITIVE_APT=1 runs that install when `go` is missing.)
#
# What the patch adds (all off unless the environment asks for it; flags and output unchanged):
#   PRIMITIVE_SEED=N           seeds math/rand's global source with N and worker i's own source
#                              with N + 1000003*(i+1) (upstream seeds both from the clock), so a
#                              run is reproducible for the same input, flags and -j (-j splits the
#                              16 hill-climbs per shape among the workers; the best state is taken
#                              in the order workers finish, which only matters on an exact tie).
#   PRIMITIVE_SCORE_FILE=PATH  at the end writes JSON: model.Score (primitive's running RMS over
#                              RGBA/255), the same recomputed from scratch on its internal raster,
#                              the raster's size, the shape count and the seconds spent adding shapes.
#   PRIMITIVE_RASTER_PNG=PATH  at the end saves that internal raster (model.Current) as PNG.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${1:-${PRIMITIVE_SRC:-/work/.mirror/fogleman+primitive/repo}}"
build="${PRIMITIVE_BUILD:-$here/.primitive}"

if ! command -v go >/dev/null; then
    if [ "${PRIMITIVE_APT:-0}" = 1 ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends golang-go \
            golang-github-fogleman-gg-dev golang-github-golang-freetype-dev \
            golang-github-nfnt-resize-dev golang-golang-x-image-dev
    else
        echo "build_primitive.sh: no 'go'; install Debian's golang-go and the four libraries" \
             "(see this script's header) or rerun with PRIMITIVE_APT=1" >&2
        exit 2
    fi
fi
for lib in github.com/fogleman/gg github.com/golang/freetype github.com/nfnt/resize golang.org/x/image; do
    [ -d "/usr/share/gocode/src/$lib" ] || { echo "build_primitive.sh: missing /usr/share/gocode/src/$lib (Debian golang-*-dev package)" >&2; exit 2; }
done

# Export the source into a fresh GOPATH tree.
pkg="$build/gopath/src/github.com/fogleman/primitive"
rm -rf "$build/gopath" && mkdir -p "$pkg" "$build/bin"
if git --git-dir="$src" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    git --git-dir="$src" archive HEAD | tar -x -C "$pkg"
    rev="$(git --git-dir="$src" rev-parse HEAD)"
elif git -C "$src" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    git -C "$src" archive HEAD | tar -x -C "$pkg"
    rev="$(git -C "$src" rev-parse HEAD)"
else
    [ -f "$src/main.go" ] || { echo "build_primitive.sh: $src has no primitive source" >&2; exit 2; }
    cp -r "$src/." "$pkg/"
    rev="folder $src"
fi

# Patch the copy. Each replacement is checked, so a changed upstream fails loudly here.
patch_line() {  # file, exact old text, new text
    local file="$pkg/$1"
    grep -qF -- "$2" "$file" || { echo "build_primitive.sh: '$2' not found in $1: upstream changed" >&2; exit 3; }
    OLD="$2" NEW="$3" perl -0pi -e 's/\Q$ENV{OLD}\E/$ENV{NEW}/' "$file"
}
patch_line main.go 'rand.Seed(time.Now().UTC().UnixNano())' 'rand.Seed(primitive.MainSeed())'
patch_line primitive/worker.go 'rand.New(rand.NewSource(time.Now().UnixNano()))' 'rand.New(rand.NewSource(nextWorkerSeed()))'
# worker.go no longer uses "time" once its clock seed is gone.
perl -0pi -e 's/\n\t"time"\n/\n/' "$pkg/primitive/worker.go"
# Report at the end of main (after the last shape and the outputs are written).
python3 - "$pkg/main.go" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
end = text.rstrip()
assert end.endswith("}"), "main.go does not end with main's closing brace"
text = end[:-1] + "\tprimitive.Report(model, time.Since(start).Seconds())\n}\n"
open(path, "w").write(text)
EOF
cat > "$pkg/primitive/benchpatch.go" <<'EOF'
package primitive

// Added by shapegrad's benchmarks/build_primitive.sh (not upstream): seeding and scoring.

import (
	"encoding/json"
	"os"
	"strconv"
	"time"
)

var workerIndex int64

func seedFromEnv() (int64, bool) {
	s := os.Getenv("PRIMITIVE_SEED")
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		panic("PRIMITIVE_SEED must be an integer: " + s)
	}
	return n, true
}

// MainSeed seeds math/rand's global source: PRIMITIVE_SEED, else the clock (upstream).
func MainSeed() int64 {
	if n, ok := seedFromEnv(); ok {
		return n
	}
	return time.Now().UTC().UnixNano()
}

// nextWorkerSeed: workers are made one after another in NewModel, so worker i gets
// PRIMITIVE_SEED + 1000003*(i+1); else the clock (upstream).
func nextWorkerSeed() int64 {
	workerIndex++
	if n, ok := seedFromEnv(); ok {
		return n + 1000003*workerIndex
	}
	return time.Now().UnixNano()
}

// Report writes PRIMITIVE_SCORE_FILE (JSON) and PRIMITIVE_RASTER_PNG where they are set.
func Report(model *Model, seconds float64) {
	if path := os.Getenv("PRIMITIVE_SCORE_FILE"); path != "" {
		size := model.Current.Bounds().Size()
		out, _ := json.Marshal(map[string]interface{}{
			"score":      model.Score,
			"score_full": differenceFull(model.Target, model.Current),
			"width":      size.X,
			"height":     size.Y,
			"shapes":     len(model.Shapes),
			"seconds":    seconds,
		})
		if err := os.WriteFile(path, append(out, '\n'), 0644); err != nil {
			panic(err)
		}
	}
	if path := os.Getenv("PRIMITIVE_RASTER_PNG"); path != "" {
		if err := SavePNG(path, model.Current); err != nil {
			panic(err)
		}
	}
}
EOF

# Build offline in GOPATH mode: primitive has no go.mod; Debian's sources are a GOPATH tree.
export GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOFLAGS= CGO_ENABLED=0
export GOPATH="$build/gopath:/usr/share/gocode" GOCACHE="$build/gocache"
(cd "$pkg" && go build -o "$build/bin/primitive" .)
echo "$rev" > "$build/bin/primitive.source"
echo "built $build/bin/primitive from $rev ($(go version | cut -d' ' -f3))"
