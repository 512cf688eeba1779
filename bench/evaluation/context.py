"""What every experiment of `make eval` gets: the run's options, where its
output goes, one shared KVM host (emulated where there is no hardware KVM)
started on first use, and figure saving."""
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def machine_description():
    """The machine the run is on, as the report prints it."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem_kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    kvm = os.path.exists("/dev/kvm")
    rev = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout.strip()
    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "dev_kvm": kvm, "vmsh": rev,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


class Context:
    def __init__(self, outdir, quick, vmsh, cache):
        self.outdir = outdir
        self.quick = quick
        self.vmsh = vmsh
        self.cache = cache
        os.makedirs(os.path.join(outdir, "plots"), exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="vmsh-eval.", dir="/var/tmp")  # removed by close()
        self.info = machine_description()
        self.machine = f"{self.info['host']}: {self.info['cpus']} CPUs, {self.info['mem_gib']} GiB"
        self._host = None
        self.t0 = time.monotonic()

    def log(self, msg):
        print(f"[eval {time.monotonic() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def host(self):
        """The KVM host guests run on, shared by the experiments (booted once:
        an emulated one takes a minute)."""
        if self._host is None:
            from vmshtest import harness
            self._host = harness.make_host()
            self.info["kvm_host"] = self._host.mode
            self.machine += f", {self._host.mode} KVM host"
        return self._host

    def save_figure(self, fig, name):
        """PNG and SVG of a matplotlib figure; returns the PNG's path relative
        to the report."""
        fig.text(0.99, 0.005, f"{self.machine} - {self.info['date']}", ha="right", va="bottom", fontsize=6,
                 color="0.4")
        for ext in ("png", "svg"):
            fig.savefig(os.path.join(self.outdir, "plots", f"{name}.{ext}"), dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt
        plt.close(fig)
        return f"plots/{name}.png"

    def close(self):
        if self._host is not None:
            self._host.close()
            self._host = None
        shutil.rmtree(self.tmp, ignore_errors=True)
