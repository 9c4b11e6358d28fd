"""Federated digits as a Flower App (`flwr run`), plain FedAvg against nncodec, on both of Flower's engines.

    python examples/flower_digits/run.py                          # both engines, 10 rounds, plain then topk
    python examples/flower_digits/run.py --engine deployment --rounds 3 --json out.json
    python examples/flower_digits/run.py --engine simulation --modes plain,topk,3lc

For each engine the script starts Flower's own processes on 127.0.0.1, on free
ports, with a Flower home (``FLWR_HOME``) of its own in a temporary folder:

* ``simulation``: ``flower-superlink --insecure --simulation``; ``flwr run`` then
  runs the ServerApp and ``--clients`` ClientApps in the simulation engine (Ray);
* ``deployment``: ``flower-superlink --insecure`` and ``--clients``
  ``flower-supernode --insecure --superlink 127.0.0.1:PORT`` processes, each with
  its ``partition-id``; the SuperLink starts the ServerApp and every SuperNode a
  ClientApp process per message.

Then, for each mode, ``flwr run . <connection> --stream --run-config ...`` submits
this folder's app (pyproject.toml, server_app.py, client_app.py, task.py). The
ServerApp writes its numbers (payload bytes each way and the test accuracy per
round) to a JSON file that the script reads. Every wait has a deadline
(``--timeout``), and the Flower processes are stopped, process group by process
group, when the script ends, fails or is interrupted.

The bytes printed are the arrays' payloads in the Flower messages; message
framing and config entries come on top, the same in both runs.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ENGINES = ("simulation", "deployment")
MODES = ("plain", "topk", "3lc", "scalar")
CONNECTION = "nncodec-example"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _exe(name: str) -> str:
    """A Flower command from the running interpreter's environment (then from PATH)."""
    cand = os.path.join(os.path.dirname(sys.executable), name)
    found = cand if os.path.exists(cand) else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: pip install 'flwr[simulation]==1.41.0'")
    return found


class Federation:
    """Flower's processes for one engine on 127.0.0.1; ``run(mode, ...)`` submits the app once.

    Use as a context manager: leaving it stops every process it started (and
    their children: each runs in a process group of its own).
    """

    def __init__(self, engine: str, *, clients: int = 2, timeout: float = 300.0, log: bool = False):
        if engine not in ENGINES:
            raise ValueError(f"engine = {engine!r}: one of {', '.join(ENGINES)}")
        self.engine, self.clients, self.timeout, self.log = engine, int(clients), float(timeout), log
        self.procs: list = []
        self.home = tempfile.mkdtemp(prefix="nncodec-flwr-")
        self.port = 0

    # -- processes

    def _env(self) -> dict:
        return dict(os.environ, FLWR_HOME=self.home, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
                    OMP_NUM_THREADS="1", GRPC_VERBOSITY="ERROR", RAY_DEDUP_LOGS="0",
                    PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))

    def _spawn(self, name: str, args: list) -> subprocess.Popen:
        out = None if self.log else open(os.path.join(self.home, f"{name}.log"), "wb")
        p = subprocess.Popen([_exe(args[0])] + args[1:], env=self._env(), cwd=self.home, stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        if out is not None:
            out.close()
        self.procs.append(p)
        return p

    def _wait_listening(self, port: int, proc: subprocess.Popen, what: str, deadline: float) -> None:
        while not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {proc.returncode}{self._tail(what)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} in time{self._tail(what)}")
            time.sleep(0.2)

    def _tail(self, name: str) -> str:
        path = os.path.join(self.home, f"{name}.log")
        if not os.path.exists(path):
            return ""
        with open(path, "rb") as f:
            return "\n" + f.read()[-3000:].decode("utf-8", "replace")

    def start(self) -> "Federation":
        deadline = time.monotonic() + self.timeout
        self.port = free_port()
        with open(os.path.join(self.home, "config.toml"), "w") as f:
            f.write(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                    f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        link = ["flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        if self.engine == "simulation":
            link.append("--simulation")
        self._wait_listening(self.port, self._spawn("superlink", link), "superlink", deadline)
        if self.engine == "deployment":
            for i in range(self.clients):
                port = free_port()
                node = self._spawn(f"supernode{i}", [
                    "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                    "--host", "127.0.0.1", "--port", str(port),
                    "--node-config", f"partition-id={i} num-partitions={self.clients}",
                    "--max-wait-time", str(self.timeout)])
                self._wait_listening(port, node, f"supernode{i}", deadline)
        return self

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:  # what is left of the group (ServerApp, SuperExec, ClientApp processes)
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if p.poll() is None:
                p.wait()
        self.procs.clear()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self):
        atexit.register(self.close)
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()
        atexit.unregister(self.close)

    # -- one run of the app

    def run(self, mode: str, *, rounds: int = 10, epochs: int = 2, seed: int = 0) -> dict:
        """Submit the app with ``codec = mode``; returns the ServerApp's numbers."""
        if mode not in MODES:
            raise ValueError(f"mode = {mode!r}: one of {', '.join(MODES)}")
        out = os.path.join(self.home, f"result_{mode}_{time.monotonic_ns()}.json")
        cfg = (f"codec='{mode}' num-server-rounds={int(rounds)} local-epochs={int(epochs)} "
               f"num-clients={self.clients} seed={int(seed)} round-timeout={self.timeout} results-file='{out}'")
        cmd = [_exe("flwr"), "run", HERE, CONNECTION, "--stream", "--run-config", cfg]
        if self.engine == "simulation":  # one CPU per ClientApp so that the clients train side by side
            cmd += ["--federation-config", f"num-supernodes={self.clients} client-resources-num-cpus=1"]
        log = None if self.log else open(os.path.join(self.home, f"flwr-run-{mode}.log"), "wb")
        t0 = time.monotonic()
        try:
            p = subprocess.Popen(cmd, env=self._env(), cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            self.procs.append(p)
            try:
                p.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"the {self.engine} {mode} run did not finish within {self.timeout} s"
                                   f"{self._tail(f'flwr-run-{mode}')}") from None
        finally:
            if log is not None:
                log.close()
        # --stream returns when the run's logs end; the ServerApp writes its file just before
        while not os.path.exists(out) and time.monotonic() - t0 < self.timeout:
            if p.returncode != 0:
                break
            time.sleep(0.2)
        if not os.path.exists(out):
            raise RuntimeError(f"the {self.engine} {mode} run wrote no result (flwr run exit status "
                               f"{p.returncode}){self._tail(f'flwr-run-{mode}')}{self._tail('superlink')}")
        with open(out) as f:
            res = json.load(f)
        res["engine"] = self.engine
        res["seconds"] = round(time.monotonic() - t0, 1)
        return res


def run_engine(engine: str, modes, *, clients: int = 2, rounds: int = 10, epochs: int = 2,
               timeout: float = 600.0, seed: int = 0, log: bool = False) -> list:
    """Every mode on one engine, one federation (SuperLink, SuperNodes) for all of them."""
    with Federation(engine, clients=clients, timeout=timeout, log=log) as fed:
        return [fed.run(m, rounds=rounds, epochs=epochs, seed=seed) for m in modes]


def run_once(mode: str, *, clients: int, rounds: int, epochs: int, timeout: float, workdir: str = None,
             seed: int = 0, log: bool = False, engine: str = "deployment") -> dict:
    """One run of one mode on a federation of its own (the call tools/bench_federated.py makes)."""
    return run_engine(engine, [mode], clients=clients, rounds=rounds, epochs=epochs, timeout=timeout,
                      seed=seed, log=log)[0]


def report(results: list) -> str:
    lines = []
    for r in results:
        plain = next((p for p in results if p["mode"] == "plain" and p.get("engine") == r.get("engine")), None)
        where = f"{r['engine']} engine, " if r.get("engine") else ""
        lines.append(f"== {r['mode']}: {where}{r['clients']} clients, model {r['model_bytes']} bytes as float32")
        lines.append(f"{'round':>5} {'uplink B':>10} {'downlink B':>11} {'accuracy':>9}")
        for x in r["rounds"]:
            acc = "" if x["accuracy"] is None else f"{x['accuracy']:.4f}"
            lines.append(f"{x['round']:>5} {x['uplink']:>10} {x['downlink']:>11} {acc:>9}")
        up = sum(x["uplink"] for x in r["rounds"])
        line = f"total uplink {up} B, final accuracy {r['accuracy']:.4f}"
        if plain is not None and r is not plain and up:
            line += f", {sum(x['uplink'] for x in plain['rounds']) / up:.1f}x less uplink than plain"
        lines.append(line)
    return "\n".join(lines)


def summary(results: list) -> str:
    """One line per engine and mode: final accuracy and uplink bytes against plain FedAvg."""
    lines = [f"{'engine':<11} {'mode':<7} {'uplink B':>10} {'vs plain':>9} {'accuracy':>9} {'seconds':>8}"]
    for r in results:
        plain = next((p for p in results if p["mode"] == "plain" and p.get("engine") == r.get("engine")), None)
        up = sum(x["uplink"] for x in r["rounds"])
        ratio = (f"{sum(x['uplink'] for x in plain['rounds']) / up:.1f}x" if plain is not None and up else "")
        lines.append(f"{r.get('engine', ''):<11} {r['mode']:<7} {up:>10} {ratio:>9} {r['accuracy']:>9.4f} "
                     f"{r.get('seconds', 0):>8}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="both", choices=["both", *ENGINES])
    ap.add_argument("--mode", default="topk", choices=[m for m in MODES if m != "plain"],
                    help="the nncodec mode run after plain")
    ap.add_argument("--modes", default=None, help="comma-separated modes to run (default plain,MODE)")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for each start and each run")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    ap.add_argument("--verbose", action="store_true", help="show the Flower processes' logs")
    args = ap.parse_args(argv)
    modes = (args.modes or f"plain,{args.mode}").split(",")
    engines = ENGINES if args.engine == "both" else (args.engine,)
    # SIGTERM (a timeout's kill, a CI stop) runs the same clean-up as the end of the script
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    results = []
    for e in engines:
        results += run_engine(e, modes, clients=args.clients, rounds=args.rounds, epochs=args.epochs,
                              timeout=args.timeout, seed=args.seed, log=args.verbose)
    print(report(results))
    print()
    print(summary(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
