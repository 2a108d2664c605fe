"""Worker processes: the generic fork-and-call machinery, and fit split over workers against fit in
one process (float64, where the two may differ only by rounding)."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import signal
import sys
import time
import warnings
from dataclasses import replace

import pytest
import torch

from rungefit.config import TrainConfig
from rungefit.training import workers as workers
from rungefit.training.polish import PolishProgress
from rungefit.training.stack import _split
from rungefit.training.train import DivergedError, fit
from rungefit.training.workers import worker_count

pytestmark = pytest.mark.skipif(not workers.available(), reason="worker processes need fork (Linux)")

F64 = dict(dtype="float64", points=120, epochs=5)


class Echo:
    """A worker target: what each method does in a child, to be seen from the parent."""

    def __init__(self, index: int, stop_requested):
        self.index, self.stop_requested = index, stop_requested

    def pid_and_index(self):
        return os.getpid(), self.index

    def add(self, a, b):
        return a + b + self.index

    def count_to(self, n, note):
        for i in range(n):
            note(i)
        return n

    def fail(self):
        raise ValueError(f"worker {self.index} cannot")

    def die(self):
        os._exit(3)

    def open_inodes(self):
        """(device, inode) of every file descriptor this process holds."""
        found = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                info = os.fstat(int(fd))
            except OSError:
                continue
            found.add((info.st_dev, info.st_ino))
        return found

    def parent_and_death_signal(self):
        """The parent's pid, and the signal Linux sends this process when its parent dies."""
        import ctypes

        signum = ctypes.c_int()
        ctypes.CDLL(None).prctl(2, ctypes.byref(signum), 0, 0, 0)  # PR_GET_PDEATHSIG
        return os.getppid(), signum.value

    def ignored_signals(self):
        return [signum for signum in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(signum) is signal.SIG_IGN]

    def wait_for_stop(self):
        while not self.stop_requested():
            time.sleep(0.001)
        return "stopped"


def echoes(count: int) -> workers.Workers:
    return workers.Workers([lambda stop, i=i: Echo(i, stop) for i in range(count)])


class StuckInChildren(io.StringIO):
    """A standard stream whose flush never returns in a forked child: what one does whose lock a
    parent thread (a progress bar's) held at the fork."""

    def __init__(self):
        super().__init__()
        self.parent = os.getpid()

    def flush(self):
        while os.getpid() != self.parent:
            time.sleep(1)


def test_children_leave_the_inherited_standard_streams_alone(monkeypatch):
    stuck = StuckInChildren()
    monkeypatch.setattr(sys, "stdout", stuck)
    monkeypatch.setattr(sys, "stderr", stuck)
    pool = echoes(2)
    processes = list(pool._processes)
    with pool:
        assert pool.call("add", 1, 2) == [3, 4]
    assert [process.exitcode for process in processes] == [0, 0]  # ended, not killed by close()


def test_calls_run_in_every_child_and_answer_in_order():
    with echoes(3) as pool:
        answers = pool.call("pid_and_index")
        assert [index for _, index in answers] == [0, 1, 2]
        assert len({pid for pid, _ in answers} | {os.getpid()}) == 4
        assert pool.call("add", 10, 5) == [15, 16, 17]


def test_notes_reach_the_parent_with_their_worker():
    seen = []
    with echoes(2) as pool:
        assert pool.call("count_to", 3, on_note=lambda worker, payload: seen.append((worker, payload))) == [3, 3]
    assert sorted(seen) == [(w, i) for w in (0, 1) for i in range(3)]


def test_a_childs_exception_is_raised_in_the_parent():
    with echoes(2) as pool, pytest.raises(ValueError, match=r"worker [01] cannot"):
        pool.call("fail")


def test_a_child_that_dies_is_a_clear_error():
    with echoes(2) as pool, pytest.raises(workers.WorkerError, match="ended unexpectedly"):
        pool.call("die")


def test_the_stop_flag_reaches_running_children_and_close_ends_them():
    pool = echoes(2)
    pool.start("wait_for_stop")
    polls = itertools.count()
    assert pool.results(poll=lambda: next(polls) == 2 and pool.request_stop()) == ["stopped", "stopped"]
    processes = list(pool._processes)
    pool.close()
    assert not any(process.is_alive() for process in processes)


def test_members_are_split_into_contiguous_groups_of_nearly_equal_size():
    assert _split(64, 2) == [(0, 32), (32, 64)]
    assert _split(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert _split(3, 3) == [(0, 1), (1, 2), (2, 3)]


def test_worker_count(monkeypatch):
    monkeypatch.setattr(workers, "cpu_count", lambda: 4)
    assert worker_count(TrainConfig(seeds=tuple(range(64)))) == 4
    assert worker_count(TrainConfig(seeds=tuple(range(10)))) == 2  # at least 4 members each
    assert worker_count(TrainConfig(seeds=tuple(range(7)))) == 1
    assert worker_count(TrainConfig(seeds=(0, 1, 2), workers=5)) == 3  # at most one per member
    assert worker_count(TrainConfig(seeds=tuple(range(64)), device="cuda")) == 1
    monkeypatch.setattr(workers, "available", lambda: False)
    assert worker_count(TrainConfig(seeds=tuple(range(64)), workers=2)) == 1  # e.g. a Linux run resumed on macOS


def test_a_daemonic_process_trains_in_one_process():
    # A multiprocessing pool's workers are daemonic and may not start processes of their own.
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=lambda: answers.put(worker_count(TrainConfig(seeds=tuple(range(64))))), daemon=True)
    child.start()
    child.join()
    assert answers.get(timeout=5) == 1


def test_workers_are_for_the_cpu():
    with pytest.raises(ValueError, match="--workers"):
        TrainConfig(workers=2, device="cuda").validate()
    with pytest.raises(ValueError, match="--workers"):
        TrainConfig(workers=-1).validate()


def assert_same_members(a, b, atol=1e-12):
    assert torch.allclose(a.model.params, b.model.params, rtol=0, atol=atol)
    assert torch.allclose(a.optimizer.exp_avg_sq, b.optimizer.exp_avg_sq, rtol=0, atol=atol)
    assert torch.tensor(a.history.val_mse).allclose(torch.tensor(b.history.val_mse), rtol=1e-9, atol=0)
    assert [m.seed for m in a.members] == [m.seed for m in b.members]
    assert (a.epochs_run, a.steps, a.status) == (b.epochs_run, b.steps, b.status)


def test_a_run_split_over_workers_matches_one_process():
    config = TrainConfig(seeds=(3, 0, 7, 1, 9), **F64)
    lrs = [3e-2, 1e-2, 3e-2, 5e-3, 3e-2]
    split = fit(replace(config, workers=2), member_lrs=lrs)
    alone = fit(replace(config, workers=1), member_lrs=lrs)
    assert (split.config.workers, alone.config.workers) == (2, 1)
    assert_same_members(split, alone)


def test_an_interrupted_split_run_resumes_to_the_uninterrupted_numbers():
    config = TrainConfig(seeds=(0, 1, 2), workers=3, points=120, epochs=6)
    uninterrupted = fit(config)
    reported = []
    result = fit(config, on_epoch=reported.append, should_stop=lambda: len(reported) >= 2)
    assert result.status == "interrupted"
    assert result.epochs_run in (2, 3)  # the workers may finish the epoch running when the stop came
    assert result.steps == result.epochs_run * config.steps_per_epoch
    resumed = fit(config, resume=result.state())
    assert torch.equal(resumed.model.params, uninterrupted.model.params)
    assert resumed.history == uninterrupted.history and resumed.members == uninterrupted.members


def test_a_stop_before_the_first_epoch_keeps_nothing():
    result = fit(TrainConfig(seeds=(0, 1), workers=2, points=120, epochs=3), should_stop=lambda: True)
    assert (result.status, result.epochs_run, result.steps) == ("interrupted", 0, 0)


def test_divergence_in_one_worker_rewinds_them_all():
    # Member 3 (in the second worker) blows up in epoch 2, while the workers already run epoch 3.
    config = TrainConfig(seeds=(0, 1, 2, 3), schedule="onecycle", points=120, epochs=8)
    lrs = [3e-2, 3e-2, 3e-2, 1e19]
    outcomes = []
    for count in (1, 2):
        with pytest.raises(DivergedError) as raised:
            fit(replace(config, workers=count), member_lrs=lrs)
        outcomes.append(raised.value.result)
    split, alone = outcomes[1], outcomes[0]
    assert (split.status, split.epochs_run, split.steps) == ("diverged", 1, config.steps_per_epoch)
    assert (alone.epochs_run, alone.steps) == (split.epochs_run, split.steps)
    assert torch.isfinite(split.model.params).all()
    # float32; member 3's parameters are ~1e18 after a step at rate 1e19, which magnifies the
    # rounding differences of smaller stacks' kernels.
    assert torch.allclose(split.model.params[:3], alone.model.params[:3], rtol=1e-4, atol=1e-6)
    assert torch.allclose(split.model.params[3], alone.model.params[3], rtol=1e-3)


def test_polish_in_workers_matches_one_process_and_reports_every_member():
    config = TrainConfig(seeds=(0, 1, 2), polish="lm", polish_iterations=2, **F64)
    seen: list[PolishProgress] = []
    split = fit(replace(config, workers=2), on_polish=seen.append)
    alone = fit(replace(config, workers=1))
    assert_same_members(split, alone, atol=1e-10)
    assert torch.allclose(split.polish.final_mse, alone.polish.final_mse, rtol=1e-8, atol=0)
    assert sorted({step.member for step in seen}) == [0, 1, 2]


@pytest.mark.parametrize("count", [1, 2])
def test_a_diverging_run_raises_no_numpy_warnings(count):
    config = TrainConfig(seeds=(0, 1), points=120, epochs=3, lr=1e30, schedule="constant", workers=count)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit(config, stop_on_divergence=False)
    assert not torch.isfinite(torch.tensor([m.val_mse for m in result.members])).any()


def test_a_failed_fork_is_a_clear_error(monkeypatch):
    def refuse(self):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.get_context("fork").Process, "start", refuse)
    with pytest.raises(workers.WorkerError, match="cannot start worker processes .*--workers 1"):
        echoes(2)


def test_a_child_holds_no_end_of_the_parents_pipes():
    # A child holding a parent end (its own, or an elder sibling's) would never see its pipe end
    # when the parent dies, and would wait on it forever.
    with echoes(3) as pool:
        parent_ends = {(os.fstat(pipe.fileno()).st_dev, os.fstat(pipe.fileno()).st_ino) for pipe in pool._pipes}
        held = pool.call("open_inodes")
    assert [parent_ends & inodes for inodes in held] == [set(), set(), set()]


def test_linux_kills_a_child_when_its_parent_dies():
    with echoes(2) as pool:
        answers = pool.call("parent_and_death_signal")
    assert answers == [(os.getpid(), signal.SIGKILL)] * 2


def test_a_child_leaves_ctrl_c_and_sigterm_to_its_parent():
    # Sent to the whole process group, they must not kill a worker before the parent has saved.
    with echoes(2) as pool:
        assert pool.call("ignored_signals") == [[signal.SIGINT, signal.SIGTERM]] * 2
