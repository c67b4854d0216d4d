"""Imported first by the package: how torch's OpenMP threads wait, set before torch is loaded.

After each parallel region, libgomp's threads spin (by default 300,000 turns) before they sleep. Right after the
network, OpenCV's threads compose the output at full resolution and find the cores taken by the spinning: on a
2-core CPU a 1 MP photo's composition took 8.5 ms instead of 5.8 (34.8 ms end to end instead of 31.9). 10,000 turns
keep the network as fast as before (no spinning at all slowed it by 15-20%). libgomp reads its settings when it loads,
so this applies only where torch is imported after letcolor (as in the CLI and the app), and never where the user
chose a wait policy (OMP_WAIT_POLICY) or a spin count (GOMP_SPINCOUNT).
"""

import os
import sys

SPIN_COUNT = "10000"

if "torch" not in sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys():
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
