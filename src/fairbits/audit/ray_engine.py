"""The Ray engine: the local engine's jobs, run by a Ray Data pipeline across a cluster.

The pipeline streams the run's :class:`~fairbits.audit.work.BatchJob`\\ s (one per batch of
``batch_size`` originals with work left) through two actor pools::

    jobs (driver) → Prepare actors (1 CPU each: decode, face analysis, exact coding)
                  → Finish actors (1 GPU each when the cluster has GPUs, else 1 CPU:
                    fast-mode forward passes, measures, realism features)
                  → driver (stores each result as it arrives: Driver.commit)

Both pools grow with the work waiting for them, up to the cluster's CPUs (and GPUs). Each
actor builds an :class:`~fairbits.audit.work.AuditWorker` once, so models load once per
actor, and runs the very code the local engine runs: the rows are the same.

Where things live: the driver (the process running ``fairbits audit``) writes every part,
face analysis and feature file, so the run directory needs to exist only on its machine.
Workers read the dataset's images by the manifest's paths: every node must see the dataset
at the same path (a shared filesystem, or a copy in the same place). Stored face analyses
that a resumed run needs are served to workers by a small actor on the driver's node.
"""

from __future__ import annotations

import os
import pickle

from fairbits.audit.faces import FaceStore
from fairbits.audit.plan import AuditPlan
from fairbits.audit.store import RunStore
from fairbits.audit.work import AuditWorker, BatchJob
from fairbits.errors import FairbitsError, SpecError

RAY_EXTRA = "pip install 'fairbits[ray]'"


def import_ray():
    """The ``ray`` module with Ray Data, or a SpecError that names the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise SpecError(f"engine: ray needs Ray Data, which is not installed here ({e}); install the "
                        f"extra with `{RAY_EXTRA}` or use engine: local") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``), or
    start a private local one; an already connected session is reused. Returns whether
    this call started the connection (and so must end it)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # "local": never attach to whatever cluster /tmp/ray/ray_current_cluster names
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise FairbitsError(f"cannot connect to a Ray cluster at {address or 'a new local cluster'}: {e}. "
                            "Start one with `ray start --head` (then --address auto), or leave out "
                            "--address for a private local cluster") from None
    return True


def _stored_faces_actor(ray, run_dir):
    """An actor on the driver's node that reads stored face analyses for workers."""

    @ray.remote(num_cpus=0)
    class StoredFaces:
        def __init__(self, root):
            self.store = FaceStore(root)

        def rows(self, keys):
            return self.store.rows(keys)

    node = ray.get_runtime_context().get_node_id()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return StoredFaces.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        str(run_dir))


class Prepare:
    """Ray Data stage 1 (CPU): :meth:`AuditWorker.prepare` on pickled jobs."""

    def __init__(self, spec, threads: int, faces=None):
        import torch

        torch.set_num_threads(spec.torch_threads or max(1, threads))
        self.worker = AuditWorker.from_spec(spec, device="cpu", threads=1)
        self.faces = faces

    def __call__(self, batch: dict) -> dict:
        import numpy as np
        import ray

        out = []
        for blob in batch["job"]:
            job: BatchJob = pickle.loads(blob)
            if job.stored_faces is None and self.faces is not None:
                job.stored_faces = ray.get(self.faces.rows.remote(list(job.keys().values())))
            out.append(pickle.dumps(self.worker.prepare(job), protocol=5))
        return {"prepared": np.array(out, dtype=object)}


class Finish:
    """Ray Data stage 2 (a GPU, or CPUs): :meth:`AuditWorker.finish` on prepared jobs."""

    def __init__(self, spec, threads: int):
        import torch

        torch.set_num_threads(spec.torch_threads or max(1, threads))
        self.worker = AuditWorker.from_spec(spec)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out = [pickle.dumps(self.worker.finish(pickle.loads(b)), protocol=5) for b in batch["prepared"]]
        return {"result": np.array(out, dtype=object)}


def _pools(ray) -> dict:
    """Resources and sizes of the two actor pools for this cluster."""
    res = ray.cluster_resources()
    cpus, gpus = int(res.get("CPU", 0)), int(res.get("GPU", 0))
    if cpus < 1:
        raise FairbitsError("the Ray cluster has no CPU to run on; start its nodes with --num-cpus")
    pool = ray.data.ActorPoolStrategy
    per = 1.0 if cpus >= 2 else cpus / 2  # both pools must fit at their smallest
    prepare = {"num_cpus": per, "compute": pool(min_size=1, max_size=max(1, cpus - (1 if gpus else 0)))}
    if gpus:
        finish = {"num_cpus": 1, "num_gpus": 1, "compute": pool(min_size=1, max_size=gpus), "threads": 1}
    else:
        finish = {"num_cpus": per, "compute": pool(min_size=1, max_size=max(1, cpus)), "threads": max(1, int(per))}
    return {"prepare": prepare, "finish": finish}


def run_cells_ray(plan: AuditPlan, store: RunStore, *, progress: bool = True, address: str | None = None,
                  stop_after_batches: int | None = None, num_cpus: int | None = None) -> bool:
    """Code and measure every missing (image, cell) pair on a Ray cluster; True when every
    cell is finished. ``num_cpus`` sizes a private local cluster (default: this machine's)."""
    from fairbits.audit.runner import Driver, _progress

    ray = import_ray()
    driver = Driver(plan, store, lookup_faces=False)
    jobs = [pickle.dumps(j, protocol=5) for j in driver.jobs()]
    if not jobs:
        driver.finish()
        return True
    started = connect(address, num_cpus)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        pools = _pools(ray)
        faces = _stored_faces_actor(ray, store.root) if plan.needs_faces else None
        fin = dict(pools["finish"])
        threads = fin.pop("threads")
        ds = (ray.data.from_items([{"job": j} for j in jobs], override_num_blocks=len(jobs))
              .map_batches(Prepare, batch_size=1, fn_constructor_args=(plan.spec, 1, faces), **pools["prepare"])
              .map_batches(Finish, batch_size=1, fn_constructor_args=(plan.spec, threads), **fin))
        with _progress(progress) as bar:
            task = bar.add_task("auditing (ray)", total=driver.total)
            for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
                for blob in batch["result"]:
                    driver.commit(pickle.loads(blob), progress=lambda n: bar.advance(task, n))
                if stop_after_batches is not None and driver.parts_written >= stop_after_batches:
                    return False
    finally:
        if started:
            ray.shutdown()
    driver.finish()
    return True
