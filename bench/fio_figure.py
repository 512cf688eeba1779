#!/usr/bin/env python3
"""The paper's Figure 6 on this machine: fio on native, qemu-blk, vmsh-blk,
the guest's own disk with vmsh attached and qemu 9p, side by side in one
guest (bench/evaluation/fio.py), as a table and a plot.

usage: python3 -m bench.fio_figure [--quick] [--out DIR]

The fio experiment of `make eval` alone (python3 -m bench.eval --only fio)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import eval as evaluation  # noqa: E402

if __name__ == "__main__":
    sys.argv[1:1] = ["--only", "fio"]
    evaluation.main()
