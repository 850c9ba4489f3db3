#!/usr/bin/env python3
"""Numbers for scripts/bench.sh: API-call diffs, render configs, and the report.

  stats.py kube-snap                        < metrics text   > snapshot.json
  stats.py kube-diff BEFORE AFTER PROXY_BEFORE PROXY_AFTER   > counts.json
  stats.py aws-diff EMULATOR PROXY_BEFORE PROXY_AFTER        > counts.json
  stats.py gen-config N OUT                 a config with N node pools over 4 classes
  stats.py ami-config OUT                   a config whose classes need 12 different AMIs
  stats.py report RESULTS_DIR               the markdown results section (stdout)
  stats.py splice BENCHMARKS.md SECTION.md  replace the text between the markers

Everything the report needs is a file in RESULTS_DIR that bench.sh wrote (see
`report`); this script never talks to the sandbox.
"""

import json
import math
import os
import re
import statistics
import sys
from collections import Counter, defaultdict

BEGIN = "<!-- bench:results:begin (scripts/bench.sh rewrites everything down to the end marker) -->"
END = "<!-- bench:results:end -->"

# Requests the API server makes to itself in reaction to a client's change (CRD
# status, the APIService it registers for a new group): counted apart.
SERVER_OWN = ("customresourcedefinitions/status", "apiregistration.k8s.io/apiservices")
MUTATING = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")
# Requests the API server makes to itself now and then, whatever runs (its OpenAPI v3
# aggregation, the Service IP/port repair loop): seen in idle windows, so they are not
# held against a command when runs are compared.
BACKGROUND = ("GET openapi/v3", "LIST services")


# ---------------------------------------------------------------- API counts

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def kube_snap(text):
    out = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_part, value = line.rsplit(" ", 1)
        labels = dict(LABEL.findall(labels_part))
        verb, group, res, sub = labels.get("verb", ""), labels.get("group", ""), labels.get("resource", ""), labels.get("subresource", "")
        if res == "leases":
            continue
        if res == "":
            key = f"{verb} {sub}"  # non-resource request: the path is in subresource
        else:
            key = f"{verb} {group + '/' if group else ''}{res}{'/' + sub if sub else ''}"
        if labels.get("dry_run"):
            key += " dryRun"
        out[key] += int(float(value))
    return dict(out)


def kube_diff(before, after, pb, pa):
    d = Counter()
    for k, v in after.items():
        d[k] += v - before.get(k, 0)
    for k, v in pa.items():  # what the simulator sent through the proxy
        d[k] -= v - pb.get(k, 0)
    # our own metric scrapes
    d.pop("GET /metrics", None)
    return {k: v for k, v in sorted(d.items()) if v != 0}


READ_PREFIXES = ("Describe", "Get", "List", "Head")  # the emulator's read-only rule


def aws_diff(emu, pb, pa):
    """The emulator's counts for a window minus what the simulator sent through its proxy."""
    counts = Counter(emu.get("counts", {}))
    sim = Counter(pa.get("counts", {}))
    sim.subtract(pb.get("counts", {}))
    for k, v in sim.items():
        counts[k] -= v
    counts = {k: v for k, v in sorted(counts.items()) if v != 0}
    mutating = sum(v for k, v in counts.items() if not k.split(":", 1)[-1].startswith(READ_PREFIXES))
    return {"counts": counts, "total": sum(counts.values()), "mutating": mutating,
            "read_only": sum(counts.values()) - mutating,
            "simulator_subtracted": {k: v for k, v in sorted(sim.items()) if v}}


def kube_summary(counts):
    s = {"reads": 0, "writes": 0, "dry_runs": 0, "server_own": 0, "other": 0, "total": 0, "negative": 0}
    for k, v in counts.items():
        if v < 0:
            s["negative"] += v
        verb = k.split(" ", 1)[0]
        if any(m in k for m in SERVER_OWN):
            s["server_own"] += v
            continue
        s["total"] += v
        if k.endswith(" dryRun"):
            s["dry_runs"] += v
        elif verb in MUTATING:
            s["writes"] += v
        elif verb in ("GET", "LIST", "WATCH"):
            s["reads"] += v
        else:
            s["other"] += v
    return s


# ---------------------------------------------------------------- configs

CLASSES = """nodeClasses:
  - name: general
    amiFamily: al2023
  - name: arm
    amiFamily: al2023
    architectures: [arm64]
  - name: gpu
    amiFamily: al2023
    variant: nvidia
  - name: bottle
    amiFamily: bottlerocket
"""


def header(name):
    return f"""apiVersion: karpctl.io/v1alpha1
cluster:
  name: {name}
  region: us-west-2
  kubernetesVersion: "1.31"
state:
  path: .karpctl/{name}.state.json
"""


def gen_config(n, out):
    classes = ["general", "arm", "gpu", "bottle"]
    lines = [header("bench-render"), CLASSES, "nodePools:"]
    for i in range(n):
        c = classes[i % 4]
        lines.append(f"""  - name: pool-{i:04d}
    nodeClass: {c}
    weight: {1 + i % 100}
    instances:
      categories: {{allowed: [c, m, r]}}
      generations: {{min: 3}}
    capacityTypes: [spot, on-demand]
    labels: {{team: t{i % 17}, tier: "{i % 3}"}}
    taints:
      - {{key: dedicated, value: pool-{i:04d}, effect: NoSchedule}}
    limits: {{cpu: "{100 + i}", memory: {400 + i}Gi}}
    disruption:
      consolidationPolicy: WhenEmptyOrUnderutilized
      consolidateAfter: 1m
      budgets:
        - {{nodes: "10%"}}""")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


def ami_config(out, cluster, state_path):
    """Classes needing 12 distinct AMIs (family, variant, architecture) that the sandbox's SSM has."""
    specs = [
        ("al2023", "standard", ["amd64", "arm64"]),
        ("al2023", "nvidia", ["amd64", "arm64"]),
        ("al2023", "neuron", ["amd64"]),
        ("bottlerocket", "standard", ["amd64", "arm64"]),
        ("bottlerocket", "nvidia", ["amd64", "arm64"]),
        ("al2", "standard", ["amd64", "arm64"]),
        ("al2", "nvidia", ["amd64"]),
    ]
    text = header(cluster).replace(f".karpctl/{cluster}.state.json", state_path) + "nodeClasses:\n"
    for fam, var, archs in specs:
        for a in archs:
            text += f"  - name: {fam}-{var}-{a}\n    amiFamily: {fam}\n    variant: {var}\n    architectures: [{a}]\n"
    with open(out, "w") as f:
        f.write(text)
    return sum(len(a) for _, _, a in specs)


# ---------------------------------------------------------------- report


def load_lines(path, conv=float):
    try:
        with open(path) as f:
            return [conv(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def load_rows(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def load_tsv(path):
    return {r[0]: (r[1] if len(r) > 1 else "") for r in load_rows(path)}


STEP_LINE = re.compile(r"^\S+Z (\S+): (created|updated|up to date|deleted|replaced|[a-z ]+) after ([0-9.]+)s$")


def tools(calls_file):
    out = defaultdict(lambda: [0, 0])
    for r in load_rows(calls_file):
        if len(r) < 2:
            continue
        words = r[1].split()
        tool = words[0]
        if tool == "aws" and len(words) > 1:
            tool = f"aws {words[1]}"
        out[tool][0] += 1
        out[tool][1] += int(r[0])
    return dict(sorted(out.items(), key=lambda kv: -kv[1][1]))


def breakdown(res):
    bd = {}
    if os.path.exists(os.path.join(res, "byhand.cold_up.1.calls")):
        bd["byhand_tools"] = tools(os.path.join(res, "byhand.cold_up.1.calls"))
    if os.path.exists(os.path.join(res, "byhand.rerun.1.calls")):
        bd["byhand_rerun_tools"] = tools(os.path.join(res, "byhand.rerun.1.calls"))
    steps = []
    try:
        with open(os.path.join(res, "karpctl.cold_up.1.err")) as f:
            for line in f:
                m = STEP_LINE.match(line.strip())
                if m:
                    steps.append((m.group(1), m.group(2), float(m.group(3))))
    except FileNotFoundError:
        pass
    if steps:
        bd["karpctl_steps"] = steps
    return bd


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def fmt_s(x):
    if x is None:
        return "—"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.2f} s"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.1f}×"


def med(xs):
    return statistics.median(xs) if xs else None


def times(res, label):
    return [x / 1e9 for x in load_lines(os.path.join(res, f"{label}.ns"))]


def runs_counts(res, label, kind):
    """Per-run count dicts for a label, in run order."""
    out, i = [], 1
    while True:
        d = load_json(os.path.join(res, f"{label}.{i}.{kind}.json"))
        if d is None:
            return out
        out.append(d)
        i += 1


def aws_ops(d):
    return dict(sorted((d or {}).get("counts", {}).items()))


def aws_mut(d):
    return (d or {}).get("mutating", 0)


def ops_text(counts, limit=40):
    items = [f"{k} {v}" for k, v in counts.items()]
    if not items:
        return "none"
    if len(items) > limit:
        items = items[:limit] + [f"… {len(items) - limit} more"]
    return ", ".join(items)


def verdict(ok):
    return "**met**" if ok else "**not met**"


def report(res):
    facts = load_tsv(os.path.join(res, "facts.tsv"))
    o = []
    w = o.append
    w(f"Recorded {facts.get('date', '?')} at commit `{facts.get('commit', '?')}`"
      f"{' (working tree had uncommitted changes: ' + facts['dirty'] + ')' if facts.get('dirty') else ''}.")
    w("")
    w("### Machine and load")
    w("")
    w("| fact | value |")
    w("|---|---|")
    for k, v in facts.items():
        if k not in ("date", "commit", "dirty"):
            w(f"| {k} | {v} |")
    load_path = os.path.join(res, "load.txt")
    for line in (open(load_path).read().splitlines() if os.path.exists(load_path) else []):
        phase, _, up = line.partition("\t")
        w(f"| load at {phase} | {up} |")
    w("")

    n_rows = [
        ("cold `up` (fresh sandbox)", "karpctl.cold_up", "byhand.cold_up", 5.0),
        ("no-op `up`", "karpctl.noop_up", "byhand.rerun", 50.0),
        ("no-op `up --skip-preflight`", "karpctl.noop_up_skip_preflight", "byhand.rerun", None),
        ("`up --refresh`", "karpctl.refresh", "byhand.rerun", 10.0),
        ("`plan`", "karpctl.plan", "byhand.plan", None),
        ("`plan --refresh`", "karpctl.plan_refresh", "byhand.plan", None),
        ("`rollback --yes`", "karpctl.rollback", "byhand.rollback", None),
    ]
    status = load_tsv(os.path.join(res, "status.tsv"))
    w("### Wall time: karpctl vs the by-hand script")
    w("")
    w("Medians; min–max and the number of runs in brackets. The by-hand column for no-op, "
      "`--skip-preflight` and `--refresh` is the same measurement: the script run again on the "
      "installed sandbox (`by-hand.sh up` a second time); for `plan` and `plan --refresh` it is "
      "`by-hand.sh plan`, the read-only subset (there is no by-hand plan). `plan` trusts the recorded "
      "state and reads almost nothing; `plan --refresh` observes everything, like the by-hand reads.")
    w("")
    w("| command | karpctl | by-hand | by-hand ÷ karpctl | target |")
    w("|---|---|---|---|---|")
    ratios = {}
    for name, k, b, target in n_rows:
        kt, bt = times(res, k), times(res, b)
        note = status.get(k)
        if note and not kt:
            kcell = note
        elif kt:
            kcell = f"{fmt_s(med(kt))} ({fmt_s(min(kt))}–{fmt_s(max(kt))}, n={len(kt)})"
        else:
            kcell = "—"
        bcell = f"{fmt_s(med(bt))} ({fmt_s(min(bt))}–{fmt_s(max(bt))}, n={len(bt)})" if bt else (status.get(b) or "—")
        r = med(bt) / med(kt) if kt and bt else None
        ratios[k] = r
        tcell = "—"
        if target:
            tcell = f"≥{target:.0f}×: {verdict(r is not None and r >= target)}"
        w(f"| {name} | {kcell} | {bcell} | {fmt_ratio(r)} | {tcell} |")
    w("")

    # API calls
    w("### API calls per command")
    w("")
    w("AWS: the emulator's counter (`GET /_testbed/requests`, reset before each command). Kubernetes: "
      "`apiserver_request_total` from `kubectl get --raw /metrics`, after minus before, without `leases` "
      "and without the benchmark's own `/metrics` reads, minus what the controller simulator sent (it runs "
      "behind a counting proxy, `scripts/bench/kproxy.py`). Writes made by the API server itself in "
      "reaction to new CRDs (CRD status, APIService registration) are listed apart. For repeated commands "
      "the counts are those of the first run; the last column says whether all runs made the same calls "
      "(not counting `GET openapi/v3` and `LIST services`, which the API server sends itself now and then: "
      "see the idle row).")
    w("")
    w("| command | way | AWS total | AWS mutating | kube reads | kube writes | kube dry runs | same in every run |")
    w("|---|---|---|---|---|---|---|---|")
    labels = [
        ("cold up", "karpctl.cold_up"), ("cold up", "byhand.cold_up"),
        ("no-op up", "karpctl.noop_up"), ("no-op up --skip-preflight", "karpctl.noop_up_skip_preflight"),
        ("no-op up (re-run)", "byhand.rerun"),
        ("up --refresh", "karpctl.refresh"), ("plan", "karpctl.plan"), ("plan --refresh", "karpctl.plan_refresh"),
        ("plan (read-only subset)", "byhand.plan"),
        ("rollback", "karpctl.rollback"), ("rollback", "byhand.rollback"),
        ("nothing (`sleep 1`): background", "idle"),
    ]
    detail = []
    for name, lab in labels:
        a, kc = runs_counts(res, lab, "aws"), runs_counts(res, lab, "kube")
        if not a:
            continue
        way = "karpctl" if lab.startswith("karpctl") else ("by-hand" if lab.startswith("byhand") else "—")
        ks = kube_summary(kc[0]) if kc else {}
        def fg(x):
            return {k: v for k, v in x.items() if k not in BACKGROUND}

        same = all(aws_ops(x) == aws_ops(a[0]) for x in a) and all(fg(x) == fg(kc[0]) for x in kc)
        mut_all = [aws_mut(x) for x in a]
        mut_cell = f"{aws_mut(a[0])}" + (f" (max {max(mut_all)} over {len(a)} runs)" if len(a) > 1 else "")
        w(f"| {name} | {way} | {a[0].get('total', 0)} | {mut_cell} | {ks.get('reads', 0)} | {ks.get('writes', 0)} | "
          f"{ks.get('dry_runs', 0)} | {'yes' if same else 'no'} ({len(a)} run{'s' if len(a) > 1 else ''}) |")
        own = {k: v for k, v in (kc[0] if kc else {}).items() if any(m in k for m in SERVER_OWN)}
        client = {k: v for k, v in (kc[0] if kc else {}).items() if k not in own}
        detail.append((f"{name} — {way}", aws_ops(a[0]), client, own))
    w("")
    w("By service and operation (first run):")
    w("")
    for title, aws, kube, own in detail:
        w(f"- **{title}**. AWS: {ops_text(aws)}. Kubernetes: {ops_text(kube)}."
          + (f" API server's own: {ops_text(own)}." if own else ""))
    w("")

    # AMI lookups
    ami = {"rows": [
        {"name": r[0], "amis": int(r[1]), "params": int(r[2]), "ssm_calls": int(r[3]), "ssm_calls_text": r[3], "ok": r[4] == "ok"}
        for r in load_rows(os.path.join(res, "ami.tsv"))]}
    w("### AMI lookups")
    w("")
    w("karpctl reads two SSM parameters per AMI (image id and release/version) in `GetParameters` "
      "batches of 10. The issue's ⌈n/10⌉ is checked with n = parameters (how the README states it) "
      "and, stricter, with n = AMIs.")
    w("")
    w("| run | AMIs (family, variant, arch) | parameters | SSM calls | ⌈parameters/10⌉ | ⌈AMIs/10⌉ |")
    w("|---|---|---|---|---|---|")
    ami_ok = ami_ok_strict = True
    for row in ami.get("rows", []):
        by_param = math.ceil(row["params"] / 10)
        by_ami = math.ceil(row["amis"] / 10)
        ok = row["ssm_calls"] <= by_param and row.get("ok", True)
        ami_ok = ami_ok and ok
        ami_ok_strict = ami_ok_strict and row["ssm_calls"] <= by_ami
        w(f"| {row['name']} | {row['amis']} | {row['params']} | {row['ssm_calls_text']} | {by_param}: "
          f"{verdict(ok)} | {by_ami}: {verdict(row['ssm_calls'] <= by_ami)} |")
    w("")

    # Render
    rend = {"runs": facts.get("render runs", "?"), "rss_tool": facts.get("rss tool", "?"), "rows": [
        {"pools": int(n), "bytes": int(load_lines(os.path.join(res, f"render.{n}.bytes"))[0]),
         "times": [x / 1e9 for x in load_lines(os.path.join(res, f"render.{n}.ns"))],
         "rss_kb": max(load_lines(os.path.join(res, f"render.{n}.rss"), int))}
        for n in load_lines(os.path.join(res, "render.pools"), int)]}
    w("### Render time by number of node pools")
    w("")
    w("`karpctl render -c CONFIG > /dev/null`, N pools over 4 node classes (al2023 amd64, al2023 arm64, "
      "al2023 nvidia, bottlerocket), each pool with requirements, labels, a taint, limits and a budget; "
      f"median of {rend.get('runs', '?')} runs; peak RSS from `{rend.get('rss_tool', '?')}`.")
    w("")
    w("| pools | config size | median | min | max | per pool | peak RSS |")
    w("|---|---|---|---|---|---|---|")
    pts = []
    for row in rend.get("rows", []):
        t = row["times"]
        m = med(t)
        pts.append((row["pools"], m))
        w(f"| {row['pools']} | {row['bytes'] // 1024} KiB | {m * 1000:.1f} ms | {min(t) * 1000:.1f} ms | "
          f"{max(t) * 1000:.1f} ms | {m / row['pools'] * 1e6:.0f} µs | {row['rss_kb'] / 1024:.1f} MB |")
    w("")
    linear = None
    if len(pts) >= 3:
        w("Marginal cost per added pool: " + "; ".join(
            f"{n0}→{n1}: {(t1 - t0) / (n1 - n0) * 1e6:.0f} µs" for (n0, t0), (n1, t1) in zip(pts, pts[1:])) + ".")
        (n1, t1), (n2, t2), (n3, t3) = pts[-3], pts[-2], pts[-1]
        b = (t2 - t1) / (n2 - n1)
        a = t1 - b * n1
        pred = a + b * n3
        linear = t3 / pred if pred > 0 else None
        w(f"Growth: a straight line through the {n1}- and {n2}-pool medians (fixed {a * 1000:.1f} ms + "
          f"{b * 1e6:.0f} µs per pool) predicts {pred * 1000:.0f} ms for {n3} pools; measured {t3 * 1000:.0f} ms "
          f"({linear:.2f}× the prediction).")
        w("")

    # RSS
    def col(label, i):  # rss.<label>: one "<incl. children KB> <alone KB>" line per peakrss.py run
        path = os.path.join(res, f"rss.{label}")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [int(x.split()[i]) for x in f.read().splitlines() if x.strip()]

    def mx(xs):
        return max(xs) if xs else None

    def mb(kb):
        return "—" if not kb else f"{kb / 1024:.1f} MB"

    big = 1000 if any(r["pools"] == 1000 for r in rend.get("rows", [])) else max((r["pools"] for r in rend.get("rows", [])), default=None)
    rss_rows = [
        # name, with children (timed runs' %M + dedicated runs' wait4), karpctl alone, how "alone" was read
        (f"render ({big} pools)", load_lines(os.path.join(res, f"render.{big}.rss"), int) + col("render", 0), col("render", 1), "2 ms"),
        ("no-op `up`", load_lines(os.path.join(res, "karpctl.noop_up.rss"), int) + col("noop_up", 0), col("noop_up", 1), "2 ms"),
        ("no-op `up --skip-preflight`", load_lines(os.path.join(res, "karpctl.noop_up_skip_preflight.rss"), int)
         + col("noop_up_skip_preflight", 0), col("noop_up_skip_preflight", 1), "2 ms"),
        ("`plan`", load_lines(os.path.join(res, "karpctl.plan.rss"), int) + col("plan", 0), col("plan", 1), "2 ms"),
        ("`up --refresh`", load_lines(os.path.join(res, "karpctl.refresh.rss"), int), load_lines(os.path.join(res, "karpctl.refresh.hwm"), int), "100 ms"),
        ("cold `up`", load_lines(os.path.join(res, "karpctl.cold_up.rss"), int), load_lines(os.path.join(res, "karpctl.cold_up.hwm"), int), "100 ms"),
        ("`rollback --yes`", load_lines(os.path.join(res, "karpctl.rollback.rss"), int), load_lines(os.path.join(res, "karpctl.rollback.hwm"), int), "100 ms"),
    ]
    w("### Peak RSS")
    w("")
    w("Two numbers per command, maxima over all its runs. *Incl. children* is the maximum resident set "
      "size from GNU `/usr/bin/time -f %M` (wait4's ru_maxrss): the largest of karpctl and every process it "
      "waited for — `up` runs `helm` when it installs or upgrades a release, so for a cold `up` this is often "
      "helm's number. *karpctl alone* is the VmHWM high-water mark read from `/proc/<pid>/status` while it "
      "runs: every 2 ms in separate untimed runs (3 per command, `scripts/bench/peakrss.py`) for the fast "
      "commands, every 100 ms inside the timed runs for the slow ones.")
    w("")
    w("| command | incl. children | karpctl alone | sampled every |")
    w("|---|---|---|---|")
    for name, withc, alone, how in rss_rows:
        if withc or alone:
            w(f"| {name} | {mb(mx(withc))} | {mb(mx(alone))} | {how} |")
    bh = load_lines(os.path.join(res, "byhand.cold_up.rss"), int) + load_lines(os.path.join(res, "byhand.rerun.rss"), int)
    if bh:
        w(f"| by-hand script (largest single process: helm, kubectl or the aws CLI) | {mb(max(bh))} | — | — |")
    w("")
    rss_alone = {name: mx(alone) for name, _, alone, _ in rss_rows}
    rss_withc = {name: mx(withc) for name, withc, _, _ in rss_rows}

    # Breakdown
    bd = breakdown(res)
    if bd:
        w("### Where the time goes")
        w("")
        if bd.get("byhand_tools"):
            w("By-hand cold run (the first), wall time per tool (sum over its calls):")
            w("")
            w("| tool | calls | total | per call |")
            w("|---|---|---|---|")
            for tool, (calls, ms) in bd["byhand_tools"].items():
                w(f"| {tool} | {calls} | {ms / 1000:.1f} s | {ms / max(calls, 1):.0f} ms |")
            w("")
        if bd.get("byhand_rerun_tools"):
            w("By-hand re-run (no-op), same view:")
            w("")
            w("| tool | calls | total | per call |")
            w("|---|---|---|---|")
            for tool, (calls, ms) in bd["byhand_rerun_tools"].items():
                w(f"| {tool} | {calls} | {ms / 1000:.1f} s | {ms / max(calls, 1):.0f} ms |")
            w("")
        if bd.get("karpctl_steps"):
            w("karpctl cold `up` (first cold run), each step's own duration as its progress line reports it (steps overlap):")
            w("")
            w("| step | result | duration |")
            w("|---|---|---|")
            for step, what, secs in bd["karpctl_steps"]:
                w(f"| {step} | {what} | {secs:.1f} s |")
            w("")

    # Targets
    w("### Targets (issue 9)")
    w("")
    w("| target | measured | verdict |")
    w("|---|---|---|")

    def tgt(name, k, want):
        r = ratios.get(k)
        w(f"| {name} | {fmt_ratio(r)} | {verdict(r is not None and r >= want)} |")

    r = ratios.get("karpctl.noop_up")
    noop_mut = [aws_mut(x) for x in runs_counts(res, "karpctl.noop_up", "aws")]
    noop_kw = [kube_summary(x)["writes"] for x in runs_counts(res, "karpctl.noop_up", "kube")]
    zero = bool(noop_mut) and max(noop_mut) == 0 and (not noop_kw or max(noop_kw) == 0)
    w(f"| no-op `up` ≥50× faster than the script | {fmt_ratio(r)} | {verdict(r is not None and r >= 50)} |")
    w(f"| no-op `up` makes zero mutating calls | AWS max {max(noop_mut, default='—')}, Kubernetes writes max "
      f"{max(noop_kw, default='—')} over {len(noop_mut)} runs | {verdict(zero)} |")
    tgt("`up --refresh` ≥10× faster", "karpctl.refresh", 10)
    tgt("cold `up` ≥5× faster", "karpctl.cold_up", 5)
    w("| AMI lookups in ⌈n/10⌉ calls | "
      + "; ".join(f"{x['name']}: {x['ssm_calls']} call(s) for {x['amis']} AMIs / {x['params']} parameters" for x in ami.get("rows", []))
      + f" | n = parameters: {verdict(bool(ami.get('rows')) and ami_ok)}; n = AMIs: {verdict(bool(ami.get('rows')) and ami_ok_strict)} |")
    t1000 = dict(pts).get(1000)
    if t1000 is not None:
        w(f"| render 1,000 pools ≤200 ms | {t1000 * 1000:.0f} ms | {verdict(t1000 <= 0.2)} |")
    if linear is not None:
        w(f"| render grows linearly | {linear:.2f}× a straight line's prediction at {pts[-1][0]} pools | "
          f"{verdict(linear <= 1.25)} (≤1.25× counts as linear) |")
    keys = [k for k in rss_alone if k.startswith("render") or k.startswith("no-op `up`")]
    alone = [rss_alone[k] for k in keys if rss_alone[k]]
    withc = [rss_withc[k] for k in keys if rss_withc[k]]
    if alone:
        w(f"| peak RSS ≤64 MB (render {big} pools, no-op `up`) | karpctl alone {max(alone) / 1024:.1f} MB; "
          f"incl. children {max(withc) / 1024:.1f} MB | {verdict(max(alone) <= 64 * 1024)} "
          f"(karpctl alone){'' if max(withc) <= 64 * 1024 else '; with its helm child over 64 MB'} |")
    others = {k: v for k, v in rss_alone.items() if k not in keys and v}
    if others:
        k, v = max(others.items(), key=lambda kv: kv[1])
        w(f"| (for reference: largest karpctl-alone peak of the other commands) | {k}: {v / 1024:.1f} MB | "
          f"{'within' if v <= 64 * 1024 else 'over'} 64 MB |")
    w("")
    return "\n".join(o)


def splice(doc, section):
    with open(doc) as f:
        text = f.read()
    with open(section) as f:
        body = f.read().rstrip("\n")
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        text = text.rstrip("\n") + "\n\n" + BEGIN + "\n" + body + "\n" + END + "\n"
    else:
        text = text[: i + len(BEGIN)] + "\n" + body + "\n" + text[j:]
    with open(doc + ".tmp", "w") as f:
        f.write(text)
    os.replace(doc + ".tmp", doc)


def main():
    cmd = sys.argv[1]
    if cmd == "kube-snap":
        json.dump(kube_snap(sys.stdin.read()), sys.stdout, sort_keys=True)
    elif cmd == "kube-diff":
        b, a, pb, pa = (load_json(p, {}) for p in sys.argv[2:6])
        json.dump(kube_diff(b, a, pb.get("counts", pb), pa.get("counts", pa)), sys.stdout, sort_keys=True)
    elif cmd == "aws-diff":
        e, pb, pa = (load_json(p, {}) for p in sys.argv[2:5])
        json.dump(aws_diff(e, pb, pa), sys.stdout, sort_keys=True)
    elif cmd == "gen-config":
        gen_config(int(sys.argv[2]), sys.argv[3])
    elif cmd == "ami-config":
        print(ami_config(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif cmd == "report":
        print(report(sys.argv[2]))
    elif cmd == "splice":
        splice(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
