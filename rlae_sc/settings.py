"""Session settings, ``rl.settings``: progress bars, verbosity, block size, device and threads.

One object, :data:`settings`, read by the passes when a call leaves a choice to the session (a pass without
``chunk_size``, a device ``"auto"``), and changed by assignment (``rl.settings.block_size = 4096``) or for a
``with`` block (``rl.settings.override(progress=False)``). The stages' parameters (:mod:`rlae_sc.params`) are
not settings: they are recorded with each result. Importing this module imports neither torch nor
threadpoolctl; setting ``threads`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class Settings:
    """The session's settings (one instance: ``rl.settings``).

    Attributes
    ----------
    progress
        Progress bars of the passes over cells: ``None`` (default) where they can be seen (stderr is a terminal,
        or a Jupyter kernel with ipywidgets, which shows widget bars); ``True`` always; ``False`` never.
    verbosity
        The level of the ``rlae_sc`` logger (an int, or a name such as ``"info"``); ``logging.NOTSET`` (0,
        default) takes the root logger's. Messages go to the handlers of :mod:`logging` (the command line adds
        one to stderr and sets ``"info"``).
    block_size
        Rows (cells) per block of a pass (:func:`rlae_sc.engine.run_pass`) when the call gives no
        ``chunk_size`` (default 16,384): memory is about one dense block, 128 MiB of float32 at 2,000 genes.
        The scatter pass takes larger blocks of an in-memory array already in its precision (they are views),
        and copies smaller ones to a CUDA device (:mod:`rlae_sc.products`).
    device
        The torch device that a device ``"auto"`` (the default of :attr:`rlae_sc.params.TrainParams.device` and
        the functions that take one) stands for: ``"auto"`` (default): CUDA when available, else the CPU;
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``: that device.
    threads
        Threads of torch and of the BLAS and OpenMP libraries (through threadpoolctl) in this process;
        ``None`` (default): each library's own (set by ``OMP_NUM_THREADS`` and the like, or all cores).
        Dask workers run one BLAS thread each whatever this is.
    """

    __slots__ = ("_progress", "_block_size", "_device", "_threads", "_limits", "_torch_threads")
    NAMES = ("progress", "verbosity", "block_size", "device", "threads")

    def __init__(self) -> None:
        self._progress: bool | None = None
        self._block_size = 16384  # 128 MiB of a dense float32 block at 2,000 genes
        self._device = "auto"
        self._threads: int | None = None
        self._limits = None  # threadpoolctl's limits while threads are set
        self._torch_threads: int | None = None  # torch's own number of threads before they were set

    @property
    def progress(self) -> bool | None:
        return self._progress

    @progress.setter
    def progress(self, value: bool | None) -> None:
        if value not in (None, True, False):
            raise ValueError(f"progress must be None, True or False, got {value!r}")
        self._progress = None if value is None else bool(value)

    @property
    def verbosity(self) -> int:
        return logging.getLogger("rlae_sc").level

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        logging.getLogger("rlae_sc").setLevel(value.upper() if isinstance(value, str) else value)

    @property
    def block_size(self) -> int:
        return self._block_size

    @block_size.setter
    def block_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"block_size must be a positive number of rows, got {value!r}")
        self._block_size = value

    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value) -> None:
        self._device = str(value)

    @property
    def threads(self) -> int | None:
        return self._threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"threads must be None or a positive number, got {value!r}")
        if value is None and self._limits is None:
            return
        import torch  # loaded first, so that threadpoolctl also finds the libraries it brings
        from threadpoolctl import threadpool_limits

        if self._limits is not None:
            self._limits.restore_original_limits()
            torch.set_num_threads(self._torch_threads)
            self._limits = None
        if value is not None:
            self._torch_threads = torch.get_num_threads()
            self._limits = threadpool_limits(limits=value)
            torch.set_num_threads(value)
        self._threads = value

    @contextmanager
    def override(self, **values) -> Iterator[Settings]:
        """Change settings for a ``with`` block and restore them after it: ``with rl.settings.override(
        block_size=4096, progress=False): ...``."""
        unknown = sorted(set(values) - set(self.NAMES))
        if unknown:
            raise AttributeError(f"no setting {', '.join(unknown)}; the settings are {', '.join(self.NAMES)}")
        old = {name: getattr(self, name) for name in values}
        try:
            for name, value in values.items():
                setattr(self, name, value)
            yield self
        finally:
            for name, value in old.items():
                setattr(self, name, value)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.NAMES) + ")"


settings = Settings()
