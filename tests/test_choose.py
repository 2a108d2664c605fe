"""A data run's network, chosen by validation: each candidate trained on the probe seed, the one of
lower validation MSE kept, whatever --seeds says (issue: real measured data)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

import rungefit
from rungefit.cli.app import app
from rungefit.config import DATA_LAYERS, DATA_NETWORKS, PROBE_SEEDS
from rungefit.training.choose import choose_network
from rungefit.training.train import fit

from .helpers import runner
from .test_data_units import data_config, write_points


def waves(n=80, cycles=12, seed=0):
    """Many cycles over the domain, in odd units: what the sine network is for."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(1900.0, 2000.0, n))
    return x, 300 + 5 * np.sin(2 * np.pi * cycles * (x - 1900) / 100) + rng.normal(0.0, 0.5, n)


def test_the_choice_is_the_candidate_of_lower_validation_mse_trained_alone(tmp_path):
    config, target = data_config(write_points(tmp_path / "waves.csv", *waves()), epochs=150, batch_size=1000, lr=0.01)
    choice = choose_network(config, target)
    alone = {layers: fit(replace(config, layers=layers, seeds=PROBE_SEEDS), target).members[0].val_mse for layers in DATA_NETWORKS}
    assert choice.val_mse == alone and choice.layers == min(alone, key=alone.get)
    assert choice.to_json()["chosen"] == choice.layers and "validation MSE" in choice.how


def test_train_data_chooses_on_seed_0_whatever_its_seeds_and_not_when_layers_or_epochs_are_given(tmp_path):
    path = str(write_points(tmp_path / "waves.csv", *waves(n=60)))
    runs = ["--runs-dir", str(tmp_path / "runs"), "--quiet", "--json", "--patience", "20"]  # a short search
    single = json.loads(runner.invoke(app, ["train", "--data", path, *runs]).stdout)
    stack = json.loads(runner.invoke(app, ["train", "--data", path, "--seeds", "3,4", *runs]).stdout)
    assert single["network_choice"] == stack["network_choice"]  # member k of a stack is the single run with seed k
    assert single["config"]["layers"] == single["network_choice"]["chosen"] == stack["config"]["layers"]
    assert single["times_s"]["network_search"] > 0
    for given in (["--layers", "8:tanh"], ["--epochs", "5"]):
        doc = json.loads(runner.invoke(app, ["train", "--data", path, *given, *runs]).stdout)
        assert "network_choice" not in doc and doc["times_s"]["network_search"] is None
    assert rungefit.data_config(path, patience=20).layers == single["network_choice"]["chosen"]  # the API chooses as train does
    assert rungefit.data_config(path, epochs=5).layers == DATA_LAYERS
