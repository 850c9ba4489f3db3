#!/usr/bin/env python3
"""Module import graph of src/: which `crate::` paths each file names, and the cycles.

    scripts/import-graph.py            top-level modules (engine, kube, steps, ...)
    scripts/import-graph.py --files    one node per file (engine/runner, kube/apply, ...)
    scripts/import-graph.py --edges    also list what each node imports

Prints every strongly connected component with more than one node (an import cycle)
and exits 1 if there is any. Counts `use crate::a::b` and inline `crate::a::b` paths,
including grouped `use crate::{a, b::c}` forms and `super::` paths; tests (`#[cfg(test)]` modules) count too.
"""
import os, re, sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
files_mode = "--files" in sys.argv


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def expand(group):
    """`{a, b::{c, d}}` -> ["a", "b::c", "b::d"] (one level of nesting is enough here)."""
    out, depth, cur = [], 0, ""
    for ch in group:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip()); cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    res = []
    for item in out:
        m = re.match(r"^([\w:]+)::\{(.*)\}$", item, re.S)
        if m:
            res += [m.group(1) + "::" + x for x in expand(m.group(2))]
        else:
            res.append(item)
    return res


modules = {}
for root, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            modules[tuple(module_of(p))] = p
known = set(modules)


def target(path_parts):
    """The longest known module that prefixes `path_parts`."""
    for i in range(len(path_parts), 0, -1):
        if tuple(path_parts[:i]) in known:
            return tuple(path_parts[:i])
    return None


def node(mod):
    if not mod:
        return None
    return "/".join(mod) if files_mode else mod[0]


edges = {}
for mod, path in modules.items():
    text = open(path).read()
    text = re.sub(r"//[^\n]*", "", text)
    refs = []
    for m in re.finditer(r"crate::\{([^;]*?)\}\s*;", text, re.S):
        refs += expand(m.group(1))
    for m in re.finditer(r"crate::((?:\w+::)*\w+)", text):
        refs.append(m.group(1))
    # `super::x` from a/b/c.rs (module a::b::c) names a::b::x; from a/b/mod.rs, a::x.
    for m in re.finditer(r"\b((?:super::)+)\{?((?:\w+::)*\w+)", text):
        up = m.group(1).count("super::")
        base = list(mod[:len(mod) - up])
        refs.append("::".join(base + [m.group(2)]))
    src = node(mod)
    if src is None:
        continue
    for r in refs:
        t = node(target(r.split("::")))
        if t and t != src:
            edges.setdefault(src, set()).add(t)

# Tarjan's SCC
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})


def strong(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in sorted(edges.get(v, ())):
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))


for v in nodes:
    if v not in index:
        strong(v)
print(f"{len(nodes)} nodes, {sum(len(t) for t in edges.values())} edges, {len(sccs)} cycles")
if "--edges" in sys.argv:
    for v in nodes:
        print(f"  {v} -> {', '.join(sorted(edges.get(v, ()))) or '(leaf)'}")
for c in sorted(sccs, key=len):
    inner = [f"{a}->{b}" for a in c for b in sorted(edges.get(a, ())) if b in c]
    print(f"  cycle of {len(c)}: {', '.join(c)}")
    print(f"    edges: {', '.join(inner)}")
sys.exit(1 if sccs else 0)
