#!/usr/bin/env python3
"""Stand-in for PBS's qsub, qstat and qdel: PBS cannot run on this machine.

Invoked through symlinks named ``qsub``, ``qstat`` and ``qdel`` put first on
PATH by the test. State lives in ``$FAKE_PBS_DIR``:
- ``qsub`` appends its argv to ``qsub.log`` and prints a job id ``<n>.pbs01``;
- ``qstat -fx ID...`` prints ``qstat-<ID>.txt`` (recorded ``qstat -f`` output the
  test put there) for each ID, like PBS Pro does;
- ``qdel ID`` appends to ``qdel.log``.
"""

import json
import os
import sys

state = os.environ["FAKE_PBS_DIR"]
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
if name == "qsub":
    counter = os.path.join(state, "counter")
    n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1001
    open(counter, "w").write(str(n))
    with open(os.path.join(state, "qsub.log"), "a") as fh:
        fh.write(json.dumps(args) + "\n")
    print("%d.pbs01" % n)
elif name == "qstat":
    if args[:1] == ["-B"]:
        print("Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status\n"
              "pbs01                0     3     0     1     0     0     0     0 Active")
        sys.exit(0)
    for job in [a for a in args if not a.startswith("-")]:
        path = os.path.join(state, "qstat-%s.txt" % job)
        if os.path.exists(path):
            sys.stdout.write(open(path).read())
        else:
            sys.stderr.write("qstat: Unknown Job Id %s\n" % job)
elif name == "qdel":
    with open(os.path.join(state, "qdel.log"), "a") as fh:
        fh.write(" ".join(args) + "\n")
