"""Real node processes on a test network, with link faults applied from outside (W7, W8, P5).

Topology, for nodes ``k = 0 .. n-1`` (every name carries a token unique to the run):

* namespace ``<token>-k`` holds node k; its service address ``10.200.0.(k+1)/32`` sits on
  ``lo`` and the node listens there on port 8080;
* each pair (a, b) has a veth link of its own (``<token><a><b>`` in a's namespace, ``<token><b><a>``
  in b's) with a /32 route to the other's service address through it, so one pair can be
  cut or rate-limited without touching any other pair;
* the test process talks to node k from threads that entered namespace k (``setns(2)`` is
  per thread), over node k's own address: cutting node k's links never cuts the test off
  from it, and nothing is added to the caller's namespace.

Faults: :meth:`Namespaces.cut` sets node k's ends of its links down (k gets "network
unreachable" at once; its peers keep a link without carrier, their packets vanish and their
requests time out); :meth:`Namespaces.heal` sets them up and restores the routes;
:meth:`Namespaces.shape` puts a ``tbf`` rate limit on both ends of one link (``netem`` is
not used: not every kernel has it).

Fallback: where namespaces cannot be made (not root, no ``ip``, EPERM) :func:`open_testbed`
runs the nodes on 127.0.0.1 and :class:`Testbed` simulates a cut by SIGSTOP/SIGCONT of the
node and a slow link by a stop/continue duty cycle of one of its ends. That is a weaker
test (a stopped node also stops answering its own clients); ``Testbed.fallback`` says why
it was used, and tests must report it loudly, never skip.

Invariants: only addresses in 10.200.0.0/24, only on links inside namespaces made here;
:meth:`Testbed.close` stops every process it started (by pid) and deletes every namespace
(and with it every link) it made, also after a partial set-up; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ledger.errors import UnavailableError
from node.client import NodeClient
from node.cluster import find_softhsm_module, free_ports
from node.config import (
    CONFIG_NAME,
    KeysSection,
    LimitsSection,
    NodeConfig,
    NodeSection,
    PeerConfig,
    ReplicationSection,
    dump_config,
)

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NODE_PORT = 8080
SUBNET = "10.200.0"
ROOT_DIR = Path(__file__).resolve().parents[2]
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(Exception):
    """A namespace, link or qdisc could not be made or changed (the command's stderr says why)."""


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise NetnsError(f"{' '.join(args)}: {e}") from e
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def _enter(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (a ThreadPoolExecutor initializer)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _health(client: NodeClient) -> int:
    return client.request("GET", "/healthz").status


class Namespaces:
    """``n`` network namespaces joined pairwise by veth links; see the module doc."""

    def __init__(self, token: str, n: int) -> None:
        self.token = token
        self.n = n
        self._made: list[str] = []
        self._pools: dict[int, ThreadPoolExecutor] = {}

    @classmethod
    def create(cls, token: str, n: int) -> Namespaces:
        """Make the namespaces, links, addresses and routes (all undone if any step fails).

        Raises:
            NetnsError: a step failed (e.g. EPERM when not root).
        """
        if not 2 <= n <= 9:
            raise ValueError(f"2..9 namespaces, not {n}")
        ns = cls(token, n)
        try:
            ns._build()
            ns.run(0, lambda: None)  # setns works here too
        except BaseException:
            ns.close()
            raise
        return ns

    def name(self, k: int) -> str:
        """Namespace of node ``k``."""
        return f"{self.token}-{k}"

    def address(self, k: int) -> str:
        """Service address of node ``k``."""
        return f"{SUBNET}.{k + 1}"

    def link(self, a: int, b: int) -> str:
        """Interface name of ``a``'s end of the a-b link (at most 15 characters)."""
        return f"{self.token}{a}{b}"

    def _build(self) -> None:
        for k in range(self.n):
            _ip("ip", "netns", "add", self.name(k))
            self._made.append(self.name(k))
            _ip("ip", "-n", self.name(k), "link", "set", "lo", "up")
            _ip("ip", "-n", self.name(k), "addr", "add", f"{self.address(k)}/32", "dev", "lo")
        for a in range(self.n):
            for b in range(a + 1, self.n):
                _ip("ip", "-n", self.name(a), "link", "add", self.link(a, b), "type", "veth",
                    "peer", "name", self.link(b, a), "netns", self.name(b))
                self._up(a, b)
                self._up(b, a)

    def _up(self, a: int, b: int) -> None:
        _ip("ip", "-n", self.name(a), "link", "set", self.link(a, b), "up")
        _ip("ip", "-n", self.name(a), "route", "replace", f"{self.address(b)}/32", "dev", self.link(a, b),
            "src", self.address(a))

    def cut(self, k: int) -> None:
        """Partition node ``k``: its ends of all its links go down."""
        for j in range(self.n):
            if j != k:
                _ip("ip", "-n", self.name(k), "link", "set", self.link(k, j), "down")

    def heal(self, k: int) -> None:
        """Undo :meth:`cut` (a link going down took its routes with it: put them back)."""
        for j in range(self.n):
            if j != k:
                self._up(k, j)

    def shape(self, a: int, b: int, kbit: int) -> None:
        """Rate-limit the a-b link to ``kbit`` kbit/s each way (tbf, 500 ms of queue)."""
        for x, y in ((a, b), (b, a)):
            _ip("tc", "-n", self.name(x), "qdisc", "replace", "dev", self.link(x, y), "root", "tbf",
                "rate", f"{kbit}kbit", "burst", "4kb", "latency", "500ms")

    def unshape(self, a: int, b: int) -> None:
        """Remove the rate limit of the a-b link (no error if there is none)."""
        for x, y in ((a, b), (b, a)):
            with contextlib.suppress(NetnsError):
                _ip("tc", "-n", self.name(x), "qdisc", "del", "dev", self.link(x, y), "root")

    def prefix(self, k: int) -> list[str]:
        """Command prefix that runs a program in node ``k``'s namespace."""
        return ["ip", "netns", "exec", self.name(k)]

    def run(self, k: int, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
        """``fn(*args)`` in a thread inside node ``k``'s namespace."""
        pool = self._pools.get(k)
        if pool is None:
            pool = self._pools[k] = ThreadPoolExecutor(
                max_workers=4, initializer=_enter, initargs=(self.name(k),), thread_name_prefix=self.name(k),
            )
        return pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        """Stop the threads and delete every namespace made (their links go with them)."""
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()
        for name in reversed(self._made):
            with contextlib.suppress(NetnsError):
                _ip("ip", "netns", "del", name)
        self._made.clear()


@dataclass
class BedNode:
    """One node of a testbed: who it is, where its files are, its process."""

    index: int
    org: str
    origin: str
    vkey: str
    dir: Path
    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.dir / CONFIG_NAME

    @property
    def log(self) -> Path:
        return self.dir / "node.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"node {self.index} is not running"
        return self.proc.pid


class _DutyCycle(threading.Thread):
    """Loopback fallback for a slow link: stop a process for ``stopped`` s of every ``period`` s."""

    def __init__(self, pid: int, *, stopped: float = 0.35, period: float = 0.4) -> None:
        super().__init__(name=f"duty-cycle-{pid}", daemon=True)
        self.pid, self.stopped, self.period = pid, stopped, period
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                self.done.wait(self.stopped)
                os.kill(self.pid, signal.SIGCONT)
                self.done.wait(self.period - self.stopped)
        except ProcessLookupError:
            return
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)


class Testbed:
    """Node processes on a test network (or on loopback, see :attr:`fallback`)."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path, ns: Namespaces | None, fallback: str | None) -> None:
        self.root = root
        self.ns = ns
        self.fallback = fallback
        self.nodes: list[BedNode] = []
        self.stopped: set[int] = set()  # SIGSTOPped by the loopback fallback
        self._cycles: dict[tuple[int, int], _DutyCycle] = {}
        self._pools: dict[int, ThreadPoolExecutor] = {}

    @property
    def mode(self) -> str:
        """``netns`` or ``loopback (fallback: ...)``."""
        return "netns" if self.ns is not None else f"LOOPBACK FALLBACK ({self.fallback})"

    # --- set-up --------------------------------------------------------------------------------

    def prepare(self, orgs: Sequence[str], *, replication: ReplicationSection, limits: LimitsSection) -> None:
        """Make each node's SoftHSM2 token, root record, log key, store and config (in parallel)."""
        module = find_softhsm_module()
        origins = [f"{org}.turtles.test/log" for org in orgs]
        children = []
        for org, origin in zip(orgs, origins, strict=True):
            d = self.root / org
            d.mkdir(parents=True)
            env = {**os.environ, "SOFTHSM2_CONF": str(d / "softhsm" / "softhsm2.conf")}
            children.append((d, env, subprocess.Popen(
                [sys.executable, "-m", "node.cluster", "init-node", "--dir", str(d), "--org", org,
                 "--origin", origin, "--module", module],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT_DIR,
            )))
        infos = []
        for d, _, child in children:
            out, err = child.communicate(timeout=120)
            if child.returncode != 0:
                raise RuntimeError(f"preparing {d.name} failed: {err.decode(errors='replace')[-2000:]}")
            infos.append(json.loads(out))
        n = len(orgs)
        if self.ns is not None:
            hosts, ports = [self.ns.address(k) for k in range(n)], [NODE_PORT] * n
        else:
            hosts, ports = ["127.0.0.1"] * n, free_ports(n)
        urls = [f"http://{h}:{p}" for h, p in zip(hosts, ports, strict=True)]
        for k, ((d, env, _), info) in enumerate(zip(children, infos, strict=True)):
            peers = tuple(PeerConfig(urls[j], origins[j], infos[j]["vkey"]) for j in range(n) if j != k)
            config = NodeConfig(
                node=NodeSection(origin=origins[k], org=orgs[k], data_dir=d / "data", host=hosts[k], port=ports[k]),
                keys=KeysSection(log_key=str(d / "keys" / "log.pem"), root_key=info["root_key"],
                                 pkcs11_module=module, pin_file=d / "pin.txt"),
                limits=limits, peers=peers, replication=replication,
            )
            (d / CONFIG_NAME).write_text(dump_config(config))
            self.nodes.append(BedNode(k, orgs[k], origins[k], info["vkey"], d, urls[k], env))

    # --- processes -----------------------------------------------------------------------------

    def start(self, k: int) -> None:
        """Start node ``k`` (it resumes from its store) without waiting."""
        node = self.nodes[k]
        assert node.proc is None or node.proc.poll() is not None, f"node {k} is running"
        ready = node.dir / "ready.json"
        ready.unlink(missing_ok=True)
        prefix = self.ns.prefix(k) if self.ns is not None else []
        with open(node.log, "ab") as log:
            # `ip netns exec` execs the program: the pid is the node's own.
            node.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "node.server", "--config", str(node.config),
                 "--ready-file", str(ready)],
                env=node.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=node.dir,
            )

    def wait_healthy(self, k: int, timeout: float = 30.0) -> None:
        """Wait until node ``k`` answers ``/healthz``; fail with its log tail."""
        node = self.nodes[k]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert node.proc is not None and node.proc.poll() is None, f"node {k} exited: {self.tail(k)}"
            try:
                status = self.run(k, _health, self.client(k, timeout=2))
            except UnavailableError:
                status = 0  # not listening yet
            if status == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"node {k} not healthy after {timeout:g} s: {self.tail(k)}")

    def kill(self, k: int) -> None:
        """SIGKILL node ``k`` and reap it."""
        node = self.nodes[k]
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(20)
        self.stopped.discard(k)

    def stop(self, k: int, timeout: float = 20.0) -> None:
        """SIGTERM node ``k`` (SIGKILL after ``timeout``) and reap it."""
        node = self.nodes[k]
        if node.proc is None or node.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.proc.pid, signal.SIGCONT)
            node.proc.terminate()
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(10)

    def tail(self, k: int, limit: int = 2000) -> str:
        """The end of node ``k``'s log."""
        try:
            return self.nodes[k].log.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    # --- talking to nodes ------------------------------------------------------------------------

    def client(self, k: int, *, timeout: float = 10.0) -> NodeClient:
        """A client of node ``k`` (use it through :meth:`run`: its sockets must be made in k's namespace)."""
        node = self.nodes[k]
        return NodeClient(node.url, vkey=node.vkey, timeout=timeout)

    def run(self, k: int, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
        """``fn(*args)`` where node ``k`` is reachable (a thread in its namespace)."""
        if self.ns is not None:
            return self.ns.run(k, fn, *args, timeout=timeout)
        pool = self._pools.get(k)
        if pool is None:
            pool = self._pools[k] = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"node{k}")
        return pool.submit(fn, *args).result(timeout)

    def reachable(self, k: int) -> bool:
        """Whether the test can talk to node ``k`` now (not while the fallback has it stopped)."""
        return k not in self.stopped

    # --- faults ------------------------------------------------------------------------------------

    def _signal(self, k: int, sig: signal.Signals) -> None:
        proc = self.nodes[k].proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def cut(self, k: int) -> None:
        """Partition node ``k`` from every other node (fallback: stop it)."""
        if self.ns is not None:
            self.ns.cut(k)
        else:
            self._signal(k, signal.SIGSTOP)
            self.stopped.add(k)

    def heal(self, k: int) -> None:
        """End the partition of node ``k``."""
        if self.ns is not None:
            self.ns.heal(k)
        else:
            self.stopped.discard(k)
            self._signal(k, signal.SIGCONT)

    def shape(self, a: int, b: int, kbit: int) -> None:
        """Make the a-b link slow (fallback: node ``b`` runs only an eighth of the time)."""
        if self.ns is not None:
            self.ns.shape(a, b, kbit)
        else:
            cycle = self._cycles[a, b] = _DutyCycle(self.nodes[b].pid)
            cycle.start()

    def unshape(self, a: int, b: int) -> None:
        """Undo :meth:`shape`."""
        if self.ns is not None:
            self.ns.unshape(a, b)
        elif (cycle := self._cycles.pop((a, b), None)) is not None:
            cycle.done.set()
            cycle.join(5)

    # --- tear-down ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop faults and processes, then delete the namespaces."""
        for a, b in list(self._cycles):
            self.unshape(a, b)
        for k in range(len(self.nodes)):
            self.stop(k)
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        if self.ns is not None:
            self.ns.close()


@contextlib.contextmanager
def open_testbed(
    root: Path, orgs: Sequence[str], *, replication: ReplicationSection, limits: LimitsSection,
) -> Iterator[Testbed]:
    """Nodes named ``orgs``, each a peer of every other, running and healthy; closed on exit.

    Namespaces are used unless they cannot be made or ``TURTLES_NETNS=0``; then the nodes
    run on loopback and ``Testbed.fallback`` says why.
    """
    ns: Namespaces | None = None
    fallback: str | None = None
    if os.environ.get("TURTLES_NETNS", "1") == "0":
        fallback = "TURTLES_NETNS=0"
    else:
        try:
            ns = Namespaces.create("tn" + secrets.token_hex(3), len(orgs))
        except (NetnsError, OSError, RuntimeError) as e:
            fallback = f"no network namespaces: {e}"[:300]
    bed = Testbed(root, ns, fallback)
    try:
        bed.prepare(orgs, replication=replication, limits=limits)
        for k in range(len(orgs)):
            bed.start(k)
        for k in range(len(orgs)):
            bed.wait_healthy(k, timeout=60)
        yield bed
    finally:
        bed.close()


__all__ = ["BedNode", "Namespaces", "NetnsError", "Testbed", "open_testbed"]
