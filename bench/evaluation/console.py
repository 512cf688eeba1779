"""Console latency: keystroke echo through vmsh's console, ssh (dropbear)
and the hypervisor's serial console, in the same guest, and the time from
starting the command to the first prompt (vmsh attach cold and warm, ssh
connect). bench/attach_bench.py does the measuring: sessions of each kind
alternate; each session types the same number of keystrokes (one
character, wait for its echo, erase it)."""
from bench import attach_bench
from bench.evaluation.stats import quartiles
from bench.evaluation.markdown import doc_items

NAME = "console"
TITLE = "Console latency and attach time"
PAPER = "keystroke echo: vmsh 0.9 ms, ssh about the same (the paper's Section 6)"
KINDS = (("vmsh_warm", "vmsh (warm)"), ("vmsh", "vmsh (cold)"), ("ssh", "ssh (dropbear)"), ("serial", "serial console"))


def run(ctx):
    runs, samples = (1, 10) if ctx.quick else (5, 40)
    return attach_bench.measure(ctx.host(), ctx.vmsh, "pc", "6.1", runs, samples, log=ctx.log)


def echo_samples(data, kind):
    return [x for r in data["runs"][kind] for x in r["echo_ms"]["samples"]]


def render(data, ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = data["runs"]
    n_sessions = len(runs["ssh"])
    lines = [f"### {TITLE}", "", *doc_items(__doc__),
             f"Guest: qemu {data['machine']}, Linux {data['kernel']}, {data['kvm_host']} KVM host; "
             f"{n_sessions} sessions of each kind, {data['samples']} keystrokes each.", "",
             "| | " + " | ".join(label for _, label in KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    row = []
    for kind, _ in KINDS:
        m, q1, q3 = quartiles(echo_samples(data, kind))
        row.append(f"{m:.2f} [{q1:.2f}-{q3:.2f}]")
    lines.append("| keystroke echo, ms: median [IQR] | " + " | ".join(row) + " |")
    row = []
    for kind, _ in KINDS:
        if kind == "serial":
            row.append("- (already running)")
            continue
        m, q1, q3 = quartiles([r["to_prompt_ms"] for r in runs[kind]])
        row.append(f"{m:.0f} [{q1:.0f}-{q3:.0f}]")
    lines.append("| start to prompt, ms: median [IQR] | " + " | ".join(row) + " |")
    ssh_echo = quartiles(echo_samples(data, "ssh"))[0]
    ssh_prompt = quartiles([r["to_prompt_ms"] for r in runs["ssh"]])[0]
    lines.append("| ratio to ssh (echo / prompt) | " + " | ".join(
        f"{quartiles(echo_samples(data, k))[0] / ssh_echo:.2f} / "
        + (f"{quartiles([r['to_prompt_ms'] for r in runs[k]])[0] / ssh_prompt:.2f}" if k != "serial" else "-")
        for k, _ in KINDS) + " |")
    if data["stops"]:
        lines += ["", f"VM stop time per attach (every vCPU held): median "
                  f"{quartiles([s[0] for s in data['stops']])[0]:.1f} ms in "
                  f"{quartiles([s[1] for s in data['stops']])[0]:.0f} windows."]
    lines += ["", f"The paper: {PAPER}.", ""]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, label in KINDS:
        xs = sorted(echo_samples(data, kind))
        ax1.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=f"{label} (n={len(xs)})")
    ax1.set_xscale("log")
    ax1.set_xlabel("keystroke echo latency (ms, log scale)")
    ax1.set_ylabel("fraction of keystrokes (CDF)")
    ax1.legend(fontsize=8)
    ax1.set_title("Echo latency, CDF", fontsize=10)
    kinds = [(k, label) for k, label in KINDS if k != "serial"]
    vals = [[r["to_prompt_ms"] for r in runs[k]] for k, _ in kinds]
    ax2.boxplot(vals, labels=[label for _, label in kinds], whis=(0, 100))
    ax2.set_ylabel("start to first prompt (ms)")
    ax2.set_title(f"Attach vs ssh connect, {n_sessions} sessions each (whiskers: min-max)", fontsize=10)
    ax2.tick_params(axis="x", labelsize=8)
    lines.append(f"![console latency]({ctx.save_figure(fig, 'console')})")
    return "\n".join(lines)
