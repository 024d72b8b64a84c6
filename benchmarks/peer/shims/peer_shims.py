"""Makes the authors' BRAC+ code (rlutils-python 0.0.3) run in today's peer venv, from outside.

rlutils 0.0.3 was written for TensorFlow 2.4, gym 0.18 and PyTorch 1.7 (the
requirements of the authors' repository), and its `algos/tf/offline/bracp.py`
still calls an older version of rlutils' own network classes than the one the
package ships. `install()` bridges exactly those gaps, before and after rlutils
is imported, without touching a file in site-packages:

1. `rlutils.infra.runner.pytorch_runner` is served by a stub. rlutils'
   runner package imports its PyTorch runners (and so torch) unconditionally;
   BRAC+ only uses the TensorFlow runner, and torch is not installed.
2. `tf.keras.optimizers.Adam` is the legacy (OptimizerV2) Adam. Since TF 2.11
   the name points at the new Keras optimizer, which lacks the `decay`
   attribute that rlutils' `get_adam_optimizer` reads; the legacy class is the
   Adam TF 2.4 had, the one the code was written and run with.
3. `EnsembleMinQNet` accepts the 2-tuple `(obs, act)` call that bracp.py makes,
   with `training` choosing the output as in the rlutils of the authors'
   repository: training=True gives every head [heads, N] (the critic loss),
   training=False the min over heads [N] (actor, target, gradient penalty).
   rlutils 0.0.3's class instead wants `(obs, act, reduce)`; it is forwarded to
   with reduce = not training, so the network and its compute are unchanged.
4. `LagrangeLayer` gets the `compile(optimizer)` that bracp.py calls on it: in
   the authors' repository it is a `tf.keras.Model`, in rlutils 0.0.3 a
   `Layer`. `compile` only stores the optimizer, which is all bracp.py uses
   (through `rlutils.tf.future.minimize`, which reads `model.optimizer`).

gym 0.25.2 (pinned in make_env.sh) still has the `rng.randint` that rlutils'
replay buffer calls (gym 0.26 removed it), so gym itself needs no shim.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

PYTORCH_RUNNER = "rlutils.infra.runner.pytorch_runner"

SHIMS = {
    "pytorch_runner_stub": "rlutils.infra.runner.pytorch_runner is a stub: it imports torch, which "
                           "BRAC+ (a TensorFlow agent) never uses and which is not installed",
    "legacy_adam": "tf.keras.optimizers.Adam = tf.keras.optimizers.legacy.Adam: rlutils reads "
                   "optimizer.decay, which only the TF <= 2.10 (OptimizerV2) Adam has",
    "ensemble_min_q_call": "EnsembleMinQNet((obs, act), training) -> rlutils 0.0.3's "
                           "EnsembleMinQNet((obs, act, reduce=not training)): the older rlutils API "
                           "that bracp.py calls (min over heads unless training)",
    "lagrange_compile": "LagrangeLayer.compile(optimizer) stores the optimizer: bracp.py compiles "
                        "it as the tf.keras.Model it was in the older rlutils",
}


class _StubRunners(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Serves a placeholder for rlutils' PyTorch runner module, and only that module."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname == PYTORCH_RUNNER:
      return importlib.machinery.ModuleSpec(fullname, self)
    return None

  def create_module(self, spec):
    return None  # the default module object

  def exec_module(self, module: types.ModuleType) -> None:
    def unavailable(*args, **kwargs):
      raise RuntimeError(f"{PYTORCH_RUNNER} is stubbed out by benchmarks/peer/shims (no torch)")

    for name in ("PytorchRunner", "PytorchOffPolicyRunner", "PytorchOnPolicyRunner"):
      module.__dict__[name] = type(name, (), {"__init__": unavailable})


def _patch_keras_adam(tf) -> None:
  tf.keras.optimizers.Adam = tf.keras.optimizers.legacy.Adam


def _patch_networks(rlu_nn, tf) -> None:
  ensemble_min_q_call = rlu_nn.EnsembleMinQNet.call

  def call(self, inputs, training=None, mask=None):
    if len(inputs) == 2:  # the older API: training decides whether to reduce over heads
      inputs = (*inputs, tf.constant(not training))
    return ensemble_min_q_call(self, inputs, training=training, mask=mask)

  rlu_nn.EnsembleMinQNet.call = call

  def compile(self, optimizer=None, **unused):
    self.optimizer = optimizer

  if not hasattr(rlu_nn.LagrangeLayer, "compile"):
    rlu_nn.LagrangeLayer.compile = compile


def install() -> dict[str, str]:
  """Applies every shim (idempotent); returns {name: why} of those applied, for the record."""
  if getattr(install, "done", False):
    return dict(SHIMS)
  if "rlutils.infra" in sys.modules:
    raise RuntimeError("peer_shims.install() must run before rlutils.infra is imported")
  sys.meta_path.insert(0, _StubRunners())

  import tensorflow as tf  # noqa: E402  (after the caller set TF's environment variables)
  _patch_keras_adam(tf)

  import rlutils.tf.nn as rlu_nn  # noqa: E402  (needs the Adam alias only when agents are built)
  _patch_networks(rlu_nn, tf)
  install.done = True
  return dict(SHIMS)
