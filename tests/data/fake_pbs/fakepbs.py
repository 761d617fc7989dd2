#!/usr/bin/env python3
"""Stand-in for PBS's qsub, qstat and qdel: PBS cannot run on this machine.

Models PBS Professional's commands as its Reference Guide describes them (qsub,
qstat, qdel pages; job states; exit codes), and is strict where they are:
- ``qsub`` takes only -N, -j, -o, -l, -q, -A and a job script that exists; a job
  name longer than 15 characters, an option it does not know, or a resource not
  written as PBS wants (``walltime=HH:MM:SS``, ``select=N:ncpus=N[:mem=N(kb|mb|gb)]``)
  is refused with exit 2, like qsub does. It appends its argv to ``qsub.log``
  and prints a job id ``<n>.pbs01``.
- ``qstat -B`` answers for the server; ``qstat -f ID...`` / ``qstat -fx ID...``
  print ``qstat-<ID>.txt`` (recorded ``qstat -f`` output the test put there) for
  each ID. Without ``-x`` a finished job (job_state F) is refused (exit 35,
  "use -x"), as PBS Pro refuses historical jobs; an unknown ID prints
  "Unknown Job Id" and the exit status is 153 (PBSE_UNKJOBID), after the known
  ones were printed. Any other option is refused with exit 2.
- ``qdel ID`` appends to ``qdel.log``.
Every call is appended to ``calls.log`` (one line: the command and its argv),
so a test can count the commands a poll costs.
"""

import json
import os
import re
import sys

state = os.environ["FAKE_PBS_DIR"]
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
with open(os.path.join(state, "calls.log"), "a") as fh:
    fh.write(json.dumps([name] + args) + "\n")


def refuse(message, code=2):
    sys.stderr.write("%s: %s\n" % (name, message))
    sys.exit(code)


RESOURCE = re.compile(r"^(walltime=\d+:\d\d:\d\d|select=\d+:ncpus=\d+(:mem=\d+(kb|mb|gb))?)$")

if name == "qsub":
    i = 0
    while i < len(args) - 1:
        opt = args[i]
        if opt not in ("-N", "-j", "-o", "-l", "-q", "-A"):
            refuse("invalid option -- '%s'" % opt.lstrip("-"))
        value = args[i + 1]
        if opt == "-N" and (len(value) > 15 or not re.match(r"^[A-Za-z][A-Za-z0-9_.-]*$", value)):
            refuse("illegal -N value")
        if opt == "-j" and value not in ("oe", "eo", "n"):
            refuse("illegal -j value")
        if opt == "-l" and not RESOURCE.match(value):
            refuse("Illegal attribute or resource value Resource_List.%s" % value.split("=")[0])
        i += 2
    if i != len(args) - 1 or not os.path.isfile(args[-1]):
        refuse("script file cannot be loaded - No such file or directory")
    counter = os.path.join(state, "counter")
    n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1001
    open(counter, "w").write(str(n))
    with open(os.path.join(state, "qsub.log"), "a") as fh:
        fh.write(json.dumps(args) + "\n")
    print("%d.pbs01" % n)
elif name == "qstat":
    if args == ["-B"]:
        print("Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status\n"
              "pbs01                0     3     0     1     0     0     0     0 Active")
        sys.exit(0)
    options = [a for a in args if a.startswith("-")]
    if options not in (["-f"], ["-fx"], ["-xf"], ["-f", "-x"], ["-x", "-f"]):
        refuse("invalid option combination %s" % " ".join(options))
    history = any("x" in o for o in options)
    code = 0
    for job in [a for a in args if not a.startswith("-")]:
        path = os.path.join(state, "qstat-%s.txt" % job)
        if not os.path.exists(path):
            sys.stderr.write("qstat: Unknown Job Id %s\n" % job)
            code = 153
            continue
        text = open(path).read()
        if not history and re.search(r"^\s*job_state = F\s*$", text, re.M):
            sys.stderr.write("qstat: %s Job has finished, use -x or -H to obtain historical job information\n" % job)
            code = code or 35
            continue
        sys.stdout.write(text)
    sys.exit(code)
elif name == "qdel":
    if len(args) != 1 or args[0].startswith("-"):
        refuse("usage: qdel job_identifier")
    with open(os.path.join(state, "qdel.log"), "a") as fh:
        fh.write(" ".join(args) + "\n")
else:
    refuse("not a PBS command")
