"""Compare two outputs of run.sh: weights, detect products and metrics (timing and paths excluded)."""
import hashlib
import json
import pathlib
import sys

import pandas as pd
import torch

old, new = (pathlib.Path(p) for p in sys.argv[1:3])
a = torch.load(old/"run/checkpoints/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
b = torch.load(new/"run/checkpoints/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
assert a.keys() == b.keys()
diff = [k for k in a if not torch.equal(a[k], b[k])]
print(f"weights: {len(a)} tensors, {len(diff)} differ")
products = sorted(p.relative_to(old) for p in (old / "det").rglob("*")
                  if p.is_file() and p.name != "maps.csv" and "parts" not in p.parts and not p.name.startswith("."))
for f in [*products, pathlib.Path("run/split.csv")]:
    if not (new / f).is_file():
        print(f, "MISSING in", new)
        continue
    ha = hashlib.sha256((old/f).read_bytes()).hexdigest(); hb = hashlib.sha256((new/f).read_bytes()).hexdigest()
    print(f, "identical" if ha == hb else "DIFFER")
ma = pd.read_csv(old/"det/maps.csv").drop(columns=["seconds"]); mb = pd.read_csv(new/"det/maps.csv").drop(columns=["seconds"])
print("det/maps.csv without seconds:", "identical" if ma.equals(mb) else "DIFFER")
ja = json.loads((old/"eval/metrics.json").read_text()); jb = json.loads((new/"eval/metrics.json").read_text())
def strip(d):
    return {k: v for k, v in d.items() if "time" not in k and k not in ("timing", "checkpoint", "split_source")}
ka, kb = strip(ja), strip(jb)
print("metrics.json keys equal:", set(ka) == set(kb), sorted(set(ka) ^ set(kb)))
print("metrics.json values equal (timing excluded):", all(ka[k] == kb[k] for k in ka if k in kb),
      [k for k in ka if k in kb and ka[k] != kb[k]])
print("map50", ja["map50"], jb["map50"], "n detections", len(pd.read_csv(old/"det/detections.csv")))
