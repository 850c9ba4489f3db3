#!/usr/bin/env bash
# Bring in a Karpenter release: read what karpctl depends on out of the real module zip
# (github.com/aws/karpenter-provider-aws@vVERSION, via scripts/upstream.sh, from the Go module
# proxy) into docs/karpenter/VERSION.facts, and show what changed against the previous
# imported release, so adding a version is a reviewed diff.
#
#   scripts/karpenter-import.sh VERSION [--against OLD]   write the facts, print the diff
#   scripts/karpenter-import.sh --check VERSION           exit 1 if the committed facts differ
#
# What a facts file holds (one fact per line, sorted, no prose from upstream):
#   kubernetes      the supported Kubernetes range (pkg/providers/version: Min/MaxK8sVersion)
#   aws-call        every AWS operation the controller's clients can make (pkg/aws/sdk.go),
#                   as an IAM action: what the stack's controller policy must allow
#   feature-gate / aws-feature-gate   the chart's settings.featureGates / awsFeatureGates keys
#   chart-value     every key of charts/karpenter/values.yaml with its default
#   chart-env       every env var the chart's Deployment sets
#   crd             every schema fact of pkg/apis/crds (types, enums, defaults, required,
#                   patterns, bounds, CEL rules), by CRD, version and field path
#
# Then: tests/it/versions.rs checks src/model/version.rs (the one place karpctl keeps per-version
# facts) and the rendered policies against every facts file; a new release fails there until
# version.rs knows its gates, Kubernetes range and calls. See README "Supported Karpenter versions".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$REPO/docs/karpenter"

die() { printf '[karpenter-import] error: %s\n' "$*" >&2; exit 1; }

check=0 version="" against=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --check) check=1 ;;
    --against) against="${2:?--against needs a version}"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) die "unknown flag $1" ;;
    *) [[ -z "$version" ]] || die "one version at a time"; version="${1#v}" ;;
  esac
  shift
done
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "give a release version such as 1.15.0"

module="$("$REPO/scripts/upstream.sh" path karpenter "$version" module)"
[[ -f "$module/pkg/aws/sdk.go" ]] || die "$module has no pkg/aws/sdk.go: is $version a karpenter-provider-aws release?"

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
python3 - "$module" "$version" >"$tmp" <<'PY'
import re, sys, pathlib, yaml

module, version = pathlib.Path(sys.argv[1]), sys.argv[2]
facts = []

src = (module / "pkg/providers/version/version.go").read_text()
lo = re.search(r'MinK8sVersion\s*=\s*"1\.(\d+)"', src).group(1)
hi = re.search(r'MaxK8sVersion\s*=\s*"1\.(\d+)"', src).group(1)
facts.append(f"kubernetes 1.{lo}-1.{hi}")

# Interface name in pkg/aws/sdk.go -> IAM service prefix.
prefix = {"EC2API": "ec2", "IAMAPI": "iam", "EKSAPI": "eks", "PricingAPI": "pricing", "SSMAPI": "ssm",
          "SQSAPI": "sqs", "ARCZonalShiftAPI": "arc-zonal-shift", "TimestreamWriteAPI": "timestream"}
current = None
for line in (module / "pkg/aws/sdk.go").read_text().splitlines():
    m = re.match(r"type (\w+) interface", line)
    if m:
        current = m.group(1)
        if current not in prefix:
            sys.exit(f"pkg/aws/sdk.go: unknown client interface {current}: add its IAM prefix to scripts/karpenter-import.sh")
        continue
    m = re.match(r"\s+([A-Z]\w+)\(", line)
    if current and m:
        facts.append(f"aws-call {prefix[current]}:{m.group(1)}")
    if line.startswith("}"):
        current = None

values = yaml.safe_load((module / "charts/karpenter/values.yaml").read_text())
def flat(v, path):
    if isinstance(v, dict) and v:
        for k, x in v.items():
            yield from flat(x, f"{path}.{k}" if path else str(k))
    else:
        yield path, v
for path, v in flat(values, ""):
    if path.startswith("image.") or path.endswith(".digest") or path.endswith(".tag"):
        continue  # image coordinates change every release and mean nothing to karpctl
    facts.append(f"chart-value {path} = {v!r}")
for gate in (values.get("settings", {}).get("featureGates") or {}):
    facts.append(f"feature-gate {gate}")
for gate in (values.get("settings", {}).get("awsFeatureGates") or {}):
    facts.append(f"aws-feature-gate {gate}")

deploy = (module / "charts/karpenter/templates/deployment.yaml").read_text()
for name in sorted(set(re.findall(r"-\s+name:\s+([A-Z][A-Z0-9_]+)\s*$", deploy, re.M))):
    facts.append(f"chart-env {name}")

KEEP = ("type", "enum", "default", "required", "pattern", "minimum", "maximum", "minLength", "maxLength",
        "minItems", "maxItems", "minProperties", "maxProperties", "format", "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string")
def schema(node, path, out):
    if not isinstance(node, dict):
        return
    for k in KEEP:
        if k in node:
            v = sorted(node[k], key=str) if k in ("enum", "required") else node[k]
            out.append(f"{path} {k}={v!r}")
    for rule in node.get("x-kubernetes-validations", []) or []:
        out.append(f"{path} rule={rule.get('rule')!r}")
    for name, sub in (node.get("properties") or {}).items():
        schema(sub, f"{path}.{name}", out)
    if isinstance(node.get("items"), dict):
        schema(node["items"], f"{path}[]", out)
    if isinstance(node.get("additionalProperties"), dict):
        schema(node["additionalProperties"], f"{path}{{}}", out)
for f in sorted((module / "pkg/apis/crds").glob("*.yaml")):
    crd = yaml.safe_load(f.read_text())
    kind = f"{crd['spec']['group']}/{crd['spec']['names']['kind']}"
    for v in crd["spec"]["versions"]:
        out = []
        schema(v["schema"]["openAPIV3Schema"], "", out)
        facts.extend(f"crd {kind} {v['name']}{line}" for line in out)

print(f"# Karpenter {version} as karpctl depends on it: scripts/karpenter-import.sh {version}")
print(f"# (derived from github.com/aws/karpenter-provider-aws@v{version}; regenerate, do not edit)")
for line in sorted(set(facts)):
    print(line)
PY

target="$OUT_DIR/$version.facts"
if [[ "$check" == 1 ]]; then
  [[ -f "$target" ]] || die "no $target (run scripts/karpenter-import.sh $version)"
  if ! diff -u "$target" "$tmp"; then
    die "$target is not what the module says (regenerate: scripts/karpenter-import.sh $version)"
  fi
  echo "[karpenter-import] $target matches the v$version module"
  exit 0
fi

mkdir -p "$OUT_DIR"
cp "$tmp" "$target"
echo "[karpenter-import] wrote $target ($(grep -vc '^#' "$target") facts)" >&2

# The previous imported release: --against, else the newest facts file older than VERSION.
if [[ -z "$against" ]]; then
  against="$(find "$OUT_DIR" -name '*.facts' -printf '%f\n' | sed 's/\.facts$//' \
    | { cat; echo "$version"; } | sort -V | uniq | grep -B1 -x -F "$version" | head -1)"
  [[ "$against" != "$version" ]] || against=""
fi
if [[ -z "$against" ]]; then
  echo "[karpenter-import] no earlier release imported: nothing to compare" >&2
  exit 0
fi
[[ -f "$OUT_DIR/$against.facts" ]] || die "no $OUT_DIR/$against.facts (import it first)"
echo "[karpenter-import] what changed from $against to $version (- gone, + new):" >&2
diff -u --label "$against" --label "$version" <(grep -v '^#' "$OUT_DIR/$against.facts") <(grep -v '^#' "$target") | grep '^[-+][^-+]' || true
cat >&2 <<EOF

[karpenter-import] next:
  - src/model/version.rs: Kubernetes range, new feature gates, a Since entry for each change karpctl renders or validates
  - src/render/cfn.rs: any new aws-call the controller policy must allow (tests/it/versions.rs lists them)
  - tests/testbed/karpenter/$version/go.mod: pin the kwok build (see tests/testbed/README.md) to run the real controller
  - cargo test --test it versions:: ; then the end-to-end tests with karpenter.version: $version
EOF
