"""Write a CASA site config that works offline.

Run with the Python that has casatools/casadata::

    python remote/casa_site_config.py OUT.py

Point ``CASASITECONFIG`` at OUT.py: measures come from casadata's bundled
``__data__`` folder and CASA never tries to update them over the network.
Stdlib only apart from the casadata it locates.
"""

import os
import sys


def casadata_dir() -> str:
    """The ``__data__`` folder that the casadata package ships."""
    import casadata  # noqa: PLC0415 (only on a CASA python)

    return os.path.join(os.path.dirname(os.path.abspath(casadata.__file__)), "__data__")


def site_config_text(measurespath: str) -> str:
    """The text of an offline site config for ``measurespath``."""
    return (
        "# Written by remote/casa_site_config.py: offline CASA, measures from casadata.\n"
        f"measurespath = {measurespath!r}\n"
        "measures_auto_update = False\n"
        "data_auto_update = False\n"
    )


def main(argv: list) -> int:
    if len(argv) != 2:
        print("usage: casa_site_config.py OUT.py", file=sys.stderr)
        return 2
    text = site_config_text(casadata_dir())
    tmp = argv[1] + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, argv[1])
    print(f"CASA site config written to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
