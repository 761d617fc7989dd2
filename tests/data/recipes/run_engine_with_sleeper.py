"""``ari run`` with the sleeper recipe: the same run_headless(), for engine tests that kill the console.

    python run_engine_with_sleeper.py CAMPAIGN_DIR
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from ari_console.config import load_config  # noqa: E402
from ari_console.engine import run_headless  # noqa: E402
from tests.test_engine import sleeper_spec  # noqa: E402

run_headless(load_config(Path(sys.argv[1]) / "ari.toml"), progress=lambda m: print(m, file=sys.stderr, flush=True),
             adjust_spec=sleeper_spec)
