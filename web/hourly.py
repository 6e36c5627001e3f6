#!/usr/bin/env python3
"""Writes an hourly table for the page's covariate demo: a load forecast known a day ahead and a
price that follows it with a daily and weekly cycle (standard library only; seeded).

    python3 web/hourly.py OUT.csv [HOURS] [SEED]
"""

import math
import random
import sys
from datetime import datetime, timedelta, timezone

out, hours, seed = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 24 * 120, int(sys.argv[3]) if len(sys.argv) > 3 else 0
rng = random.Random(seed)
start = datetime(2024, 1, 1, tzinfo=timezone.utc)
level = 0.0
with open(out + ".partial", "w") as f:
    f.write("ds,load,price\n")
    for h in range(hours):
        t = start + timedelta(hours=h)
        daily = math.sin(2 * math.pi * (t.hour - 7) / 24)
        weekly = -0.6 if t.weekday() >= 5 else 0.0
        load = 50 + 12 * daily + 8 * weekly + rng.gauss(0, 1.5)
        level = 0.97 * level + rng.gauss(0, 1.0)
        price = 40 + 0.9 * (load - 50) + 6 * math.sin(2 * math.pi * t.hour / 24) + level + rng.gauss(0, 2.0)
        f.write(f"{t.strftime('%Y-%m-%dT%H:%M:%S')},{load:.3f},{price:.3f}\n")
import os

os.replace(out + ".partial", out)
