"""A tiny recipe for node tests: each stage sleeps ``params.sleep_s`` and writes a line.

    python sleeper.py STAGE recipe_params.json

It stands in for CASA only where a test is about launching, watching and
restarting jobs, not about imaging (those tests run the real casa6 recipe).
``params.fail_stage`` makes that stage print ``params.fail_message`` and fail.
``params.write_mb`` makes the image stage write that many MiB into the work dir (scratch use).
"""

import json
import os
import sys
import time

stage, params_path = sys.argv[1], sys.argv[2]
with open(params_path) as fh:
    params = json.load(fh)
sleep_s = float(params["params"].get("sleep_s", 0))
print("sleeper: stage %s starts, sleeping %.1f s" % (stage, sleep_s), flush=True)
time.sleep(sleep_s)
if stage == "image" and params["params"].get("write_mb"):
    with open(os.path.join(params["work_dir"], "image.data"), "wb") as fh:
        for _ in range(int(params["params"]["write_mb"])):
            fh.write(os.urandom(1 << 20))
if params["params"].get("fail_stage") == stage:
    print(params["params"].get("fail_message", "sleeper: failing on purpose"), flush=True)
    sys.exit(1)
if stage == "export":
    import hashlib
    out = params["products_dir"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "done.txt"), "w") as fh:
        fh.write("ok\n")
    digest = hashlib.sha256(b"ok\n").hexdigest()
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump({"uid": params["uid"], "products": [{"file": "done.txt", "sha256": digest, "size": 3}]}, fh)
print("sleeper: stage %s done" % stage, flush=True)
