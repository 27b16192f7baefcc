#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv (no editable install, no source tree on the path) and run the
# installed `deepvis` from a folder outside the source tree: `layers --json` and `predict` on a photo.
#
# Fast on CI: torch & co. are not downloaded again; the fresh venv sees .venv's site-packages through a .pth
# line (a path added that way does not run .venv's own .pth files, so its editable hook stays off), and the wheel
# is installed with --no-deps. scikit-image is blocked, to prove the app runs without it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/deepvis-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "== building the wheel"
# .venv's own setuptools when it is new enough (fast, offline); else pip's isolated build (fetches setuptools).
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$ROOT" >/dev/null 2>&1 ||
  "$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$ROOT" >/dev/null
WHEEL="$(ls "$WORK"/dist/deepvis-*.whl)"
"$PY" - "$WHEEL" <<'PYEOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["deepvis_app/models/efficientnet_lite0.toml", "deepvis_app/assets/icon.png", "deepvis_app/assets/help.txt",
        "deepvis_app/assets/demo_chelsea.jpg", "deepvis_app/cli.py"]
missing = [n for n in need if n not in names]
if missing:
    sys.exit(f"wheel lacks {missing}")
meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
requires = [l for l in zipfile.ZipFile(sys.argv[1]).read(meta).decode().splitlines() if l.startswith("Requires-Dist")]
runtime = [r for r in requires if "extra ==" not in r]
if any("scikit-image" in r for r in runtime):
    sys.exit("scikit-image is a runtime dependency again")
print(f"wheel ok: {len(names)} files, {len(runtime)} runtime requirements")
PYEOF

echo "== installing it into a fresh venv"
"$PY" -m venv --without-pip "$WORK/venv"
SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
"$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))' > "$SITE/zz_deepvis_deps.pth"
"$PY" -m pip --python "$WORK/venv/bin/python" install -q --no-deps --no-index "$WHEEL"
mkdir -p "$WORK/block/skimage" "$WORK/elsewhere/my photos"
echo 'raise ImportError("scikit-image is only a dev dependency")' > "$WORK/block/skimage/__init__.py"
cp "$SITE/deepvis_app/assets/demo_chelsea.jpg" "$WORK/elsewhere/my photos/chat été.jpg"

echo "== running the installed deepvis from $WORK/elsewhere"
cd "$WORK/elsewhere"
export PYTHONPATH="$WORK/block" DEEPVIS_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
unset DEEPVIS_MODELS
"$WORK/venv/bin/python" - "$SITE" <<'PYEOF'
import sys
import deepvis_app
assert deepvis_app.__file__.startswith(sys.argv[1]), f"imported from {deepvis_app.__file__}, not the wheel"
print("deepvis_app from", deepvis_app.__file__)
PYEOF
"$WORK/venv/bin/deepvis" layers --json --device cpu > layers.json
"$WORK/venv/bin/python" -c 'import json; rows = json.load(open("layers.json")); assert len(rows) > 20, rows; print(f"layers --json: {len(rows)} layers")'
"$WORK/venv/bin/deepvis" predict --device cpu --json "my photos/chat été.jpg" > predict.json
"$WORK/venv/bin/python" - <<'PYEOF'
import json
top = json.load(open("predict.json"))[0]["predictions"][0]
assert "cat" in top["label"].lower(), top
print(f"predict: {top['label']} ({top['prob']:.2f})")
PYEOF
"$WORK/venv/bin/python" -m deepvis_app --help > /dev/null
echo "wheel check passed"
