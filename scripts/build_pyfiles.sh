#!/usr/bin/env bash
# Build dist/mfspark.zip, the mfspark package for `spark-submit --py-files` (sources and the conf/ profiles, no caches).
# Usage: scripts/build_pyfiles.sh [OUTPUT_ZIP]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist/mfspark.zip}
mkdir -p "$(dirname "$out")"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" - "$out" <<'PYEOF'
import sys
import zipfile
from pathlib import Path

out = Path(sys.argv[1])
tmp = out.with_name(out.name + ".tmp")
sources = {path.as_posix(): path for path in sorted(Path("mfspark").rglob("*.py"))}
# The profiles, where importlib.resources looks for them (mfspark/runtime/profiles links to conf/).
profiles = {f"mfspark/runtime/profiles/{path.name}": path for path in sorted(Path("conf").glob("*.toml"))}
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as bundle:
    for name, path in {**sources, **profiles}.items():
        # Fixed timestamps: the same sources give the same zip.
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        bundle.writestr(info, path.read_bytes())
tmp.replace(out)
print(f"{out}: {len(sources)} modules, {len(profiles)} profiles")
PYEOF
