"""docs/frameworks.md, ParameterServerStrategy: the probe behind the table. Run with docs/probes/run_ps.sh.

ParameterServerStrategy probe: 1 chief (coordinator), 1 ps, 2 workers, all from one TF_CONFIG shape.

chief: runs the training loop with ClusterCoordinator.schedule(); ps/worker: tf.distribute.Server().join().
Prints [probe] lines with the number of steps completed, so failure semantics can be observed.
"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["GRPC_FAIL_FAST"] = "use_caller"  # TF docs: needed on every task for fault tolerance
import numpy as np
import tensorflow as tf

cfg = json.loads(os.environ["TF_CONFIG"])
role, index = cfg["task"]["type"], cfg["task"]["index"]
resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()

if role in ("ps", "worker"):
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=role, task_index=index, protocol="grpc", start=True)
    print(f"[probe] {role} {index} serving", flush=True)
    server.join()
    sys.exit(0)

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
strategy = tf.distribute.ParameterServerStrategy(resolver)
coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)

rng = np.random.default_rng(0)
X = rng.normal(size=(2048, 64)).astype(np.float32)
W_true = rng.normal(size=(64, 10)).astype(np.float32)
Y = np.argmax(X @ W_true, axis=1).astype(np.int64)

with strategy.scope():
    w1 = tf.Variable(tf.random.normal([64, 128], stddev=0.1, seed=1), name="w1")
    w2 = tf.Variable(tf.random.normal([128, 10], stddev=0.1, seed=2), name="w2")
    done_steps = tf.Variable(0, dtype=tf.int64, name="done_steps")

def dataset_fn(_):
    return tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(2048).repeat().batch(64)

@tf.function
def per_worker_dataset_fn():
    return strategy.distribute_datasets_from_function(dataset_fn)

per_worker_dataset = coordinator.create_per_worker_dataset(per_worker_dataset_fn)
per_worker_iter = iter(per_worker_dataset)

@tf.function
def step_fn(iterator):
    def replica_fn(x, y):
        with tf.GradientTape() as tape:
            logits = tf.nn.relu(x @ w1) @ w2
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        g1, g2 = tape.gradient(loss, [w1, w2])
        w1.assign_sub(0.1 * g1)
        w2.assign_sub(0.1 * g2)
        done_steps.assign_add(1)
        return loss
    x, y = next(iterator)
    return strategy.run(replica_fn, args=(x, y))

print(f"[probe] chief: connected, wall={time.time():.1f}", flush=True)
t0 = time.perf_counter()
print("[probe] chief: training", flush=True)
loss = None
try:
    for i in range(1, steps + 1):
        loss = coordinator.schedule(step_fn, args=(per_worker_iter,))
        if i % 20 == 0:
            coordinator.join()
            print(f"[probe] scheduled={i} done={int(done_steps.numpy())} loss={float(loss.fetch()):.4f} t={time.perf_counter()-t0:.1f}", flush=True)
            if delay:
                time.sleep(delay)
    coordinator.join()
except Exception as exc:  # noqa: BLE001
    print(f"[probe] chief: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:200]} t={time.perf_counter()-t0:.1f}", flush=True)
    sys.exit(1)
print(f"[probe] chief: exit wall={time.time():.1f}", flush=True)
print(f"[probe] chief: done steps={int(done_steps.numpy())} loss={float(loss.fetch()):.4f} t={time.perf_counter()-t0:.1f}", flush=True)
