"""Train the digits MLP with TensorFlow's MultiWorkerMirroredStrategy (MWMS) on CPU; no torch needed.

The same task as :mod:`trainyard_trainer.examples.train_digits` (scikit-learn's bundled digits,
the same 80/20 split, a Dense(128) -> Dense(64) -> Dense(10) MLP, SGD with momentum), written as
a custom training loop so that it prints Trainyard's standard progress lines every step.

Cluster: ``TF_CONFIG`` as TensorFlow defines it, one entry per worker, e.g. for task 1 of 2::

    {"cluster": {"worker": ["job-3-0.job.ns.svc:2222", "job-3-1.job.ns.svc:2222"]},
     "task": {"type": "worker", "index": 1}}

Without ``TF_CONFIG`` it runs as one worker. Every worker runs this same script; task 0 is the
chief (it prints progress and owns the checkpoint). MWMS is synchronous: when a worker dies its
peers fail or hang in the next collective, so the only recovery is a gang restart (all workers,
a new ``TF_CONFIG``), which resumes from the newest checkpoint.

Checkpoints (``tf.train.CheckpointManager``: model, optimizer, step, epoch, position within the
epoch) go to ``--checkpoint-dir`` or ``$TRAINYARD_CHECKPOINT_DIR`` every ``--checkpoint-every``
steps and at the end. Every worker takes part in a save (TensorFlow's rule for MWMS); non-chief
workers write to a scratch directory under it and delete it at once. On start every worker
restores the newest checkpoint from the shared directory, and the workers check with a collective
that they all restored the same step. Resume is exact: the data order is a function of the seed
and the epoch, as with torch's DistributedSampler.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from trainyard_trainer.progress import Progress

CHECKPOINT_PREFIX = "ckpt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32, help="per worker")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="model initialisation and data shuffling")
    p.add_argument("--data-seed", type=int, default=42, help="the fixed train/test split")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps in total")
    p.add_argument("--checkpoint-dir", default=None, help="default: $TRAINYARD_CHECKPOINT_DIR; neither: no checkpoints")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps; 0 disables periodic checkpoints")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--step-delay", type=float, default=float(os.environ.get("TRAINYARD_STEP_DELAY", "0")),
                   help="sleep this long after every step (tests: a deterministic window to kill a worker)")
    p.add_argument("--weights-out", default=None, help="write rank-<task>.json with a checksum of the final weights")
    return p.parse_args(argv)


def cluster_from_env(environ=os.environ) -> tuple[int, int]:
    """(task index, number of workers) from ``TF_CONFIG``; (0, 1) without it.

    Only the MWMS shape is accepted: a ``worker`` list and a ``worker`` task (no chief/ps roles).
    """
    raw = environ.get("TF_CONFIG")
    if not raw:
        return 0, 1
    cfg = json.loads(raw)
    cluster, task = cfg.get("cluster") or {}, cfg.get("task") or {}
    extra = sorted(set(cluster) - {"worker"})
    if extra or task.get("type", "worker") != "worker":
        raise SystemExit(f"TF_CONFIG: this script runs MultiWorkerMirroredStrategy on workers only, got roles {extra} "
                         f"and task type {task.get('type')!r}")
    workers = cluster.get("worker") or []
    index = int(task.get("index", 0))
    if not 0 <= index < len(workers):
        raise SystemExit(f"TF_CONFIG: task index {index} is outside the {len(workers)} workers")
    return index, len(workers)


def load_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def shard_indices(n: int, rank: int, world: int, seed: int, epoch: int) -> np.ndarray:
    """This worker's indices for ``epoch``: a seeded permutation, padded to a multiple of the world
    size by wrapping (as torch's DistributedSampler does), then every world-th element. Every worker
    gets the same number of samples, so every step has the same global batch on all of them."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    total = math.ceil(n / world) * world
    perm = np.concatenate([perm, perm[: total - n]])
    return perm[rank::world]


def weights_checksum(variables) -> str:
    sha = hashlib.sha256()
    for v in sorted(variables, key=lambda v: v.path):
        sha.update(v.path.encode())
        sha.update(np.ascontiguousarray(v.numpy()).tobytes())
    return sha.hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world = cluster_from_env()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO banner, not warnings
    import keras  # after TF_CPP_MIN_LOG_LEVEL: it is read when tensorflow is imported
    import tensorflow as tf

    # MWMS reads TF_CONFIG itself. RING collectives over gRPC: the CPU implementation.
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    assert strategy.num_replicas_in_sync == world, (strategy.num_replicas_in_sync, world)
    progress = Progress(args.log_every, rank=rank)

    x_train, y_train, x_test, y_test = load_data(args.data_seed)
    shard_len = math.ceil(len(y_train) / world)
    batches_per_epoch = math.ceil(shard_len / args.batch_size)
    total_steps = args.epochs * batches_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    keras.utils.set_random_seed(args.seed)  # the same initial weights on every worker
    with strategy.scope():
        model = keras.Sequential([
            keras.Input(shape=(64,)),
            keras.layers.Dense(args.hidden, activation="relu"),
            keras.layers.Dense(args.hidden // 2, activation="relu"),
            keras.layers.Dense(10),
        ])
        optimizer = keras.optimizers.SGD(learning_rate=args.lr, momentum=args.momentum)
        optimizer.build(model.trainable_variables)  # its slots exist before a restore
        step_v = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        epoch_v = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        batch_v = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        world_v = tf.Variable(world, dtype=tf.int64, trainable=False, name="world_size")

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32), tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([], tf.int32)])
    def train_step(x, y, global_batch):
        def step_fn(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))  # all-reduces the gradients
            return loss

        per_replica = strategy.run(step_fn, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)  # the global mean loss

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def agree(value):
        """(min, max) of ``value`` over all workers: one all-gather (ReduceOp has only SUM and MEAN)."""
        def fn(v):
            return tf.distribute.get_replica_context().all_gather(tf.reshape(v, [1]), axis=0)

        every = strategy.experimental_local_results(strategy.run(fn, args=(value,)))[0]
        return tf.reduce_min(every), tf.reduce_max(every)

    ckpt_dir = args.checkpoint_dir or os.environ.get("TRAINYARD_CHECKPOINT_DIR")
    checkpoint = manager = None
    write_dir = None
    if ckpt_dir:
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_v, epoch=epoch_v,
                                         batch_in_epoch=batch_v, world_size=world_v)
        # TensorFlow's MWMS recipe: every worker saves, only the chief into the real directory.
        write_dir = ckpt_dir if rank == 0 else os.path.join(ckpt_dir, f"workertemp_{rank}")
        manager = tf.train.CheckpointManager(checkpoint, directory=write_dir, max_to_keep=args.keep,
                                             checkpoint_name=CHECKPOINT_PREFIX)
        latest = tf.train.latest_checkpoint(ckpt_dir)
        if latest:
            checkpoint.restore(latest).assert_existing_objects_matched()

    step, epoch, batch_in_epoch = int(step_v.numpy()), int(epoch_v.numpy()), int(batch_v.numpy())
    if world > 1:
        lo, hi = agree(tf.constant(step, tf.float32))
        if int(lo) != int(hi):
            raise SystemExit(f"workers restored different checkpoints (steps {int(lo)}..{int(hi)}): "
                             f"is {ckpt_dir} one shared volume?")
    if step > 0 and int(world_v.numpy()) != world:
        batch_in_epoch = 0  # another sharding: redo this epoch from its start
        world_v.assign(world)
    if batch_in_epoch >= batches_per_epoch:
        epoch, batch_in_epoch = epoch + 1, 0
    progress.start(step)
    last_saved = step if step > 0 else -1

    def save() -> None:
        nonlocal last_saved
        if manager is None or last_saved == step:
            return
        t0 = time.perf_counter()
        step_v.assign(step)
        epoch_v.assign(epoch)
        batch_v.assign(batch_in_epoch)
        manager.save(checkpoint_number=step)
        if rank != 0:
            shutil.rmtree(write_dir, ignore_errors=True)
        progress.checkpoint(step, time.perf_counter() - t0, False)
        last_saved = step

    while step < total_steps and epoch < args.epochs:
        indices = shard_indices(len(y_train), rank, world, args.seed, epoch)
        while batch_in_epoch < batches_per_epoch and step < total_steps:
            idx = indices[batch_in_epoch * args.batch_size: (batch_in_epoch + 1) * args.batch_size]
            loss = train_step(x_train[idx], y_train[idx], tf.constant(len(idx) * world, tf.int32))
            step += 1
            batch_in_epoch += 1
            progress.step(step, epoch, float(loss), samples=len(idx) * world)
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save()
            if args.step_delay:
                time.sleep(args.step_delay)
        if batch_in_epoch >= batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
    save()  # the final state, unless the last periodic save already was it

    logits = model(x_test, training=False)
    accuracy = float(np.mean(np.argmax(logits.numpy(), axis=1) == y_test))
    if args.weights_out:
        out = Path(args.weights_out)
        out.mkdir(parents=True, exist_ok=True)
        doc = {"rank": rank, "world_size": world, "step": step, "sha256": weights_checksum(model.weights),
               "accuracy": accuracy}
        (out / f"rank-{rank}.json").write_text(json.dumps(doc) + "\n")
    if world > 1:
        agree(tf.constant(step, tf.float32))  # a last collective: nobody exits while a peer still needs it
    progress.done(step, accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
