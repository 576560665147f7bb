"""The Dask cluster the batch runs on: settings, the client, the environment it leaves.

:func:`dask_client` gives ``None`` (run in this process), a local cluster of single-threaded
worker processes, or a client of a running scheduler; :func:`dask_settings` resolves the
``NCLSM_SCHEDULER`` / ``NCLSM_WORKERS`` defaults from an environment its caller passes. The per-section tasks and the resumable
batch that use the client are :mod:`nclsm_utils.runner`.
"""
from __future__ import annotations

import contextlib
import logging
import os

from ..core.errors import NclsmError

log = logging.getLogger(__name__)


#: Environment variables that give a Dask scheduler / worker count to code that was not
#: passed one (``nclsm run --workers/--scheduler`` gives the kernels its batch's scheduler).
SCHEDULER_ENV = "NCLSM_SCHEDULER"
WORKERS_ENV = "NCLSM_WORKERS"
# Dask settings of the local cluster: its workers' statistical profiler (a sample of every
# thread each 10 ms), the 20 ms event-loop tick and the 0.5 s system monitor cost an idle
# two-worker cluster 13.5 % of a core, taken from the network training that runs beside it
# in a batch; with these, 1.9 % (`python benchmarks/bench_dask.py idle`). Only the
# dashboard's profile page and the blocked-event-loop warnings are lost.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def dask_settings(scheduler=None, workers=None, environ=None) -> tuple:
    """``(scheduler, workers)``: the arguments when given, else ``NCLSM_SCHEDULER`` and
    ``NCLSM_WORKERS`` of ``environ`` (a mapping the caller passes, e.g. ``os.environ`` in the
    ``nclsm`` command and the notebooks; the library never reads the environment itself),
    else ``(None, 1)`` (no Dask).

    >>> dask_settings("tcp://head:8786", 4)
    ('tcp://head:8786', 4)
    >>> dask_settings(None, None, {"NCLSM_SCHEDULER": "tcp://h:8786", "NCLSM_WORKERS": "2"})
    ('tcp://h:8786', 2)
    >>> dask_settings()
    (None, 1)
    """
    environ = {} if environ is None else environ
    if scheduler is None or scheduler == "":
        scheduler = environ.get(SCHEDULER_ENV) or None
    if workers is None:
        value = environ.get(WORKERS_ENV, "") or "1"
        try:
            workers = int(value)
        except ValueError:
            raise ValueError(f"${WORKERS_ENV} must be a whole number of Dask workers, got "
                             f"{value!r}") from None
    return scheduler, max(1, int(workers))


def scheduler_address(client) -> str:
    """The address other processes (notebook kernels) connect to for ``client``'s scheduler.

    ``client``: a :class:`distributed.Client`, a cluster object or an address string.
    """
    if isinstance(client, (str, os.PathLike)):
        return str(client)
    address = getattr(client, "scheduler_address", None)   # cluster objects
    if address is None:
        address = client.scheduler.address                 # a Client
    return str(address)


class DistributedError(NclsmError, RuntimeError):
    """The Dask cluster cannot be reached or started (the message says which address)."""


@contextlib.contextmanager
def dask_client(scheduler=None, workers: int = 1):
    """A :class:`distributed.Client`, or None for in-process runs.

    ``scheduler`` None and ``workers`` <= 1: None. ``scheduler`` None and ``workers`` > 1: a
    LocalCluster of ``workers`` single-threaded processes (closed on exit). A string: the
    address of a running scheduler. A Client or cluster object: used as it is (left open).
    """
    if scheduler is None and int(workers) <= 1:
        yield None
        return
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise DistributedError("Dask runs need the `distributed` package "
                               "(pip install 'dask[distributed]')") from error
    if scheduler is None:
        # processes, one thread each: numpy/OpenCV/torch work does not share one GIL
        with contextlib.ExitStack() as stack:
            stack.enter_context(_quiet_distributed())
            try:
                # starting worker processes sets OMP_NUM_THREADS=1 (and more) in this process's
                # environment: undone, or a notebook kernel started later would train with one
                # thread (slower, and a different model than a serial run)
                with environment_kept(), dask.config.set(LOCAL_CLUSTER_CONFIG):
                    cluster = stack.enter_context(LocalCluster(
                        n_workers=int(workers), threads_per_worker=1, processes=True,
                        dashboard_address=":0", silence_logs=logging.ERROR))
                client = stack.enter_context(Client(cluster))
            except Exception as error:  # noqa: BLE001 - say what could not start
                raise DistributedError(f"cannot start a local Dask cluster of {workers} "
                                       f"workers: {error}") from error
            yield client
        return
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if isinstance(scheduler, (str, os.PathLike)):
        address = str(scheduler)
        try:
            client = Client(address)  # waits distributed.comm.timeouts.connect (30 s)
        except Exception as error:  # noqa: BLE001 - OSError, TimeoutError, ValueError ...
            raise DistributedError(f"cannot connect to the Dask scheduler at {address!r}: "
                                   f"{type(error).__name__}: {error}. Start one with "
                                   "`dask scheduler` (and `dask worker ADDRESS`), or run "
                                   "without --scheduler") from error
        with client:
            yield client
        return
    with Client(scheduler) as client:  # a cluster object (LocalCluster, SLURMCluster, ...)
        yield client


@contextlib.contextmanager
def environment_kept(changes: dict | None = None):
    """Apply ``changes`` to ``os.environ`` for the block (a value sets the variable, None
    removes it), then undo everything the block changed (added, changed or removed
    variables)."""
    saved = dict(os.environ)
    try:
        for name, value in (changes or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name in [n for n in os.environ if n not in saved]:
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextlib.contextmanager
def _quiet_distributed(level=logging.ERROR):
    """Keep a local cluster's start/stop chatter (INFO lines, the nanny's warnings when it
    stops a worker) out of the user's log."""
    logger = logging.getLogger("distributed")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)
