#!/usr/bin/env python3
"""Same outputs: runs two aetrain binaries on the same fixed-seed cases with the same --out path
and compares every file they write byte for byte, except the values that measure time. For
refactors that must not change behaviour: build the old commit elsewhere
(git archive OLD | tar -x -C DIR; swift build -c release there), then compare. About 1 minute.

Usage: Tests/same-outputs.py OLD_BIN NEW_BIN [WORKDIR] [CASE ...]
Environment: AETRAIN_MNIST_DIR (the four MNIST IDX files). Exit 0 when every case is the same.

Excluded (masked to "X" before the comparison, everything else must be equal byte for byte):
  metrics.jsonl  samples_per_second, elapsed_seconds
  summary.json   samples_per_second, train_seconds, wall_seconds, report_seconds, ms_per_step,
                 train_gflops, peak_rss_mb, peak_rss_mb_per_rank, pss_mb_per_rank
  report.html    the same keys' rows of the summary table, the headline's samples/s and wall time
  .aetrain.lock  all of it (the PID and host of the run that held the folder)
Checkpoints, figures (PNG/SVG) and every other file: byte for byte. Exit codes must match too.
"""
import os, re, shutil, signal, subprocess, sys, time

TIME_KEYS = ["samples_per_second", "train_seconds", "wall_seconds", "report_seconds", "ms_per_step",
             "train_gflops", "peak_rss_mb", "peak_rss_mb_per_rank", "pss_mb_per_rank", "elapsed_seconds"]

old_bin, new_bin = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
work = os.path.abspath(sys.argv[3] if len(sys.argv) > 3 else "/tmp/aetrain-same-outputs")
only = set(sys.argv[4:])
mnist = os.environ.get("AETRAIN_MNIST_DIR")
if not mnist or not os.path.exists(os.path.join(mnist, "train-images-idx3-ubyte.gz")):
    sys.exit("set AETRAIN_MNIST_DIR to the MNIST folder")
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
for k in ["AETRAIN_TEST_NAN_GRAD", "AETRAIN_TEST_PERTURB", "AETRAIN_TEST_CRASH_AFTER_TEMP", "AETRAIN_TEST_RANKS_PER_NODE"]:
    env.pop(k, None)

base = ["--dataset", "mnist", "--data-dir", mnist, "--train-limit", "1024", "--test-limit", "300",
        "--batch-size", "64", "--epochs", "2", "--log-every", "3", "--seed", "7", "--checkpoint-every", "10"]
noreport = ["--no-report"]

def cmd(binary, np, args, mca=()):
    if np == 1:
        return [binary] + args
    return ["mpirun", "--oversubscribe", *mca, "-np", str(np), binary] + args

def run(binary, np, args, extra_env=None, timeout=600, mca=()):
    e = dict(env, **(extra_env or {}))
    p = subprocess.run(cmd(binary, np, args, mca), env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode

def caught_usr1(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("SigCgt:"):
                return (int(line.split()[1], 16) >> (signal.SIGUSR1 - 1)) & 1 == 1
    except OSError:
        pass
    return False

def rank_pids(binary, proc, np):
    if np == 1:
        return [proc.pid]
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], stdout=subprocess.PIPE, text=True).stdout.split()
    return [int(p) for p in out if os.path.realpath(f"/proc/{p}/exe") == os.path.realpath(binary)]

def run_preempted(binary, np, args):
    """SIGUSR1 to the last rank as soon as its handler is installed (before step 1 ends), so the
    stop is seen at step 1 on every run: a deterministic preemption."""
    p = subprocess.Popen(cmd(binary, np, args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    victim = None
    while time.time() < deadline and p.poll() is None:
        pids = rank_pids(binary, p, np)
        if len(pids) == np and all(caught_usr1(q) for q in pids):
            victim = max(pids)  # the rank started last; any rank will do
            os.kill(victim, signal.SIGUSR1)
            break
        time.sleep(0.002)
    _, err = p.communicate(timeout=300)
    m = re.search(rb"stopped by [^\n]* at step (\d+)", err)
    return p.returncode, (m.group(1).decode() if m else None)

out = os.path.join(work, "run")  # the same --out for both binaries (checkpoints embed it)

def case_plain(np, args, extra_env=None, sub=(), mca=()):
    def go(binary):
        return [run(binary, np, list(sub) + base + args + ["--out", out], extra_env, mca=mca)]
    return go

def case_resume_maxsteps(np, args):
    def go(binary):
        a = run(binary, np, base + args + ["--max-steps", "10", "--out", out])
        b = run(binary, np, base + args + ["--max-steps", "25", "--resume", "auto", "--out", out])
        return [a, b]
    return go

def case_preempt(np, args):
    def go(binary):
        a, step = run_preempted(binary, np, base + args + ["--out", out])
        b = run(binary, np, base + args + ["--resume", "auto", "--out", out])
        return [a, "stopped at step %s" % step, b]
    return go

def case_anomaly_checkpoint(np):
    def go(binary):
        a = run(binary, np, ["anomaly", "--normal-class", "3"] + base + noreport + ["--max-steps", "8", "--out", out])
        ck = sorted(os.listdir(os.path.join(out, "checkpoints")))[-1]
        os.rename(os.path.join(out, "checkpoints", ck), os.path.join(work, "anomaly.safetensors"))
        shutil.rmtree(out)
        b = run(binary, np, ["anomaly", "--normal-class", "3", "--checkpoint", os.path.join(work, "anomaly.safetensors")]
                + base + ["--out", out])
        os.rename(os.path.join(work, "anomaly.safetensors"), os.path.join(out, "scored-with.safetensors"))
        return [a, b]
    return go

CASES = {
    "mlp3-np1-report": case_plain(1, ["--model", "mlp3", "--report-every-epoch"]),
    "mlp3-np2-shared": case_plain(2, ["--model", "mlp3", "--grad-sync", "shared"] + noreport),
    "mlp3-np2-allreduce": case_plain(2, ["--model", "mlp3", "--grad-sync", "allreduce"] + noreport),
    "mlp3-np2-bucket": case_plain(2, ["--model", "mlp3", "--bucket-size", "0.05"] + noreport),
    "mlp3-np3-shared-checksync": case_plain(3, ["--model", "mlp3", "--check-sync", "4"] + noreport),
    "sparse-kl-np2": case_plain(2, ["--model", "sparse-kl"]),
    "sparse-kl-np1": case_plain(1, ["--model", "sparse-kl"] + noreport),
    "vae-np2-report": case_plain(2, ["--model", "vae"]),
    "vae-np1": case_plain(1, ["--model", "vae"] + noreport),
    "denoising-np1": case_plain(1, ["--model", "denoising"] + noreport),
    "contractive-np2-allreduce": case_plain(2, ["--model", "contractive", "--grad-sync", "allreduce"] + noreport),
    "nan-skip-np2-shared": case_plain(2, ["--model", "mlp3", "--grad-sync", "shared", "--on-nan", "skip", "--log-every", "1"] + noreport,
                                      {"AETRAIN_TEST_NAN_GRAD": "1:3"}),
    "nan-skip-np2-allreduce": case_plain(2, ["--model", "mlp3", "--grad-sync", "allreduce", "--on-nan", "skip", "--log-every", "1"] + noreport,
                                         {"AETRAIN_TEST_NAN_GRAD": "1:3"}),
    "nan-skip-np1": case_plain(1, ["--model", "mlp3", "--on-nan", "skip"] + noreport, {"AETRAIN_TEST_NAN_GRAD": "0:5"}),
    "nan-stop-np2-shared": case_plain(2, ["--model", "mlp3", "--grad-sync", "shared", "--log-every", "1"] + noreport,
                                      {"AETRAIN_TEST_NAN_GRAD": "1:3"}),
    "nan-stop-np2-allreduce": case_plain(2, ["--model", "mlp3", "--grad-sync", "allreduce", "--log-every", "1"] + noreport,
                                         {"AETRAIN_TEST_NAN_GRAD": "0:4"}),
    "nan-stop-np1": case_plain(1, ["--model", "vae", "--log-every", "1"] + noreport, {"AETRAIN_TEST_NAN_GRAD": "0:4"}),
    "no-shm-auto-np2": case_plain(2, ["--model", "mlp3"] + noreport, mca=["--mca", "osc_sm_backing_directory", "/nonexistent-aetrain"]),
    "no-shm-shared-np2": case_plain(2, ["--model", "mlp3", "--grad-sync", "shared"] + noreport,
                                    mca=["--mca", "osc_sm_backing_directory", "/nonexistent-aetrain"]),
    "perturb-np2-checksync": case_plain(2, ["--model", "mlp3", "--check-sync", "2"] + noreport, {"AETRAIN_TEST_PERTURB": "1:4"}),
    "resume-maxsteps-np1": case_resume_maxsteps(1, ["--model", "mlp3"] + noreport),
    "resume-maxsteps-np2-shared": case_resume_maxsteps(2, ["--model", "mlp3"] + noreport),
    "preempt-resume-np2-shared": case_preempt(2, ["--model", "mlp3"] + noreport),
    "preempt-resume-np2-allreduce": case_preempt(2, ["--model", "mlp3", "--grad-sync", "allreduce"] + noreport),
    "preempt-resume-np1": case_preempt(1, ["--model", "mlp3"] + noreport),
    "preempt-epoch-end-np1": case_preempt(1, ["--model", "mlp3", "--train-limit", "64", "--epochs", "3"] + noreport),
    "preempt-epoch-end-np2": case_preempt(2, ["--model", "vae", "--train-limit", "64", "--epochs", "3"] + noreport),
    "maxsteps-at-epoch-end-np2": case_plain(2, ["--model", "mlp3", "--max-steps", "16", "--epochs", "3"] + noreport),
    "report-every-epoch-np2": case_plain(2, ["--model", "mlp3", "--report-every-epoch", "--log-every", "100"]),
    "anomaly-np1-report": case_plain(1, ["--normal-class", "3", "--model", "mlp3"], sub=["anomaly"]),
    "anomaly-checkpoint": case_anomaly_checkpoint(1),
}

def mask(rel, data):
    if rel.endswith(".aetrain.lock"):
        return b"X"
    if rel.endswith("metrics.jsonl") or rel.endswith("summary.json"):
        for k in TIME_KEYS:
            data = re.sub(rb'("%s" ?: ?)(\{[^}]*\}|\[[^\]]*\]|[-0-9.e+]+|null)' % k.encode(), rb"\1X", data)
    if rel.endswith(".html"):
        for k in TIME_KEYS:
            data = re.sub(rb"(<tr><th>%s</th><td>).*?(</td></tr>\n)" % k.encode(), rb"\1X\2", data)
        for label in [b"training samples/s", b"wall time"]:
            data = re.sub(rb'(<span class="label">%s</span><span class="value">)[^<]*' % label, rb"\1X", data)
    return data

def files(root):
    r = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            r[os.path.relpath(p, root)] = open(p, "rb").read()
    return r

total_fail = 0
os.makedirs(work, exist_ok=True)
for name, go in CASES.items():
    if only and name not in only:
        continue
    results = {}
    for which, binary in [("old", old_bin), ("new", new_bin)]:
        shutil.rmtree(out, ignore_errors=True)
        codes = go(binary)
        dest = os.path.join(work, f"{name}.{which}")
        shutil.rmtree(dest, ignore_errors=True)
        if os.path.exists(out):
            os.rename(out, dest)
        else:
            os.makedirs(dest)
        results[which] = (codes, files(dest))
    (co, fo), (cn, fn) = results["old"], results["new"]
    problems = []
    if co != cn:
        problems.append(f"exit codes {co} vs {cn}")
    if sorted(fo) != sorted(fn):
        problems.append(f"file sets differ: only old {sorted(set(fo) - set(fn))}, only new {sorted(set(fn) - set(fo))}")
    masked = 0
    for rel in sorted(set(fo) & set(fn)):
        a, b = mask(rel, fo[rel]), mask(rel, fn[rel])
        if a != fo[rel]:
            masked += 1
        if a != b:
            problems.append(f"{rel} differs")
    status = "SAME" if not problems else "DIFF"
    total_fail += bool(problems)
    print(f"{status} {name}: exit {co}, {len(fo)} files ({masked} with time fields masked)" + ("" if not problems else ": " + "; ".join(problems)), flush=True)
print("all cases identical" if total_fail == 0 else f"{total_fail} case(s) differ")
sys.exit(1 if total_fail else 0)
