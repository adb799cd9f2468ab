"""Model zoos: many small networks of one or more variants, trained in batches.

Typical use::

    from asymspec import zoo
    z = zoo.load("runs/zoo_resnet8-cpu-<hash>")
    flat, ids = z.flat("w_asym")             # (M, D) trainable entries, state_dict order
    theta0 = z.initial_state("w_asym", ids)  # rebuilt, bit-identical, never stored

Modules: :mod:`~asymspec.zoo.hparams` (distributions, Table 13), :mod:`~asymspec.zoo.plan`
(seeds per member), :mod:`~asymspec.zoo.train` (batched ``torch.func`` and loop paths),
:mod:`~asymspec.zoo.optim` (stacked AdamW), :mod:`~asymspec.zoo.augment`,
:mod:`~asymspec.zoo.schedule`, :mod:`~asymspec.zoo.evaluate`, :mod:`~asymspec.zoo.store`
(safetensors shards), :mod:`~asymspec.zoo.zoo` (config and driver),
:mod:`~asymspec.zoo.loader` (``load``), :mod:`~asymspec.zoo.distance`.
"""

from asymspec.zoo.data import ZooData
from asymspec.zoo.hparams import TABLE13, resolve, sample_member
from asymspec.zoo.loader import Zoo, load
from asymspec.zoo.plan import MemberPlan, plan_members
from asymspec.zoo.train import TrainSettings, train_members
from asymspec.zoo.zoo import ZooConfig, finish_zoo, start_zoo, train_shard, train_zoo

__all__ = ["MemberPlan", "TABLE13", "TrainSettings", "Zoo", "ZooConfig", "ZooData",
           "finish_zoo", "load", "plan_members", "resolve", "sample_member", "start_zoo",
           "train_members", "train_shard", "train_zoo"]
