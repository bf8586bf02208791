"""Archive reprocessing entry point for `ray job submit`.

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/reprocess_archive.py /data/archive/ -o /data/tracks --mot-results

Inside a Ray job `ray.init()` attaches to the job's cluster; run directly, it starts (or joins)
a local Ray. Same flags as `ray-deepsort reprocess` (see docs/archive.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `ray job submit --working-dir .` runs this file from the uploaded project root without
# installing it: make the package importable for the driver (Ray adds the working dir to the
# workers' path itself).
_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "ray_deepsort").is_dir() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from ray_deepsort.archive.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
