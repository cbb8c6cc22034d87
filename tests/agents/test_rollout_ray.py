"""Rollouts on a local Ray cluster started here: two nodes of 1 CPU each on this host (Ray's own
multi-node test cluster), drivers and environment workers as actors, PostgreSQL the shared store.

Two drivers on two nodes write one store at once; resume; an environment worker killed
mid-episode is replaced and the run goes on; the embedded model answers through `autodidact serve`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agents.cluster import RayConfig, run_rollout_ray
from agents.llm.base import ChatModel
from agents.llm.server import create_app, running_app
from agents.rollout import RunConfig, episode_id
from autodidact.errors import ConfigError, StoreError
from autodidact.types import Completion, Message, SamplingParams
from environments.tasks import load_suite
from memory.base import TrajectoryQuery, open_store

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("ray")  # one Ray cluster per module: keep its tests on one xdist worker
# Actors share 2 CPUs: two drivers and two environment workers at half a CPU each.
HALF = RayConfig(drivers=2, env_workers=2, driver_cpus=0.5, env_worker_cpus=0.5)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray cluster of two nodes (1 CPU each) for the module; its workers can import the tests package."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield
    ray.shutdown()
    cluster.shutdown()
    if saved is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = saved


def _solution(prompt: str) -> str:
    """The reference answer of the bundled task whose prompt this is."""
    for task in load_suite("bundled"):
        if task.prompt in prompt:
            return f"```python\n{task.payload['prefix']}{task.payload['solution']}\n```"
    raise AssertionError("no bundled task in the prompt")


class PidModel:
    """Answers every bundled task correctly, signed with the driver's node and pid (a code comment)."""

    name = "pid"

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        import ray

        await asyncio.sleep(0.05)  # long enough for the two drivers' episodes to overlap
        node = ray.get_runtime_context().get_node_id()
        return [Completion(text=f"# {node} {os.getpid()}\n" + _solution(c[-1].content)) for c in conversations]

    async def aclose(self) -> None:
        pass


class KillerModel(PidModel):
    """Like PidModel, but the answer to ``doomed`` sleeps, and its environment worker is killed meanwhile.

    Only the workers of the cluster that ``owner`` (the test's process) started are killed; their
    pids are written to ``record``.
    """

    def __init__(self, doomed: str, owner: int, record: Path) -> None:
        self.doomed = doomed
        self.owner = owner
        self.record = record

    async def generate(self, conversations: Sequence[Sequence[Message]], sampling: SamplingParams) -> list[Completion]:
        if self.doomed in conversations[0][-1].content:
            # while the worker runs the sleeping answer
            threading.Timer(1.0, _kill_env_workers, (self.owner, self.record)).start()
            return [Completion(text="```python\nimport time\ntime.sleep(20)\n```")]
        return await super().generate(conversations, sampling)


def _store_fails() -> PidModel:
    raise StoreError("the disk is full; free some space and retry")


def _kill_env_workers(owner: int, record: Path) -> None:
    """SIGKILL the environment workers that descend from ``owner`` (the test's Ray cluster, whose
    processes it started), never another Ray's on this host; write their pids to ``record``."""
    import psutil

    killed = []
    for p in psutil.process_iter(["cmdline"]):
        if not any("EnvWorker" in part for part in p.info["cmdline"] or ()):
            continue
        try:
            if owner in {a.pid for a in p.parents()}:
                p.send_signal(signal.SIGKILL)
                killed.append(p.pid)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    record.write_text(" ".join(map(str, killed)))


def test_two_drivers_write_one_postgres_store(local_ray: None, postgres_url: str) -> None:
    tasks = load_suite("bundled", split="train", limit=8)
    cfg = RunConfig(concurrency=2, run_id="ray-pg")
    result = run_rollout_ray(cfg, postgres_url, HALF, tasks=tasks, model_factory=PidModel, progress=False)

    with open_store(postgres_url) as store:
        stored = store.query(TrajectoryQuery(run_id="ray-pg"))
        assert store.get_run("ray-pg") is not None
    assert sorted(t.id for t in stored) == sorted(episode_id("ray-pg", t, 0) for t in tasks)
    assert all(t.success and t.error is None for t in stored), [t.error for t in stored]
    writers = {tuple(t.steps[0].completion.split("\n")[0].split()[1:]) for t in stored if t.steps[0].completion}
    assert len(writers) == 2 and os.getpid() not in {int(pid) for _, pid in writers}  # two drivers, not this process
    assert len({node for node, _ in writers}) == 2  # on the two nodes
    assert len(result.episodes) == 8 and result.success_rate == 1.0


def test_resume_on_ray_runs_only_what_is_missing(local_ray: None, postgres_url: str) -> None:
    tasks = load_suite("bundled", split="train", limit=4)
    url = postgres_url
    cfg = RunConfig(concurrency=2, run_id="ray-resume")
    drivers_only = HALF.model_copy(update={"env_workers": 0})
    run_rollout_ray(cfg, url, drivers_only, tasks=tasks[:2], model_factory=PidModel, progress=False)
    again = run_rollout_ray(cfg, url, drivers_only, tasks=tasks, model_factory=PidModel, progress=False, resume=True)
    assert again.skipped == 2 and len(again.episodes) == 2
    with open_store(url) as store:
        assert store.count(TrajectoryQuery(run_id="ray-resume")) == 4


def test_a_killed_environment_worker_is_replaced_and_the_run_goes_on(
    local_ray: None, postgres_url: str, tmp_path: Path
) -> None:
    tasks = load_suite("bundled", split="train", limit=4)
    cfg = RunConfig(concurrency=1, run_id="ray-kill", episode_timeout_s=300)  # room for the restart on a busy host
    one_each = RayConfig(drivers=1, env_workers=1, driver_cpus=0.5, env_worker_cpus=0.5)
    url = postgres_url
    doomed, me, record = tasks[1], os.getpid(), tmp_path / "killed"
    run_rollout_ray(
        cfg, url, one_each, tasks=tasks, model_factory=lambda: KillerModel(doomed.prompt, me, record), progress=False
    )
    killed = [int(pid) for pid in record.read_text().split()]
    assert killed, "found no environment worker of this test's cluster to kill"

    with open_store(url) as store:
        by_task = {t.task.id: t for t in store.query(TrajectoryQuery(run_id="ray-kill"))}
    assert len(by_task) == 4
    lost = by_task.pop(doomed.id)
    errors = " ".join(filter(None, [lost.error, *(s.error for s in lost.steps)]))
    assert not lost.success and "the environment worker died mid-episode" in errors, errors
    assert all(t.success and t.error is None for t in by_task.values()), [t.error for t in by_task.values()]


@pytest.mark.slow
def test_the_embedded_model_answers_through_a_server(
    local_ray: None, embedded_model: ChatModel, postgres_url: str
) -> None:
    tasks = load_suite("bundled", split="train", limit=4)
    url = postgres_url
    with running_app(create_app(embedded_model, "embedded")) as root:
        cfg = RunConfig(
            model=root, concurrency=2, run_id="ray-real", sampling=SamplingParams(max_tokens=48, stop=("\n```\n",))
        )
        result = run_rollout_ray(cfg, url, HALF.model_copy(update={"env_workers": 0}), tasks=tasks, progress=False)
    with open_store(url) as store:
        stored = store.query(TrajectoryQuery(run_id="ray-real"))
    assert len(stored) == 4 and len(result.episodes) == 4
    for t in stored:
        assert t.error is None and t.steps[0].completion and t.steps[0].observation is not None
        assert t.policy.backend  # the OpenAI-compatible client's name: answered over HTTP


def test_what_the_cluster_cannot_place_or_share_is_refused(local_ray: None, tmp_path: Path, postgres_url: str) -> None:
    tasks = load_suite("bundled", limit=4)
    with pytest.raises(ConfigError, match="need 4 CPUs and 0 GPUs; the cluster has 2 CPUs"):
        run_rollout_ray(RunConfig(), postgres_url, RayConfig(drivers=4), tasks=tasks, model_factory=PidModel)
    with pytest.raises(ConfigError, match=r"2 nodes but the store is a SQLite file .* use a shared PostgreSQL store"):
        run_rollout_ray(RunConfig(), str(tmp_path / "s.db"), HALF, tasks=tasks, model_factory=PidModel)


def test_a_drivers_own_error_reaches_the_caller_as_itself(local_ray: None, postgres_url: str) -> None:
    one = HALF.model_copy(update={"drivers": 1, "env_workers": 0})
    with pytest.raises(StoreError) as raised:
        run_rollout_ray(
            RunConfig(run_id="ray-err"),
            postgres_url,
            one,
            tasks=load_suite("bundled", limit=2),
            model_factory=_store_fails,
            progress=False,
        )
    assert str(raised.value) == "the disk is full; free some space and retry"  # not Ray's wrapper with a traceback
