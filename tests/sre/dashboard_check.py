#!/usr/bin/env python3
"""Validates grafana/dashboards/data-api.json as a Grafana dashboard: the structure Grafana needs to
load it (schema version, uid, templating, grid positions, unique ids) and our rules for every panel
(a title, a unit, at least one target with a PromQL expression on the ${datasource} variable)."""
import json, sys

path = sys.argv[1] if len(sys.argv) > 1 else "grafana/dashboards/data-api.json"
d = json.load(open(path))
errors = []
for key, kind in [("uid", str), ("title", str), ("schemaVersion", int), ("panels", list), ("templating", dict)]:
    if not isinstance(d.get(key), kind):
        errors.append(f"dashboard.{key} missing or not {kind.__name__}")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
    errors.append("templating needs a prometheus datasource variable named datasource")
if variables.get("instance", {}).get("type") != "query":
    errors.append("templating needs a query variable named instance")
ids = set()
kinds = {"row", "timeseries", "stat", "heatmap", "gauge", "bargauge", "table"}
panels = [p for p in d.get("panels", []) if p.get("type") != "row"]
for p in d.get("panels", []):
    where = f"panel {p.get('id')} ({p.get('title')!r})"
    if p.get("id") in ids:
        errors.append(f"{where}: duplicate id")
    ids.add(p.get("id"))
    if p.get("type") not in kinds:
        errors.append(f"{where}: unknown type {p.get('type')}")
    g = p.get("gridPos", {})
    if not all(isinstance(g.get(k), int) for k in "hwxy") or g.get("x", 0) + g.get("w", 0) > 24:
        errors.append(f"{where}: bad gridPos {g}")
    if not p.get("title"):
        errors.append(f"{where}: no title")
for p in panels:
    where = f"panel {p.get('id')} ({p.get('title')!r})"
    if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
        errors.append(f"{where}: no unit")
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"{where}: no target")
    for t in targets:
        if not t.get("expr") or not t.get("refId"):
            errors.append(f"{where}: target without expr/refId")
        if t.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"{where}: target not on ${{datasource}}")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"{path}: {len(panels)} panels, each with a title, a unit and a target")
