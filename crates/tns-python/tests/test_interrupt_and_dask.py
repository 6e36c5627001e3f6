"""Ctrl-C during training, and batch scoring on a Dask cluster of worker processes."""

import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd

import tns


def test_keyboard_interrupt_stops_training_between_steps():
    # The child installs Python's Ctrl-C handler itself: started from a background job of a
    # non-interactive shell (as CI runners may start it), it would inherit SIGINT ignored, and
    # Python keeps an ignored SIGINT ignored.
    script = textwrap.dedent(
        """
        import signal, sys, tns
        signal.signal(signal.SIGINT, signal.default_int_handler)
        def callback(event, info):
            if event == "step" and info["step"] == 1:
                print("training", flush=True)
        tns.train(synth="trajectory", rows=20000, model="system-a", epochs=200, callback=callback)
        print("finished", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "training"
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert "KeyboardInterrupt" in err, (child.returncode, out, err)
    assert "finished" not in out
    assert child.returncode != 0
    assert time.monotonic() - started < 30


def test_dask_scoring_on_two_worker_processes_equals_single_process(pooled):
    import dask.dataframe as dd
    import dask.distributed as distributed

    from tns.dask import score

    df, _, _, model = pooled
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            ddf = dd.from_pandas(df, npartitions=4).shuffle(on="unique_id", npartitions=2)
            result = score(ddf, model, origin_every=3).compute()
            workers = client.run(lambda: __import__("tns").dask._compiled.__len__())
    expected = model.predict_frame(df, origin_every=3)
    key = ["series", "origin_time", "step", "target"]
    pd.testing.assert_frame_equal(
        result.sort_values(key).reset_index(drop=True),
        expected.sort_values(key).reset_index(drop=True),
        check_exact=True,
        # Dask may store the text columns as pyarrow strings.
        check_dtype=False,
    )
    # The model reached and was compiled in the worker processes.
    assert sum(workers.values()) >= 1
